#!/usr/bin/env bash
# Installs a portable llama-cpp-python: one build that runs on every CPU of its architecture.
#
# Why: a native build (GGML_NATIVE=ON, pip's default) uses every instruction of the machine that
# built it, and 0.3.36 built that way crashes in llama_decode on Intel Sapphire Rapids
# (AVX-512, AMX). We build with GGML_NATIVE=OFF, which on x86-64 targets AVX2 + FMA + F16C
# (x86-64-v3: every Intel since Haswell, every AMD since Zen), and on ARM64 the generic baseline.
#
# pip's wheel cache would silently hand back a native wheel built earlier, whatever CMAKE_ARGS
# says, so the wheel is built with --no-cache-dir into a folder of our own, keyed by version and
# flags, and installed from there with --no-index. A stamp file next to the installed package
# records which build it is and the hash of its CPU library; the tests and the start-up
# self-check read it.
#
#   TOKENWIRE_LLAMA_BUILD=portable   (default) the build above
#   TOKENWIRE_LLAMA_BUILD=native     opt in to a build for this machine only
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VERSION=${TOKENWIRE_LLAMA_VERSION:-0.3.36}
KIND=${TOKENWIRE_LLAMA_BUILD:-portable}
case "$KIND" in
  portable) FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF" ;;
  native)   FLAGS="-DGGML_NATIVE=ON" ;;
  *) echo "llama_build: TOKENWIRE_LLAMA_BUILD must be portable or native, not '$KIND'" >&2; exit 2 ;;
esac
ARCH=$(uname -m)
if [[ "$KIND" == portable && "$ARCH" != x86_64 ]]; then
  FLAGS="-DGGML_NATIVE=OFF"
fi
KEY=$(printf '%s %s %s' "$VERSION" "$ARCH" "$FLAGS" | sha256sum | cut -c1-12)
STAMP="llama-cpp-python==$VERSION build=$KIND arch=$ARCH key=$KEY flags=$FLAGS"

# The stamp ends with the hash of the installed CPU backend library, so a wheel that pip put
# back later (its files replaced, our stamp left behind) no longer matches.
stamp_of_installed() {
  $PY - <<'PY' 2>/dev/null || true
import hashlib, importlib.util, pathlib
spec = importlib.util.find_spec("llama_cpp")
if spec and spec.origin:
    pkg = pathlib.Path(spec.origin).parent
    stamp, lib = pkg / "TOKENWIRE_BUILD", (pkg / "lib" / "libggml-cpu.so").resolve()
    if stamp.exists() and lib.exists():
        text = stamp.read_text().strip()
        base, _, recorded = text.rpartition(" cpu_sha=")
        if hashlib.sha256(lib.read_bytes()).hexdigest()[:16] == recorded:
            print(base)
PY
}
installed_stamp=$(stamp_of_installed)
if [[ "$installed_stamp" == "$STAMP" ]]; then
  exit 0
fi

WHEELS=${TOKENWIRE_WHEEL_DIR:-$HOME/.cache/tokenwire/wheels}/$KEY
if ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "setup: building llama-cpp-python $VERSION ($KIND: $FLAGS); about 4 minutes on 2 cores"
  mkdir -p "$WHEELS.tmp"
  CMAKE_ARGS="$FLAGS" FORCE_CMAKE=1 $PY -m pip wheel -q --no-cache-dir --no-deps \
    -w "$WHEELS.tmp" "llama-cpp-python==$VERSION"
  rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"
fi
$PY -m pip install -q --force-reinstall --no-deps --no-index --find-links "$WHEELS" \
  "llama-cpp-python==$VERSION"
# Its pure-Python dependencies, from the index as usual.
$PY -m pip install -q "typing-extensions>=4.5" "numpy>=1.20" "diskcache>=5.6.1" "jinja2>=2.11.3"
$PY - "$STAMP" <<'PY'
import hashlib, importlib.util, pathlib, sys
pkg = pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent
lib = (pkg / "lib" / "libggml-cpu.so").resolve()
sha = hashlib.sha256(lib.read_bytes()).hexdigest()[:16]
(pkg / "TOKENWIRE_BUILD").write_text(f"{sys.argv[1]} cpu_sha={sha}\n")
PY
if [[ "$(stamp_of_installed)" != "$STAMP" ]]; then
  echo "llama_build: the installed llama-cpp-python does not match the build just made" >&2
  exit 1
fi
echo "setup: installed $STAMP"
