"""The examples in examples/ that need no browser, run as a user would, against a
real ``tokenwire serve``: the Python client script, and the Next.js route handler
called under node the way Next.js calls it (a web Request in, a Response out;
Next.js itself is not built: too heavy for the suite)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, ServerProcess
from tokenwire.models.scripted import scripted_token

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"


def expected(tokens: int) -> str:
    return "".join(scripted_token(i) for i in range(tokens))


def test_python_client_script_leaves_and_resumes(server: ServerProcess) -> None:
    script = EXAMPLES / "python_client" / "ask.py"
    args = ["--url", server.url, "--model", "scripted", "--max-tokens", "40"]
    args += ["--leave-after", "10", "--param", "delay_ms=20", "What", "is", "resuming?"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    # The answer, whole and once, though it came over two connections.
    assert done.stdout == expected(40) + "\n"
    assert "[left after seq 10; resuming st_" in done.stderr
    assert '[done: {"finish_reason": "length"' in done.stderr


def test_nextjs_route_handler_under_node(server: ServerProcess) -> None:
    node = shutil.which("node")
    assert node is not None, "node missing: run scripts/setup.sh --dev"
    here = ROOT / "tests" / "examples_node"
    done = subprocess.run(
        [node, "--import", "./resolve-tokenwire.mjs", "next-route.mjs", server.url],
        cwd=here,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["started"]["status"] == 201
    events = out["events"]
    assert events["status"] == 200 and events["text"] == expected(12)
    assert events["kinds"][-1] == "done"
    # The headers a client resumes with come through the route, unbuffered.
    assert events["headers"]["x-tokenwire-stream"] == out["started"]["id"]
    assert events["headers"]["x-accel-buffering"] == "no"
    assert out["resumed"]["text"] == expected(12)[len(expected(5)) :]
    assert out["status"]["body"]["status"] == "done"
    chat = out["chat"]
    assert chat["status"] == 200 and chat["text"] == expected(6)
    assert chat["headers"]["x-vercel-ai-ui-message-stream"] == "v1"
    assert chat["headers"]["x-tokenwire-chat-token"]
    assert out["notFound"]["status"] == 404
