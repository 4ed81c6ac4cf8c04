# regionsync workers and CLI. The embedded stack is not used in containers: docker-compose.yml
# points the same code at real Postgres, Kafka, Kafka Connect, Milvus and MinIO per region.
# Base images are pinned to an exact version (tests/deploy/test_dockerfile.py checks it).

# Stage 1: export the embedding model to ONNX (embedding/export.py). Only this stage has torch,
# and it needs only the embedding package: a change elsewhere does not redo the export.
FROM python:3.11.13-slim-bookworm AS model
WORKDIR /src
# torch first, pinned, from the CPU-only wheel index (the default index pulls CUDA, several GB).
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml ./
COPY embedding ./embedding
RUN pip install --no-cache-dir ".[export]" \
 && HF_HUB_OFFLINE=1 python -m embedding.export --dest /models/all-MiniLM-L6-v2

# Stage 2: the runtime, without torch: ONNX Runtime reads the exported files. Every package of
# pyproject.toml's [tool.setuptools.packages.find] include list is copied: the CLI imports them all
# (cli/main.py registers drills' and mirror's commands too), and the workers run from them.
FROM python:3.11.13-slim-bookworm
WORKDIR /app
COPY pyproject.toml ./
COPY regionsync ./regionsync
COPY connectors ./connectors
COPY streams ./streams
COPY embedding ./embedding
COPY indexer ./indexer
COPY dialog ./dialog
COPY serve ./serve
COPY mirror ./mirror
COPY stack ./stack
COPY drills ./drills
COPY bench ./bench
COPY cli ./cli
# The installed CLI must build its parser (it imports every package) from outside the sources.
RUN pip install --no-cache-dir . && cd /tmp && regionsync --help >/dev/null
COPY --from=model /models /models
ENV REGIONSYNC_EMBED_ONNX_DIR=/models/all-MiniLM-L6-v2
ENTRYPOINT ["regionsync"]
