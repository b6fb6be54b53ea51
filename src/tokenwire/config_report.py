"""``tokenwire config``: the configuration ``tokenwire serve`` would run with, and
where each value came from: ``default``, ``env`` (a ``TOKENWIRE_*`` variable),
``file`` (``--config``) or ``flag``."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib

from tokenwire.errors import TokenwireError
from tokenwire.models.manager import BUILTIN_MODELS, ENV_MODEL, ENV_MODELS, parse_models_spec
from tokenwire.server.config import config_path, explain, unknown_variables


def _file_models(path: str | None) -> dict[str, object]:
    if path is None:
        return {}
    with open(path, "rb") as f:
        table = tomllib.load(f).get("models", {})
    return dict(table) if isinstance(table, dict) else {}


def model_rows(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """``(name, url or "default -> name", source)``, after the manager accepted them."""
    from tokenwire.server.run import _models

    manager = _models(args)
    file_table = _file_models(config_path(args.config))
    sources: dict[str, str] = dict.fromkeys(BUILTIN_MODELS, "default")
    sources.update(dict.fromkeys((k for k in file_table if k != "default"), "file"))
    sources.update(dict.fromkeys(parse_models_spec(os.environ.get(ENV_MODELS, "")), "env"))
    sources.update(dict.fromkeys(parse_models_spec(args.models or ""), "flag"))
    if args.model:
        default_source = "flag"
    elif os.environ.get(ENV_MODEL):
        default_source = "env"
    elif "default" in file_table:
        default_source = "file"
    else:
        default_source = "default"
    rows = [("(default model)", str(manager.default), default_source)]
    for entry in manager.describe():
        name = entry["id"]
        rows.append((name, str(entry["url"]), sources.get(name, "default")))
    return rows


def print_config(args: argparse.Namespace) -> int:
    try:
        settings = explain(
            config_file=args.config,
            host=args.host,
            port=args.port,
            default_model=args.model,
            backlog=args.backlog,
        )
        models = model_rows(args)
    except (ValueError, TokenwireError, OSError, tomllib.TOMLDecodeError) as exc:
        message = exc.message if isinstance(exc, TokenwireError) else str(exc)
        print(f"tokenwire config: error: {message}", file=sys.stderr)
        return 2
    for line in unknown_variables():
        print(f"warning: {line}", file=sys.stderr)
    width = max(len(name) for name, _, _, _ in settings)
    print(f"{'variable':<{width}}  {'value':<24} source")
    for name, _, value, source in settings:
        shown = ",".join(value) if isinstance(value, tuple) else value
        print(f"{name:<{width}}  {shown!s:<24} {source}")
    print("models:")
    for name, url, source in models:
        print(f"  {name:<{width - 2}}  {url:<24} {source}")
    return 0
