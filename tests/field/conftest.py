"""Fixtures of the field tests: shimctl beside real clients of containerd (Docker, CRI).

- ``docker``: a private containerd, one per generation, with a private dockerd over it
  (tests/support/docker.py); a test narrows the generations with
  ``@pytest.mark.parametrize("docker", ["system"], indirect=True)``.
- ``cri``: a private containerd with its CRI plugin, one per generation (1.6, 1.7, 2.1:
  tests/support/generations.py), and a CRI v1 client (tests/support/cri.py).

Each test is marked ``real`` and ``field``: missing binaries skip it, or fail it when
``CI=true``. Every fixture asserts at its end that nothing of its containers is left (processes
in their cgroups, runc state, cgroups, mounts), sweeps what is, and stops its daemons by PID.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from typing import Any

import pytest

from tests.field.killpoints import RuncHold, runc_binary
from tests.support import docker as docker_support
from tests.support.containerd import running_containerd
from tests.support.cri import Cri, running_cri
from tests.support.docker import Docker, running_docker
from tests.support.generations import SUITES, generation
from tests.support.helpers import Node


def _hold(node: Node, request: pytest.FixtureRequest, path_prefix: tuple[str, ...]) -> str:
    """The runc wrapper's path if the test is marked ``runc_hold`` (stashed for the test)."""
    if request.node.get_closest_marker("runc_hold") is None:
        return ""
    hold = RuncHold(node.base / "runc-hold", runc_binary(path_prefix))
    request.node.stash[HOLD] = hold
    return str(hold.path)


HOLD = pytest.StashKey[RuncHold]()


@pytest.fixture
def runc_hold(request: pytest.FixtureRequest) -> RuncHold:
    """The RuncHold of a ``runc_hold`` test (ask for it after ``docker`` or ``cri``)."""
    hold: RuncHold = request.node.stash[HOLD]
    return hold


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.real)
            item.add_marker(pytest.mark.field)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed or hasattr(report, "wasxfail")


#: The test's call failed (or xfailed): its fixtures then sweep without asserting, so an
#: expected failure stays one failure, not a second error at teardown.
CALL_FAILED = pytest.StashKey[bool]()


def _passed(request: pytest.FixtureRequest) -> bool:
    return not request.node.stash.get(CALL_FAILED, True)


def _require(problems: list[str], what: str) -> None:
    if not problems:
        return
    msg = f"{what} needs: " + "; ".join(problems)
    if os.environ.get("CI") == "true":
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(params=[suite for suite, _ in SUITES], ids=[series for _, series in SUITES])
def docker(node: Node, request: pytest.FixtureRequest) -> Iterator[Docker]:
    """dockerd over a private containerd, one generation per param (dockerd 20.10 drives
    1.6, 1.7 and 2.1 alike); checked clean at the end."""
    gen = generation(request.param)
    gen.require()
    _require(docker_support.missing(), "the Docker field tests")
    options = gen.containerd_options()
    with (
        running_containerd(node, namespace=docker_support.NAMESPACE, **options) as cd,
        running_docker(cd, _hold(node, request, gen.path_prefix)) as d,
    ):
        yield d
        d.failed = not _passed(request)
        if _passed(request):
            errors = d.remove_all()
            assert not errors, f"Docker could not remove its containers: {errors}"
    if _passed(request):
        assert not d.left, f"Docker left behind: {d.left}"


@pytest.fixture(params=[suite for suite, _ in SUITES], ids=[series for _, series in SUITES])
def cri(node: Node, request: pytest.FixtureRequest) -> Iterator[Cri]:
    """containerd with CRI, one generation per param; checked clean at the end."""
    gen = generation(request.param)
    gen.require()
    binary = _hold(node, request, gen.path_prefix)
    with running_cri(node, binary, **gen.containerd_options()) as c:
        yield c
        c.failed = not _passed(request)
        if _passed(request):
            errors = c.stop_and_remove_all()
            assert not errors, f"CRI could not remove its pods: {errors}"
    if _passed(request):
        assert not c.left, f"CRI left behind: {c.left}"
