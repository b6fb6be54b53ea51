#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what is needed, then runs
# the style gates (ruff, mypy), the Python tests and the JS unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --dev

PY=${PYTHON:-python3}
echo "== ruff format --check"; $PY -m ruff format --check src tests bench
echo "== ruff check";          $PY -m ruff check src tests bench
echo "== mypy src";            $PY -m mypy src
echo "== JS unit tests";       (cd clients/js && node --test test/)
echo "== pytest";              $PY -m pytest -q -p no:cacheprovider "$@"
