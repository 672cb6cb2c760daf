# syntax=docker/dockerfile:1
# Veil's production image: every service (`veil serve NAME`) and `veil migrate` from one image.
# Build (docs/deploy.md):  docker build -t veil:sha-$(git rev-parse --short=12 HEAD) .
# No secret is baked in: configuration comes from the environment, keys from mounted files.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app

# Dependencies first, so a change to src/ reuses this layer: requirements.lock pins the runtime
# dependencies only, with hashes (the dev tools are in requirements-dev.lock).
COPY pyproject.toml requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# The package (with its migrations as package data) goes into the virtualenv like any dependency.
COPY README.md ./
COPY src/ src/
RUN pip install --no-deps .

FROM ${PYTHON_IMAGE}
ARG VEIL_REVISION=unknown
LABEL org.opencontainers.image.title="veil" \
      org.opencontainers.image.description="Privacy-first, end-to-end-encrypted messaging backend" \
      org.opencontainers.image.revision="${VEIL_REVISION}"
RUN groupadd --system --gid 10001 veil \
    && useradd --system --uid 10001 --gid veil --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin veil
# Code and dependencies stay owned by root: the service cannot change them.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VEIL_ENV=production \
    VEIL_REVISION=${VEIL_REVISION} \
    VEIL_HOST=0.0.0.0 \
    VEIL_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
# Liveness only (no database round trip), on VEIL_PORT: keep `--port` equal to it. Plain HTTP behind
# the gateway; HTTPS on loopback, unverified, when VEIL_TLS_CERT_FILE makes the process serve TLS.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request as r; tls = bool(os.environ.get('VEIL_TLS_CERT_FILE')); r.urlopen(('https' if tls else 'http') + '://127.0.0.1:' + os.environ.get('VEIL_PORT', '8080') + '/livez', timeout=2, context=ssl._create_unverified_context() if tls else None)"]
ENTRYPOINT ["veil"]
CMD ["serve", "all"]
