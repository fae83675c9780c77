# syntax=docker/dockerfile:1
ARG BASE=python:3.12-slim

FROM ${BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python3 -m venv /opt/fleet && /opt/fleet/bin/pip install --no-cache-dir .

FROM ${BASE}
COPY --from=build /opt/fleet /opt/fleet
RUN useradd --create-home --uid 10001 fleet && mkdir -p /app/config /app/state && chown fleet /app/state
ENV PATH=/opt/fleet/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app
USER fleet
VOLUME ["/app/state"]
ENTRYPOINT ["airbyte-fleet"]
CMD ["--help"]
