"""How ops reach a task: its bundle, its shim binary and a client on its shim's socket.

Built here from Settings so that the layers below (node/, shim/) take plain paths and values,
as containerd's NewBundle(ctx, root, state, id, spec) does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shimctl.node.bundle import Bundle
from shimctl.settings import Settings
from shimctl.shim.bootstrap import Bootstrap

if TYPE_CHECKING:
    # Both import protobuf: `logs` locates a bundle without paying for it.
    from shimctl.shim.binary import ShimBinary
    from shimctl.shim.task import TaskClient


def bundle_of(settings: Settings, id: str) -> Bundle:
    """The bundle of task `id` in the settings' namespace, both validated first."""
    return Bundle.of_task(settings.task_state, settings.task_root, settings.namespace, id)


def locate(settings: Settings, namespace: str, id: str) -> Bundle:
    """The bundle of task `id` in `namespace` (not validated: the caller walked it)."""
    return Bundle.locate(settings.task_state, settings.task_root, namespace, id)


def shim_binary(settings: Settings, path: str, namespace: str, id: str) -> ShimBinary:
    """The shim binary at `path` for task `id`, with the flags containerd's settings give it."""
    from shimctl.shim.binary import ShimBinary

    return ShimBinary(
        path=path,
        namespace=namespace,
        id=id,
        address=settings.address,
        publish_binary=settings.publish_binary,
        ttrpc_address=settings.ttrpc_address,
        debug=settings.debug,
        sched_core=settings.sched_core,
    )


def dial(settings: Settings, boot: Bootstrap, namespace: str) -> TaskClient:
    """A task client on the shim `boot` names, within the load timeout."""
    from shimctl.shim.task import TaskClient

    return TaskClient.connect(
        boot.address, namespace, timeout=settings.timeouts.load, api_version=boot.version
    )
