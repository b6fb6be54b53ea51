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

    from tokenwire import ask as ask_mod

    ask_mod.add_arguments(sub)

    args = parser.parse_args(argv)
    if args.command == "serve":
        from tokenwire.server.run import serve as run_serve

        return run_serve(args)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
