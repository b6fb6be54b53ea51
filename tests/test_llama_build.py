"""The installed llama.cpp is the portable build scripts/llama_build.sh makes, not a native
wheel that pip's cache handed back (a native 0.3.36 crashes on Intel Sapphire Rapids)."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parent.parent
STAMP = Path(llama_cpp.__file__).parent / "TOKENWIRE_BUILD"


def stamp_fields() -> dict[str, str]:
    text = STAMP.read_text().strip()
    return dict(part.split("=", 1) for part in text.split() if "=" in part and "==" not in part)


def test_the_installed_build_carries_our_stamp() -> None:
    assert STAMP.exists(), f"{STAMP} is missing: llama-cpp-python was not installed by setup"
    fields = stamp_fields()
    assert fields["build"] == os.environ.get("TOKENWIRE_LLAMA_BUILD", "portable")
    assert fields["arch"] == platform.machine()
    assert STAMP.read_text().startswith(f"llama-cpp-python=={llama_cpp.__version__} ")


def test_the_stamp_matches_the_installed_cpu_library() -> None:
    # A wheel pip reinstalled from its cache replaces the library but leaves our stamp behind:
    # the recorded hash is what tells the two apart.
    lib = (Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so").resolve()
    assert stamp_fields()["cpu_sha"] == hashlib.sha256(lib.read_bytes()).hexdigest()[:16]


def test_the_portable_build_uses_no_instruction_beyond_avx2() -> None:
    if stamp_fields()["build"] != "portable" or platform.machine() != "x86_64":
        return  # a native build opted into, or ARM64's generic baseline: nothing to bound
    info = llama_cpp.llama_print_system_info().decode()
    features = dict(re.findall(r"(\w+) = (\d)", info))
    assert features.get("AVX2") == "1", info
    beyond = [f for f, on in features.items() if on == "1" and f.startswith(("AVX512", "AMX"))]
    assert beyond == [], f"portable build enables {beyond}: {info}"


def test_the_build_script_is_idempotent_and_skips_a_matching_install() -> None:
    # With the stamp matching, the script neither builds nor reinstalls anything.
    out = subprocess.run(
        ["bash", "scripts/llama_build.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHON": sys.executable},
    )
    assert out.returncode == 0, out.stderr
    assert "building" not in out.stdout and "installed" not in out.stdout, out.stdout


def test_the_build_script_refuses_an_unknown_kind() -> None:
    out = subprocess.run(
        ["bash", "scripts/llama_build.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TOKENWIRE_LLAMA_BUILD": "fastest"},
    )
    assert out.returncode == 2
    assert "portable or native" in out.stderr
