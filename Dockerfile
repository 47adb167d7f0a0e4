# syntax=docker/dockerfile:1
# order-sync: the daemon as a container beside the ERP. Build: docker build -t taobao-order-sync .
# Two stages: the first installs the package and its dependencies into a virtualenv; the final image
# gets only that virtualenv on a slim Python (no compiler, no pip, no sources, no caches).
# Reproducible: the base by exact tag and by the digest of its multi-architecture index (the digest as
# published for that tag; the build machine of this repository cannot reach Docker Hub to re-check it),
# every Python package from requirements/*.txt with its hash (`make lock` refreshes them).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A virtualenv without pip; the base image's pip installs into it.
RUN python -m venv --without-pip /opt/venv
WORKDIR /src
# The locked dependencies first: this layer changes only with the lock files.
COPY requirements/runtime.txt requirements/build.txt requirements/
RUN pip --python /opt/venv/bin/python install --no-cache-dir --require-hashes --no-deps \
    -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY common ./common
COPY taobao ./taobao
COPY store ./store
COPY listener ./listener
COPY reconciler ./reconciler
COPY replicas ./replicas
COPY daemon ./daemon
COPY simulator ./simulator
# asyncpg and the other compiled dependencies come as manylinux wheels for amd64 and arm64. The package
# is built by the locked setuptools in a throwaway virtualenv and installed without dependencies.
RUN python -m venv --without-pip /opt/build \
    && pip --python /opt/build/bin/python install --no-cache-dir --require-hashes --no-deps \
       -r requirements/build.txt \
    && pip --python /opt/build/bin/python wheel --no-cache-dir --no-deps --no-build-isolation \
       --wheel-dir /tmp/wheels . \
    && pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /tmp/wheels/*.whl

FROM ${PYTHON_IMAGE}
# A fixed numeric uid/gid, so volume permissions and Kubernetes' runAsNonRoot can rely on it.
RUN groupadd --system --gid 10001 ordersync \
    && useradd --system --no-log-init --uid 10001 --gid ordersync --home-dir /nonexistent \
       --shell /usr/sbin/nologin ordersync
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080 \
    LOG_FORMAT=json
# Outside a container the daemon listens on 127.0.0.1 only; in here it must listen on all interfaces
# so a published port reaches it. docker-compose.yml publishes it on the host's 127.0.0.1.
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# /healthz answers while the process lives; readiness (/readyz) is for orchestrators and alerts.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('HTTP_PORT', '8080'); sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=2).status == 200 else 1)"]
# SIGTERM (docker stop) is a graceful stop: intake closes, in-flight work drains for SYNC_DRAIN_SECONDS.
STOPSIGNAL SIGTERM
ENTRYPOINT ["order-sync"]
CMD ["run"]
