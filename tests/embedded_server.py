"""Start ``tests/embedding_host.py`` (FastAPI with tokenwire mounted at ``/tw``) under
uvicorn in its own process, for the embedding tests and the mounted demo page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, ServerProcess, free_port, wait_http


def start_host(tmp_path: Path, mode: str, **extra_env: str) -> ServerProcess:
    port = free_port()
    log_path = tmp_path / f"host-{mode}.log"
    env = {**os.environ, "TOKENWIRE_MODEL": "scripted", "EMBED_MODE": mode, "PYTHONUNBUFFERED": "1"}
    env.update(extra_env)
    cmd = [sys.executable, "-m", "uvicorn", "tests.embedding_host:app", "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    host = ServerProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        wait_http(host.url + "/hello", proc=proc)
    except BaseException:
        host.stop()
        raise
    return host
