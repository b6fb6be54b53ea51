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
# Three workers on two cores: most tests wait on servers, sockets and timers, not
# the CPU. Whole files go to one worker, so a file's fixtures are shared as before.
echo "== pytest";              $PY -m pytest -q -p no:cacheprovider -p no:benchmark \
                                 -n "${TOKENWIRE_TEST_WORKERS:-3}" --dist loadfile "$@"
