"""shimctl: manage containerd runtime-v2 shims directly on containerd's root and state dirs."""

__version__ = "0.1.0"
