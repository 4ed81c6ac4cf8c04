# regionsync workers and CLI. The embedded stack is not used in containers: docker-compose.yml
# points the same code at real Postgres, Kafka, Kafka Connect, Milvus and MinIO.

# Stage 1: export the embedding model to ONNX (embedding/export.py). Only this stage has torch.
FROM python:3.11-slim-bookworm AS model
WORKDIR /src
# Pin torch first (point pip at a CPU-only wheel index here to keep the stage small).
RUN pip install --no-cache-dir "torch==2.13.0"
COPY pyproject.toml README.md ./
COPY regionsync ./regionsync
COPY connectors ./connectors
COPY streams ./streams
COPY embedding ./embedding
COPY indexer ./indexer
COPY dialog ./dialog
RUN pip install --no-cache-dir ".[export]" \
 && HF_HUB_OFFLINE=1 python -m embedding.export --dest /models/all-MiniLM-L6-v2

# Stage 2: the runtime, without torch: ONNX Runtime reads the exported files.
FROM python:3.11-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY regionsync ./regionsync
COPY connectors ./connectors
COPY streams ./streams
COPY embedding ./embedding
COPY indexer ./indexer
COPY dialog ./dialog
COPY serve ./serve
RUN pip install --no-cache-dir .
COPY --from=model /models /models
ENV REGIONSYNC_EMBED_ONNX_DIR=/models/all-MiniLM-L6-v2
ENTRYPOINT ["regionsync"]
