"""The ttrpc.Request envelope is written by hand (shim/frames.py) on every probe's path; it
must be byte for byte what protobuf serialises, for any service, method, payload, timeout and
namespace, and the prober's three request frames must be the synchronous client's."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shimctl.shim import frames, prober, task
from shimctl.shim.bootstrap import service_name
from shimctl.shim.proto import ttrpc_pb2

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def _protobuf(service: str, method: str, payload: bytes, timeout: int, namespace: str) -> bytes:
    req = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout)
    if namespace:
        req.metadata.add(key=frames.NAMESPACE_KEY, value=namespace)
    return req.SerializeToString()


@settings(max_examples=400, deadline=None)
@given(
    service=st.text(max_size=300),
    method=st.text(max_size=40),
    payload=st.binary(max_size=20000),
    timeout=INT64 | st.sampled_from([0, 1, 127, 128, 16383, 16384]),
    namespace=st.text(max_size=200),
)
def test_request_envelope_is_protobufs(
    service: str, method: str, payload: bytes, timeout: int, namespace: str
) -> None:
    ours = frames.encode_request(
        service, method, payload, timeout_nano=timeout, namespace=namespace
    )
    assert ours == _protobuf(service, method, payload, timeout, namespace)


@given(id=st.text(max_size=100))
def test_id_payload_is_the_task_requests(id: str) -> None:
    expected = task.connect_request(id)
    assert frames.id_payload(id) == expected == task.pids_request(id) == task.state_request(id)


def test_probe_frames_are_the_clients() -> None:
    target = prober.Target("unix:///run/x.sock", "k8s.io", "pod1", api_version=3)
    wire = prober._requests(target, 5_000_000_000)
    expected = b"".join(
        frames.encode_frame(
            1 + 2 * call,
            frames.MSG_TYPE_REQUEST,
            0,
            frames.encode_request(
                service_name(3),
                method,
                task.connect_request("pod1"),
                timeout_nano=5_000_000_000,
                namespace="k8s.io",
            ),
        )
        for call, method in enumerate(prober.CALLS)
    )
    assert wire == expected
