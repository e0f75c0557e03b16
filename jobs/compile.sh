#!/usr/bin/env bash
# Regenerate the pinned requirements of the batch environments with the project's pinned uv:
#   jobs/requirements.txt  pyproject.toml's dependencies and its embedder and milvus extras
#                          (torch, sentence-transformers, the model: the embed job; pymilvus
#                          and its pandas) at uv.lock's versions, plus pyspark
#   dags/requirements.txt  Airflow and the cncf-kubernetes provider (no project code)
# A change to either file builds a new cached virtualenv (mpp.stack.job_venvs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
uv="${MPP_CACHE_DIR:-$HOME/.cache/mpp}/tools/uv-0.13.8/bin/uv"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$uv" export --frozen --no-dev --all-extras --no-hashes --no-emit-project --no-header -o "$constraints" >/dev/null
"$uv" pip compile --quiet --python-version 3.11 --no-header --annotation-style line \
    pyproject.toml --extra embedder --extra milvus jobs/requirements.in --constraint "$constraints" -o jobs/requirements.txt
"$uv" pip compile --quiet --python-version 3.11 --no-header --annotation-style line \
    dags/requirements.in -o dags/requirements.txt
# The constraints file is temporary: name what it stands for, so the output is reproducible.
sed -i -E 's#-c /[^ ,]+#-c uv.lock#g' jobs/requirements.txt
