#!/usr/bin/env bash
# Check built service images from the inside (buildah run, chroot isolation; no engine):
#   scripts/images/check.sh [SERVICE ...]      (default: all six, at the current tree's tag)
# Each must run as uid 10001, import its service module, hold no C compiler and no dev tooling
# (mpp.stack, mpp.samples, mpp.pipeline), answer `mpp db migrate --help`; the embedder's
# packaged model must encode offline to 384 dimensions. Uses `mpp images build`'s storage.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
py="$root/.venv/bin/python"
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(ingest embedder vector-writer graph-writer analytics recommender)
read -r -a bh < <("$py" -c 'from mpp.stack.images import buildah; print(" ".join(buildah().argv()))')
status=0
for service in "${services[@]}"; do
  ref="$("$py" -c "from mpp.stack.images import image_ref; print(image_ref('$service'))")"
  module="$("$py" -c "from mpp.stack.services import SERVICES; print(SERVICES['$service'][0])")"
  ctr="$("${bh[@]}" from --pull=never "$ref")"
  trap '"${bh[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
  run() { "${bh[@]}" run --isolation chroot "$ctr" -- "$@"; }
  fail() { echo "FAIL $service: $*"; status=1; }
  echo "== $service ($ref)"
  uid="$(run id -u)"; [ "$uid" = 10001 ] && echo "uid $uid" || fail "uid $uid"
  run python -c "import $module" && echo "import $module: ok" || fail "import $module"
  if run sh -c 'for c in gcc cc c++ g++ clang tcc; do command -v $c; done; true' | grep .; then
    fail "a compiler is installed"
  else
    echo "no compiler"
  fi
  run python -c "
import importlib.util as u, sys
dev = [m for m in ('mpp.stack', 'mpp.samples', 'mpp.pipeline') if u.find_spec(m)]
sys.exit(f'dev tooling present: {dev}' if dev else 0)" && echo "no dev tooling" || fail "dev tooling"
  run mpp db migrate --help >/dev/null && echo "mpp db migrate --help: ok" || fail "mpp db migrate"
  said="$(run mpp stack status 2>&1 </dev/null || true)"
  grep -q "not installed in images" <<<"$said" && echo "mpp stack status: says dev tooling" \
    || fail "mpp stack status: no dev-only message: $said"
  run python -c "import torch" 2>/dev/null && has_torch=yes || has_torch=no
  echo "torch: $has_torch"
  if [ "$service" = embedder ]; then
    run env HF_HUB_OFFLINE=1 python -c "
from mpp.embedding import Embedder
v = Embedder().encode(['hello'])
print('encode([hello]) ->', v.shape)
assert v.shape == (1, 384), v.shape" || fail "the packaged model does not encode"
  elif [ "$has_torch" = yes ]; then
    fail "torch in a slim image"
  fi
  "${bh[@]}" rm "$ctr" >/dev/null
  trap - EXIT
done
exit $status
