# regionsync workers and CLI. The embedded stack is not used in containers: docker-compose.yml
# points the same code at real Postgres, Kafka, Kafka Connect, Milvus and MinIO.
FROM python:3.11-slim-bookworm
WORKDIR /app
# Pin torch first (point pip at a CPU-only wheel index here to keep the image small).
RUN pip install --no-cache-dir "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY regionsync ./regionsync
COPY connectors ./connectors
COPY streams ./streams
COPY embedding ./embedding
COPY indexer ./indexer
COPY dialog ./dialog
RUN pip install --no-cache-dir .
ENV HF_HUB_OFFLINE=1
ENTRYPOINT ["regionsync"]
