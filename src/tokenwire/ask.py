"""``tokenwire ask`` and ``tokenwire models`` (placeholder until the models work lands)."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(sub: Any) -> None:
    """Register the ``ask`` and ``models`` subcommands on an argparse subparsers object."""
    ask = sub.add_parser("ask", help="ask a model and print tokens as they arrive")
    ask.add_argument("prompt")
    ask.set_defaults(handler=_not_ready)


def _not_ready(args: argparse.Namespace) -> int:
    raise SystemExit("tokenwire ask is not available yet")
