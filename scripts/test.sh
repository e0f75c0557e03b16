#!/usr/bin/env bash
# The test command (make test): environment, lint, types, the local stack, then pytest.
# Idempotent: a running stack is reused; servers it starts stay up for the next run
# (`make down` stops them).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
py=.venv/bin/python
step() { printf '\n== %s\n' "$*"; }

step "ruff"
$py -m ruff check lib services tests bench jobs dags
$py -m ruff format --check lib services tests bench jobs dags
step "mypy"
$py -m mypy
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
step "pytest"
$py -m pytest "$@"
