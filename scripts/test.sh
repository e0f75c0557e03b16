#!/usr/bin/env bash
# The test command (make test): environment, lint, types, the local stack, then pytest.
# Idempotent: a running stack is reused; servers it starts stay up for the next run
# (`make down` stops them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '\n== %s\n' "$*"; }

# helm (the chart's tests), then Jaeger, Prometheus and promtool (tests that read traces and
# metrics back) are built from source with Go: about 25 minutes on two cores the first time,
# nothing later (cached under ~/.cache/mpp/tools and ~/.cache/mpp/observability). The builds
# run in the background, in their own process group, beside the steps below, and are waited
# for before the tests (the first chart test would otherwise build helm inside pytest).
mkdir -p .stack
obs_log=.stack/install_observability.log
step "Go builds: helm, Jaeger, Prometheus, promtool (background; log: $obs_log)"
setsid -w bash -c 'bash scripts/install_helm.sh >/dev/null && bash scripts/install_observability.sh all' \
  >"$obs_log" 2>&1 &
obs_pid=$!
trap 'kill -TERM -- -"$obs_pid" 2>/dev/null || true' EXIT

bash scripts/bootstrap.sh
py=.venv/bin/python

step "ruff"
$py -m ruff check lib services tests bench jobs dags
$py -m ruff format --check lib services tests bench jobs dags
step "mypy"
$py -m mypy
# The layer contract (.importlinter, docs/architecture.md), on this checkout's library,
# services and batch jobs (jobs/).
step "import layers"
layer_path="$PWD/lib$(printf ':%s' "$PWD"/services/*/)":"$PWD/jobs"
PYTHONPATH="$layer_path" .venv/bin/lint-imports --no-cache
step "stack up"
$py -m mpp.cli stack up
# The local Kubernetes cluster and the six images, for tests/cluster (the chart installed,
# events through pods). Both are cached under ~/.cache/mpp: the first build of the cluster's
# programs takes about 15 minutes, the images about 8; later runs reuse them.
step "cluster up"
$py -m mpp.cli cluster up
step "images"
$py -m mpp.cli images build --import
step "job image"
$py -m mpp.stack.job_image --import
step "Go builds (waiting for them)"
started=$SECONDS
next=$SECONDS
while kill -0 "$obs_pid" 2>/dev/null; do
  if [ "$SECONDS" -ge "$next" ]; then
    printf '  still building after %ss: %s\n' "$((SECONDS - started))" "$(tail -n 1 "$obs_log")"
    next=$((SECONDS + 60))
  fi
  sleep 1
done
if ! wait "$obs_pid"; then
  printf 'the Go builds failed; the end of %s:\n' "$obs_log" >&2
  tail -n 40 "$obs_log" >&2
  exit 1
fi
trap - EXIT
grep -E 'ready in|already (built|installed)' "$obs_log" || true
step "stack up --with observability"
$py -m mpp.cli stack up --with observability
step "pytest"
# Worker processes (pytest-xdist): MPP_TEST_WORKERS of them, none by default (every test in
# this process). With workers, a module's tests run in one worker, and the batch and cluster
# modules all in one, in the order collected (tests/conftest.py, work_unit). On this project's
# two-core machine they gained little (the tests are CPU-bound: 234-264 s against 276 s for the
# recommender's and writers' integration tests) and made timing-sensitive tests flaky, so
# they are off. --durations: the slowest tests at the end, where the run's time goes.
workers="${MPP_TEST_WORKERS:-0}"
$py -m pytest -n "$workers" --dist loadscope --no-loadscope-reorder --durations=25 "$@"
