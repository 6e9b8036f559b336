"""Fixtures of the real-binary tests: one containerd generation per parameter, and a private
containerd of that generation over the test's node (tests/support/generations.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.containerd import Containerd, running_containerd
from tests.support.generations import Generation, all_generations, gen_id
from tests.support.helpers import Node


@pytest.fixture(params=[pytest.param(g, id=gen_id(g)) for g in all_generations()])
def gen(request: pytest.FixtureRequest, record_property: Any) -> Generation:
    g: Generation = request.param
    g.require()
    record_property("containerd", g.describe())
    return g


@pytest.fixture
def containerd(node: Node, gen: Generation) -> Iterator[Containerd]:
    with running_containerd(node, **gen.containerd_options()) as cd:
        yield cd
