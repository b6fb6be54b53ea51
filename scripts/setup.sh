#!/usr/bin/env bash
# Installs everything tokenwire needs on a fresh Debian machine with Python 3.11, pip and root.
#   scripts/setup.sh          the package and its embedded model (enough for `tokenwire serve`)
#   scripts/setup.sh --dev    plus test tools, Debian services (nginx, chromium) and npm packages
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

# A portable llama.cpp build first, so that installing the package finds it satisfied
# instead of building a native one (scripts/llama_build.sh says why).
bash scripts/llama_build.sh

if [[ "${1:-}" != "--dev" ]]; then
  $PY -m pip install -q -e .
  exit 0
fi

need_apt=()
command -v nginx >/dev/null 2>&1 || need_apt+=(nginx)
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium)
[[ -x /usr/bin/redis-server ]] || need_apt+=(redis-server)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if ((${#need_apt[@]})); then
  echo "setup: apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

$PY -m pip install -q -e ".[dev,mlx]"
# The CPU build of PyTorch, for the DLPack tests (a plain `torch` would pull CUDA).
$PY -m pip install -q "torch==2.13.0"

for dir in clients/js tests/node tests/node/ai-sdk tests/e2e/react-app examples/fastapi_app bench/node; do
  if [[ -f "$dir/package-lock.json" ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done
