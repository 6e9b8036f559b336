"""Generated protobuf modules for the ttrpc envelope, the shim Task API and runc options.

Regenerate with `scripts/gen-proto.sh` (`make proto`); the *_pb2.py/.pyi files are committed.
"""
