"""The steps on one task's shim that the operations (start, delete) and reconcile (gc, load)
share: locating its bundle and dialling its shim (access), stopping it (shimstop)."""
