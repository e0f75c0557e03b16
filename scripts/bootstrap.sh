#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment.
#
# The environment lives outside the clone, under ~/.cache/mpp/venvs/<key>, where <key> hashes
# uv.lock (which records pyproject.toml's dependencies) and the interpreter version: a fresh
# clone with the same lock file reuses it, a changed one builds a new one. .venv in the clone
# is a symlink to it.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${MPP_CACHE_DIR:-$HOME/.cache/mpp}"
uv_version="0.13.8"
python="${MPP_PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# uv itself: pinned, installed once into its own small environment.
uv_home="$cache/tools/uv-$uv_version"
uv="$uv_home/bin/uv"
if [ ! -x "$uv" ]; then
  log "installing uv $uv_version into $uv_home"
  "$python" -m venv "$uv_home"
  "$uv_home/bin/pip" install --quiet --disable-pip-version-check "uv==$uv_version"
fi

py_version="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
key="$(sha256sum < "$root/uv.lock" | cut -c1-16)-py$py_version"
venv="$cache/venvs/$key"

if [ ! -f "$venv/.complete" ]; then
  log "building the virtual environment $venv (first run for this lock file; progress below)"
  rm -rf "$venv"
fi
# uv sync is a no-op when everything is installed; it re-points the editable install of this
# project at this clone, so a cached environment serves any number of clones. --all-extras:
# the developer gets every service's extra (the images take only their own, see Dockerfile).
UV_PROJECT_ENVIRONMENT="$venv" "$uv" sync --frozen --all-extras --project "$root" --python "$python" \
  ${MPP_UV_QUIET:+--quiet}
touch "$venv/.complete"

if [ "$(readlink "$root/.venv" 2>/dev/null)" != "$venv" ]; then
  rm -rf "$root/.venv"
  ln -s "$venv" "$root/.venv"
fi
log "environment ready: .venv -> $venv"
