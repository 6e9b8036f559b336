"""Shared fixtures. Helpers live in tests/support/ (``from tests.support.helpers import ...``).

- Tests marked ``@pytest.mark.real`` get :func:`tests.support.helpers.require_real_binaries` applied
  before setup (skip, or fail when ``CI=true``). The ``require_real_binaries`` fixture does the
  same for tests that ask for it by name.
- ``node``: a :class:`tests.support.helpers.Node` with private dirs under ``tmp_path``; after
  the test a
  safety net kills processes left with ``-address <node.address>`` and removes their sockets,
  warning (ShimLeakWarning) when it had to kill anything. The session ends with a loud summary
  of all such leaks (collected from xdist workers too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import helpers
from tests.support.helpers import LEAK_PROPERTY, Node

if TYPE_CHECKING:
    from tests.support.safetykit import Fakes
    from tests.support.tasks import Started

helpers.ensure_sbin_on_path()

_leaks: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real") is not None:
        helpers.require_real_binaries()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs in the xdist controller too (worker reports are replayed there).
    if report.when == "teardown":
        _leaks.extend(str(v) for k, v in report.user_properties if k == LEAK_PROPERTY)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _leaks:
        return
    tr = terminalreporter
    tr.section("LEAKED SHIM PROCESSES (killed by the safety net)", sep="!", red=True, bold=True)
    for line in _leaks:
        tr.write_line(line, red=True, bold=True)
    tr.write_line(
        f"{len(_leaks)} test(s) left processes behind: fix their cleanup.", red=True, bold=True
    )


@pytest.fixture(name="require_real_binaries")
def require_real_binaries_fixture() -> None:
    """Skip (fail when CI=true) unless the real shim, runc, containerd and busybox exist."""
    helpers.require_real_binaries()


@pytest.fixture
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    """Private containerd root/state/address for one test, with the leak safety net."""
    n = Node.under(tmp_path)
    yield n
    item = request.node
    props = item.user_properties if isinstance(item, pytest.Item) else None
    helpers.teardown_node(n, props, item.nodeid)


# /run/containerd/s is shared by every test (the shim hard-codes it). `gc`/`load` remove any
# refusing socket there, including another test's dead shim's socket, so a test that runs them
# over the whole socket dir holds this lock exclusively, and a test that asserts a dead
# shim's socket exists holds it shared.
_SOCKET_DIR_LOCK = Path("/tmp/shimctl-tests-socket-dir.lock")


def _socket_dir_lock(mode: int) -> Iterator[None]:
    import fcntl

    with _SOCKET_DIR_LOCK.open("a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture
def socket_dir_exclusive() -> Iterator[None]:
    import fcntl

    yield from _socket_dir_lock(fcntl.LOCK_EX)


@pytest.fixture
def socket_dir_shared() -> Iterator[None]:
    import fcntl

    yield from _socket_dir_lock(fcntl.LOCK_SH)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The containerd generations the matrix runs against, with their package versions."""
    from tests.support.generations import all_generations

    return [g.describe() for g in all_generations()]


@pytest.fixture
def started(node: Node) -> Iterator[Started]:
    """What the test starts (shims, tasks, containers), stopped by PID at its end."""
    from tests.support.tasks import Started

    s = Started(node)
    try:
        yield s
    finally:
        s.stop_all()


@pytest.fixture
def fakes(node: Node) -> Iterator[Fakes]:
    """Fake shim processes (tests/support/fakeshim.py) for faults the real shim cannot show."""
    from tests.support.safetykit import Fakes

    f = Fakes(node)
    try:
        yield f
    finally:
        f.stop_all()
