"""containerd's own records, as evidence of what the owner of the shims knows.

Entry point: :func:`shimctl.records.owner.read_owner_records`, which returns
:class:`shimctl.records.model.OwnerRecords`.

- ``model``: the typed, frozen records (containers, tasks, sandboxes per namespace).
- ``peer``: is anything listening at containerd's address, and which process (SO_PEERCRED)?
- ``api``: containerd's gRPC API (grpcio, imported only once the socket accepts).
- ``metadb``: containerd's metadata schema in its stopped meta.db.
- ``tasks``: Tasks.Delete (the only write shimctl makes through containerd's API) and the point
  query Containers.Get, for gc's actions.
- ``bolt``: the read-only bbolt reader under it.
- ``proto/``: the vendored subset of containerd's api/ protos and their generated modules.

Nothing imports this package on a command's start-up path; read it only where records matter.
"""
