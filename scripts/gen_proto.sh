#!/usr/bin/env bash
# Generate Python code (messages, gRPC stubs, type stubs) from proto/ into OUT (default lib/).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/lib}"
py="${PYTHON:-$root/.venv/bin/python}"
mkdir -p "$out/mpp/v1"
PATH="$(dirname "$py"):$PATH" "$py" -m grpc_tools.protoc -I "$root/proto" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "$root"/proto/mpp/v1/*.proto
printf '"""Generated from proto/mpp/v1 by scripts/gen_proto.sh; do not edit."""\n' > "$out/mpp/v1/__init__.py"
