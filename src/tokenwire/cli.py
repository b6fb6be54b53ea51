"""The ``tokenwire`` command: serve | worker | config | ask | models | bench."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn


class _Parser(argparse.ArgumentParser):
    """A mistake on the command line is one line on stderr and exit status 2
    (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _variables_epilog() -> str:
    from tokenwire.server.config import variables
    from tokenwire.server.logformat import LOG_LEVELS

    width = max(len(name) for name, _, _ in variables())
    lines = [
        "environment variables (flags override them; `tokenwire config` shows what is in effect):"
    ]
    for name, _, default in variables():
        shown = ",".join(default) if isinstance(default, tuple) else default
        lines.append(f"  {name:<{width}}  {shown if shown != '' else '(empty)'}")
    lines.append(f"log levels: {', '.join(LOG_LEVELS)}")
    return "\n".join(lines)


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000)")
    p.add_argument(
        "--backlog",
        type=int,
        default=None,
        help="listen queue (default 16384, TOKENWIRE_BACKLOG; capped at net.core.somaxconn)",
    )
    p.add_argument("--model", default=None, help="default model name")
    p.add_argument(
        "--config",
        default=None,
        help="TOML config file: [server] settings, [models] (TOKENWIRE_CONFIG)",
    )
    p.add_argument(
        "--models",
        default=None,
        help="extra models: name=URL,… (openai+http://host/v1#model, ollama+http://…, scripted:)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    from tokenwire import __version__
    from tokenwire.server.logformat import LOG_FORMATS, LOG_LEVELS

    parser = _Parser(prog="tokenwire", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tokenwire {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the streaming server",
        epilog=_variables_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure = sub.add_parser(
        "config",
        help="print the effective server configuration and where each value came from",
    )
    _add_server_flags(configure)
    _add_server_flags(serve)
    serve.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    serve.add_argument(
        "--log-format", default="text", choices=LOG_FORMATS, help="text (default) or json lines"
    )
    serve.add_argument("--tls-cert", default=None, help="PEM certificate (chain): serve HTTPS/WSS")
    serve.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    serve.add_argument("--broker", default=None, help="memory:// (default) or redis://host:port/db")
    serve.add_argument(
        "--processes", type=int, default=None, help="server processes (Redis broker only)"
    )
    serve.add_argument(
        "--model-workers",
        type=int,
        default=None,
        help="over Redis: generations this gateway runs at once, the rest queued for "
        "workers (default 1; 0: a pure gateway)",
    )

    worker = sub.add_parser(
        "worker",
        help="run model workers only: take generation jobs from Redis (docs/scaling.md)",
    )
    worker.add_argument("--broker", default=None, help="redis://host:port/db (TOKENWIRE_BROKER)")
    worker.add_argument(
        "--model-workers",
        type=int,
        default=None,
        help="generations run at once (default 1, TOKENWIRE_MODEL_WORKERS)",
    )
    worker.add_argument("--model", default=None, help="default model name")
    worker.add_argument(
        "--config",
        default=None,
        help="TOML config file: [server] settings, [models] (TOKENWIRE_CONFIG)",
    )
    worker.add_argument("--models", default=None, help="extra models: name=URL,…")
    worker.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    worker.add_argument("--log-format", default="text", choices=LOG_FORMATS)

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
        "tensors: tensor MB/s; client: Python client cost; models: tokenwire vs llama-cpp; "
        "fuzz: the fuzz tests for --minutes N; race: tokenwire against sse-starlette, FastAPI, "
        "Node SSE and socket.io; scale: connect storm, 10k live, idle connections; "
        "ws-deflate: WebSocket bytes, CPU and memory with permessage-deflate on and off",
    )
    bench.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")

    from tokenwire import ask as ask_mod

    ask_mod.add_arguments(sub)

    args = parser.parse_args(argv)
    if args.command == "bench":
        return _run_bench(args.suite, args.args)
    if args.command == "config":
        from tokenwire.config_report import print_config

        return print_config(args)
    if args.command == "worker":
        from tokenwire.workers.redis_worker import worker_command

        return worker_command(args)
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
    "ws-deflate": "bench.ws_compression",
    "tensors": "bench.tensor_bench",
    "client": "bench.client_bench",
    "models": "bench.bench_models",
    "soak": "bench.soak",
    "race": "bench.race",
    "scale": "bench.scale",
    "fuzz": "bench.fuzz",
    "redis": "bench.redis_bench",
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
