"""Typed results of shimctl's operations. Plain dataclasses, one module per family so a
command imports (and builds) only the classes it returns: `results` for start and delete,
`findings` for list, load and gc, `info` for version, doctor and events. render.py turns them
into text, tables or JSON without the manager knowing how."""
