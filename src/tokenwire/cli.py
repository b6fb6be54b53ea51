"""The ``tokenwire`` command: serve | ask | models | bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenwire", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the streaming server")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--model", default=None, help="default model name")
    serve.add_argument("--config", default=None, help="TOML config file ([models] table)")
    serve.add_argument(
        "--models",
        default=None,
        help="extra models: name=URL,… (openai+http://host/v1#model, ollama+http://…, scripted:)",
    )
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--tls-cert", default=None, help="PEM certificate (chain): serve HTTPS/WSS")
    serve.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")

    bench = sub.add_parser(
        "bench",
        help="run a benchmark from a source checkout's bench/ folder and print its table",
    )
    bench.add_argument(
        "suite",
        nargs="?",
        default="sse",
        choices=sorted(BENCHES),
        help="sse: SSE fan-out vs sse-starlette; ws: WebSocket and Socket.IO beside SSE; "
        "tensors: tensor MB/s; client: Python client cost; models: tokenwire vs llama-cpp",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")

    from tokenwire import ask as ask_mod

    ask_mod.add_arguments(sub)

    args = parser.parse_args(argv)
    if args.command == "bench":
        return _run_bench(args.suite, args.args)
    if args.command == "serve":
        from tokenwire.server.run import serve as run_serve

        return run_serve(args)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


BENCHES = {
    "sse": "bench",
    "ws": "bench.ws_fanout",
    "tensors": "bench.tensor_bench",
    "client": "bench.client_bench",
    "models": "bench.bench_models",
    "soak": "bench.soak",
}


def _run_bench(suite: str, args: list[str]) -> int:
    """Benchmarks live in the repository (bench/), not in the installed package."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "__init__.py").is_file():
        print("tokenwire bench runs from a source checkout (bench/ was not found)", file=sys.stderr)
        return 2
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.call([sys.executable, "-m", BENCHES[suite], *args], cwd=root, env=env)


if __name__ == "__main__":
    sys.exit(main())
