# syntax=docker/dockerfile:1
#
# airbyte-fleet's long-running worker: `docker build -t airbyte-fleet .`, then see README.md
# ("Running in a container") for `docker run` and compose.example.yaml.
#
# BASE is any Debian-like image with python3 >= 3.11 and its venv module. Real users keep the
# default; the tests build on a local Debian image (scripts/container-base.sh), where python3 is
# /usr/bin/python3 rather than /usr/local/bin/python3, so everything below calls plain `python3`.
ARG BASE=python:3.12-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE} AS build

# Only for builds behind a TLS-inspecting proxy or a private index; all empty by default, and
# none of them reaches the final image (this stage is thrown away).
ARG PIP_CERT=""
ARG PIP_INDEX_URL=""
ARG PIP_EXTRA_INDEX_URL=""
ARG PIP_TRUSTED_HOST=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
RUN python3 -m venv /opt/fleet

# Dependencies first, in their own layer, so that a change to src/ alone reinstalls only the
# project itself. The stub package lets pip resolve pyproject's dependencies without the source;
# constraints.txt pins every one of them (scripts/constraints.sh writes it), so that a build
# tomorrow installs what a build today did.
COPY pyproject.toml README.md LICENSE constraints.txt ./
RUN set -eu; \
    for v in PIP_CERT PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do \
        eval "[ -n \"\${$v}\" ] || unset $v"; \
    done; \
    mkdir -p src/airbyte_fleet && touch src/airbyte_fleet/__init__.py; \
    /opt/fleet/bin/python -m pip install --quiet -c constraints.txt . ; \
    /opt/fleet/bin/python -m pip uninstall --quiet --yes airbyte-fleet; \
    rm -rf src build

COPY src ./src
RUN set -eu; \
    for v in PIP_CERT PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do \
        eval "[ -n \"\${$v}\" ] || unset $v"; \
    done; \
    /opt/fleet/bin/python -m pip install --quiet --no-deps . ; \
    /opt/fleet/bin/airbyte-fleet --version

# The health check, as a file so that the HEALTHCHECK line stays readable. It asks /healthz on
# loopback at the port `serve` was started with (--port N on its command line), else
# $AIRBYTE_FLEET_PORT, else 8080. urlopen raises on anything but a 2xx: exit 1, unhealthy.
RUN printf '%s\n' \
    '#!/opt/fleet/bin/python' \
    'import glob, os, urllib.request' \
    'port = os.environ.get("AIRBYTE_FLEET_PORT") or "8080"' \
    'for name in glob.glob("/proc/[0-9]*/cmdline"):' \
    '    try:' \
    '        argv = open(name, "rb").read().decode(errors="replace").split("\0")' \
    '    except OSError:' \
    '        continue' \
    '    if "serve" in argv:' \
    '        for i, arg in enumerate(argv):' \
    '            if arg == "--port" and i + 1 < len(argv):' \
    '                port = argv[i + 1]' \
    '            elif arg.startswith("--port="):' \
    '                port = arg.split("=", 1)[1]' \
    'urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4).close()' \
    > /opt/fleet/bin/airbyte-fleet-healthcheck \
 && chmod 0755 /opt/fleet/bin/airbyte-fleet-healthcheck

# ---------------------------------------------------------------------------------------------
FROM ${BASE}

LABEL org.opencontainers.image.title="airbyte-fleet" \
      org.opencontainers.image.description="Trigger many Airbyte syncs at once, follow every job to its end, report one result." \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, non-root uid/gid, so that a bind-mounted state folder can be chown'ed to match; USER
# names it by number, which Kubernetes' runAsNonRoot can check (a name it cannot).
RUN groupadd --gid 10001 fleet \
 && useradd --uid 10001 --gid fleet --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin fleet \
 && mkdir -p /app/config /app/state \
 && chown fleet:fleet /app/state \
 && chmod 0750 /app/state

COPY --from=build /opt/fleet /opt/fleet

# Config: mount a folder holding airbyte-fleet.toml at /app/config (read as config/airbyte-fleet.toml
# from the working directory /app). State: the run journal lives in the /app/state volume.
# AIRBYTE_FLEET_HOST/PORT: inside a container the API must listen on all interfaces to be
# published with -p; flags given after the image name win over them.
# MALLOC_ARENA_MAX: the worker's store calls run in threads, and glibc gives threads arenas of
# their own; memory freed there stays kept. Two arenas held a long-running worker's RSS to
# 0.39 KB a run over 1,500 runs against 0.6 (BENCHMARKS.md, the worker over 500 small runs).
ENV PATH=/opt/fleet/bin:$PATH \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AIRBYTE_FLEET_STATE_DIR=/app/state \
    AIRBYTE_FLEET_HOST=0.0.0.0 \
    AIRBYTE_FLEET_PORT=8080

WORKDIR /app
USER 10001:10001
VOLUME ["/app/state"]
EXPOSE 8080

# `docker stop` sends SIGTERM: `serve` finishes or hands over its runs and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["airbyte-fleet-healthcheck"]

ENTRYPOINT ["airbyte-fleet"]
CMD ["serve"]
