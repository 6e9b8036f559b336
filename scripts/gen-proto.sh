#!/bin/sh
# Regenerate shimctl/shim/proto/*_pb2.py and *_pb2.pyi from the .proto files, and the same
# under shimctl/records/proto/ (containerd's API).
#
# The committed files were generated with grpcio-tools 1.75.1 (bundled protoc = protobuf
# 6.31.1), so they load on any protobuf runtime >= 6.31.1, including 7.x. A newer
# grpcio-tools stamps a newer gencode version into the files, and the runtime refuses to
# load gencode newer than itself: keep the generator at 1.75.x, or raise the
# `protobuf>=` floor in pyproject.toml to the version printed below.
#
#   python3 -m venv /tmp/gentools && /tmp/gentools/bin/pip install 'grpcio-tools==1.75.1'
#   PYTHON=/tmp/gentools/bin/python scripts/gen-proto.sh
#
# PYTHON: interpreter with grpc_tools (default: python3).
# CHECK_PYTHON: interpreter used to test-import the result (default: python3).
set -eu
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
CHECK_PY="${CHECK_PYTHON:-python3}"
EXPECTED_GENCODE="6.31.1"
PROTO_DIR=shimctl/shim/proto

"$PY" -m grpc_tools.protoc \
    -I "$PROTO_DIR" \
    --python_out="$PROTO_DIR" \
    --pyi_out="$PROTO_DIR" \
    "$PROTO_DIR/ttrpc.proto" \
    "$PROTO_DIR/task.proto" \
    "$PROTO_DIR/runc_options.proto"

# containerd's own API (shimctl/records): a vendored subset of containerd's api/ protos, whose
# imports are rooted at the repository so the generated modules import each other by their
# package path (shimctl.records.proto.api...).
RECORDS_PROTO_DIR=shimctl/records/proto
"$PY" -m grpc_tools.protoc \
    -I . \
    --python_out=. \
    --pyi_out=. \
    $(find "$RECORDS_PROTO_DIR" -name '*.proto' | sort)

gencode=$(sed -n 's/^# Protobuf Python Version: //p' "$PROTO_DIR/ttrpc_pb2.py")
if [ "$gencode" != "$EXPECTED_GENCODE" ]; then
    echo "warning: gencode version is $gencode, not $EXPECTED_GENCODE;" \
        "the generated code needs protobuf>=$gencode at runtime" >&2
fi

# The result must import with the installed protobuf runtime.
"$CHECK_PY" -c 'import shimctl.shim.proto.ttrpc_pb2, shimctl.shim.proto.task_pb2, shimctl.shim.proto.runc_options_pb2'
"$CHECK_PY" -c 'import shimctl.records.proto.api.services.containers.v1.containers_pb2, shimctl.records.proto.api.services.tasks.v1.tasks_pb2, shimctl.records.proto.api.services.sandbox.v1.sandbox_pb2, shimctl.records.proto.api.services.namespaces.v1.namespace_pb2, shimctl.records.proto.api.services.version.v1.version_pb2'
echo "generated (gencode $gencode): $(ls "$PROTO_DIR"/*_pb2.py "$PROTO_DIR"/*_pb2.pyi | tr '\n' ' ')"
echo "generated: $(find "$RECORDS_PROTO_DIR" -name '*_pb2.py' | sort | tr '\n' ' ')"
