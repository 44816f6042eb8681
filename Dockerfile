# flashtx: one image for the Ray head and workers (KubeRay: cluster/kuberay.yaml) and for
# a single-node deployment (docker-compose.yml).
#   docker build -t flashtx:0.1.0 .
# Multi-stage: the wheel and its dependencies are built in the first stage; the runtime
# stage has no compiler, runs as a non-root user, and checks itself through the gRPC
# health service.

# Pinned: Python 3.11 on Debian 12 (bookworm), the versions the test suite runs on.
FROM python:3.11.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY clients/python clients/python
COPY engine engine
COPY actors actors
COPY adapters adapters
COPY protos protos
COPY flashtx flashtx
COPY bench bench
RUN python -m venv /opt/flashtx \
    && /opt/flashtx/bin/pip install --no-cache-dir --upgrade pip \
    && /opt/flashtx/bin/pip install --no-cache-dir ./clients/python '.[bench,otlp]'

FROM python:3.11.11-slim-bookworm
RUN groupadd --gid 1000 flashtx \
    && useradd --uid 1000 --gid flashtx --create-home --shell /bin/bash flashtx
COPY --from=build /opt/flashtx /opt/flashtx
ENV PATH=/opt/flashtx/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    RAY_worker_niceness=0 \
    FLASHTX_DATA_DIR=/home/flashtx/.flashtx
USER 1000:1000
WORKDIR /home/flashtx
# gRPC, Ray's dashboard, Prometheus metrics of this node.
EXPOSE 50051 8265 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["flashtx", "health", "--address", "127.0.0.1:50051"]
# Postgres and Redis come from FLASHTX_POSTGRES_DSN and FLASHTX_REDIS_URL (or
# FLASHTX_POSTGRES_DSN_FILE, …); without them the embedded servers are used.
CMD ["flashtx", "serve", "--port", "50051"]
