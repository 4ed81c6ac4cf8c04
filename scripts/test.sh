#!/usr/bin/env bash
# Install everything (scripts/setup.sh --test), lint and type-check, then run the whole test suite:
# unit tests and integration tests against real services the harness starts itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
# The README's first command installs the runtime alone: fail when runtime code imports a package
# that only an extra (e.g. the test extra) brings.
.venv/bin/python scripts/check_runtime_deps.py
.venv/bin/ruff check regionsync connectors streams embedding indexer dialog serve mirror stack drills bench cli tests
.venv/bin/mypy
# Two workers (tests/conftest.py: one test package per unit of work, the longest first, ports in a
# slot per worker); --durations: the CI log names the slowest tests, to keep the run in its budget.
exec .venv/bin/pytest -n "${REGIONSYNC_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder --durations=30 "$@"
