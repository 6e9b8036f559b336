"""The scale rows: `list` over many live shims with containerd stopped and with containerd
answering at --address (its records made here through its Containers API, so the owner
query runs and imports grpcio), the marginal cost a shim (a fit over two sizes), the meta.db
read of 1,000 records, and a CRI-shaped node (pods whose containers share their sandbox's
shim). Every timing is side by side with containerd 1.6's own startup on the same state,
the runs of both interleaved."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from harness import Node, Row, containerd_up, private_node, run_ok

from shimctl.node.spec import CRI_CONTAINER_TYPE, CRI_SANDBOX_ID, default_spec, encode_spec
from shimctl.ops.start import start

# After containerd's socket accepts, its gRPC services may need a moment; the API calls
# made here wait for them (wait_for_ready), and the timed `list` waits this long first.
SETTLE = 0.3


def make_records(node: Node, ids: Iterable[str], namespace: str = "default") -> None:
    """A container record for each id, made through containerd's Containers API as a client
    makes them (containerd runs meanwhile)."""
    import grpc
    from google.protobuf import any_pb2

    from shimctl.records.proto.api.services.containers.v1 import containers_pb2

    spec = any_pb2.Any(
        type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec",
        value=json.dumps(default_spec()).encode(),
    )
    channel = grpc.insecure_channel(f"unix:{node.address}")
    try:
        create = channel.unary_unary(
            "/containerd.services.containers.v1.Containers/Create",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=containers_pb2.CreateContainerResponse.FromString,
        )
        for cid in ids:
            record = containers_pb2.Container(
                id=cid,
                runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"),
                spec=spec,
                snapshotter="overlayfs",
                labels={"bench": "shimctl"},
            )
            create(
                containers_pb2.CreateContainerRequest(container=record),
                timeout=30,
                metadata=(("containerd-namespace", namespace),),
                wait_for_ready=True,
            )
    finally:
        channel.close()


class Sample(NamedTuple):
    ms: float
    cpu_ms: float  # user + system CPU of the process (its children's too)


def _run(argv: list[str]) -> Sample:
    before, t = os.times(), time.perf_counter()
    run_ok(argv)
    wall, after = (time.perf_counter() - t) * 1000, os.times()
    cpu = after.children_user + after.children_system
    cpu -= before.children_user + before.children_system
    return Sample(wall, cpu * 1000)


def _median(samples: Sequence[Sample]) -> Sample:
    return Sample(
        statistics.median(s.ms for s in samples), statistics.median(s.cpu_ms for s in samples)
    )


def side_by_side(node: Node, argv: list[str], runs: int) -> tuple[Sample, Sample, Sample]:
    """Interleaved runs on one state: `argv` with containerd stopped, containerd 1.6's
    startup, `argv` while that containerd answers. Medians, in that order."""
    stopped: list[Sample] = []
    theirs: list[Sample] = []
    answering: list[Sample] = []
    for _ in range(runs):
        stopped.append(_run(argv))
        with containerd_up(node) as startup:
            theirs.append(Sample(*startup))
            time.sleep(SETTLE)
            answering.append(_run(argv))
    return _median(stopped), _median(theirs), _median(answering)


def cpu_note(what: str, parts: Sequence[tuple[str, Sample]]) -> str:
    """One line of CPU medians (user + system), load-steadier than wall times."""
    return f"CPU, {what}: " + "; ".join(f"{name} {s.cpu_ms:.0f} ms" for name, s in parts)


def bench_scale(sizes: Sequence[int], runs: int) -> tuple[list[Row], list[str]]:
    """`list` over sizes[0] then sizes[-1] live idle shims of one node, with records."""
    rows: list[Row] = []
    notes: list[str] = []
    fits: dict[str, list[float]] = {"stopped": [], "containerd": [], "answering": []}
    with private_node("scale") as node:
        started = 0
        for size in sizes:
            node.start_shims("live", size - started, first=started)
            with containerd_up(node):
                make_records(node, (f"live{i}" for i in range(started, size)))
            started = size
            stopped, theirs, answering = side_by_side(node, node.cli("list"), runs)
            base = "containerd 1.6 startup on the same state"
            target = "<= 0.7x" if size >= 800 else "<= 1.0x"
            rows.append(
                Row(
                    f"list, {size} live idle shims, containerd stopped",
                    stopped.ms,
                    theirs.ms,
                    base,
                    target,
                )
            )
            rows.append(
                Row(
                    f"list, {size} live idle shims, containerd answering (owner queries)",
                    answering.ms,
                    theirs.ms,
                    base,
                    target,
                )
            )
            notes.append(
                cpu_note(
                    f"{size} live shims",
                    [
                        ("list, containerd stopped", stopped),
                        ("list, containerd answering", answering),
                        ("containerd 1.6 until its socket accepts", theirs),
                    ],
                )
            )
            fits["stopped"].append(stopped.ms)
            fits["containerd"].append(theirs.ms)
            fits["answering"].append(answering.ms)
    extra = notes
    if len(sizes) > 1:
        span = sizes[-1] - sizes[0]
        slope = {k: (v[-1] - v[0]) / span for k, v in fits.items()}
        extra.append(
            f"marginal cost a live shim (fit over {sizes[0]} and {sizes[-1]}): shimctl list "
            f"{slope['stopped']:.2f} ms (containerd stopped), {slope['answering']:.2f} ms "
            f"(containerd answering); containerd 1.6 startup {slope['containerd']:.2f} ms; "
            "target <= 0.3 ms"
        )
    return rows, extra


def bench_metadb(count: int, runs: int) -> Row:
    """records/metadb.read_metadb of `count` container records (made through containerd
    1.6's API, as tests/real/test_records.py makes them), in this process, page cache warm."""
    from shimctl.records.metadb import read_metadb

    with private_node("metadb") as node:
        with containerd_up(node):
            make_records(node, (f"rec-{i:04d}" for i in range(count)))
        read_metadb(node.root)  # warm the page cache, as a second run finds it
        samples = []
        for _ in range(max(runs, 15)):
            t = time.perf_counter()
            records = read_metadb(node.root)
            samples.append((time.perf_counter() - t) * 1000)
        found = len(records.namespace("default").containers)
        if found != count:
            raise SystemExit(f"meta.db read found {found} containers, {count} were made")
    return Row(
        f"meta.db read, {count} container records (in process)",
        statistics.median(samples),
        20.0,
        "target",
        "< 20 ms",
    )


def _cri_spec(pod: str, kind: str) -> bytes:
    doc: dict[str, Any] = default_spec()
    doc.setdefault("annotations", {}).update({CRI_CONTAINER_TYPE: kind, CRI_SANDBOX_ID: pod})
    return encode_spec(doc)


def bench_cri(pods: int, runs: int) -> tuple[list[Row], list[str]]:
    """A CRI-shaped node (namespace k8s.io): `pods` sandboxes, each with two containers that
    join its shim (shimctl start --sandbox), so 3 bundles a shim; `list` and `gc --dry-run`
    beside containerd 1.6's startup on the same state."""
    with private_node("cri") as node:
        settings = node.settings.with_namespace("k8s.io")
        for p in range(pods):
            pod = f"pod{p}"
            result = start(settings, pod, spec=_cri_spec(pod, "sandbox"))
            assert result.shim_pid
            node.track(result.shim_pid)
            for c in range(2):
                start(settings, f"{pod}c{c}", spec=_cri_spec(pod, "container"), sandbox=pod)
        listed: list[Sample] = []
        dry: list[Sample] = []
        theirs: list[Sample] = []
        for _ in range(runs):  # interleaved, as in side_by_side
            listed.append(_run(node.cli("list")))
            dry.append(_run(node.cli("gc", "--dry-run")))
            with containerd_up(node) as startup:
                theirs.append(Sample(*startup))
    what = f"{pods} pods x 2 containers on {pods} shared shims (k8s.io)"
    base = "containerd 1.6 startup on the same state"
    ls, gc, cd = _median(listed), _median(dry), _median(theirs)
    rows = [
        Row(f"list, {what}", ls.ms, cd.ms, base, "<= 1.0x"),
        Row(f"gc --dry-run, {what}", gc.ms, cd.ms, base, "<= 1.0x"),
    ]
    note = cpu_note(
        f"{pods} pods",
        [("list", ls), ("gc --dry-run", gc), ("containerd 1.6 until its socket accepts", cd)],
    )
    return rows, [note]
