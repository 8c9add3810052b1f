#!/bin/sh
# Generates the Python message and gRPC stubs of proto/shardline/v1 into OUT_DIR (default: gen/
# beside this script), which the Python agent and admin client import from.
#
#   examples/python-agent/generate.sh [OUT_DIR]
#
# Needs protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc). The
# protoc bundled with Debian's python3-grpc-tools is too old for the `optional` fields of
# admin_service.proto, so the system protoc is used with the C++ gRPC plugin for Python.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$here/gen}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin || true)}

if ! command -v protoc >/dev/null 2>&1; then
  echo "generate.sh: protoc not found; install it (Debian: apt-get install protobuf-compiler)" >&2
  exit 1
fi
if [ -z "$plugin" ] || [ ! -x "$plugin" ]; then
  echo "generate.sh: grpc_python_plugin not found; install it (Debian: apt-get install protobuf-compiler-grpc) or set GRPC_PYTHON_PLUGIN" >&2
  exit 1
fi

mkdir -p "$out"
protoc -I "$root/proto" \
  --python_out="$out" \
  --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$plugin" \
  "$root"/proto/shardline/v1/*.proto
echo "generated Python stubs of proto/shardline/v1 in $out"
