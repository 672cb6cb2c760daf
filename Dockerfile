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

# Dependencies first, so a change to src/ reuses this layer. requirements.lock pins the dev extra
# too (pytest, mypy, a compose binary...); the image takes only the closure of [project].dependencies
# along the lock's "# via" lines, hashes unchanged. --require-hashes refuses any dependency missing
# from that subset, so a wrong cut fails the build, never the running service.
COPY pyproject.toml requirements.lock ./
RUN python - <<'EOF'
import re
import tomllib
from pathlib import Path


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


roots = {
    canonical(re.match(r"[A-Za-z0-9._-]+", spec)[0])
    for spec in tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]
}
entries: dict[str, list[str]] = {}
parents: dict[str, set[str]] = {}
current = None
for line in Path("requirements.lock").read_text().splitlines(keepends=True):
    pinned = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==", line)
    if pinned:
        current = canonical(pinned[1])
        entries[current], parents[current] = [line], set()
        continue
    if current is None:
        continue
    entries[current].append(line)
    comment = line.strip()
    if comment.startswith("#"):
        parent = re.match(r"#\s*(?:via\b)?\s*(\S*)", comment)[1]
        if parent:
            parents[current].add(canonical(parent))
missing = roots - entries.keys()
if missing:
    raise SystemExit(f"requirements.lock lacks {sorted(missing)}: run `make lock`")
needed = set(roots)
while grown := {name for name, via in parents.items() if name not in needed and via & needed}:
    needed |= grown
Path("/tmp/requirements.runtime.lock").write_text(
    "".join(line for name in entries if name in needed for line in entries[name])
)
print(f"runtime: {len(needed)} of {len(entries)} locked packages")
EOF
RUN pip install --require-hashes -r /tmp/requirements.runtime.lock

# The package runs from /app/src (an editable install): migrations are found beside the source, at
# /app/migrations (veil.core.migrations.DEFAULT_DIRECTORY), as in a checkout.
COPY README.md ./
COPY src/ src/
RUN pip install --no-deps --editable . && python -m compileall -q src

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
COPY --from=build /app/src /app/src
COPY migrations/ /app/migrations/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    VEIL_ENV=production \
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
