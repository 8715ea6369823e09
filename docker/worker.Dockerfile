# The marginstream worker image: `faust -A marginstream.app worker`, one per container.
# Build from the repository root: docker build -f docker/worker.Dockerfile .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && useradd --create-home --uid 10001 marginstream \
    && mkdir -p /data && chown marginstream /data

USER marginstream
ENV KAFKA_BOOTSTRAP_SERVERS=kafka:9092
EXPOSE 6066
VOLUME ["/data"]
CMD ["faust", "-A", "marginstream.app", "--datadir", "/data", "worker", "-l", "info"]
