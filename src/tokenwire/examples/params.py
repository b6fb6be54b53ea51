"""Checking a pipeline's ``params`` object: every problem is an :class:`InvalidRequestError`
(HTTP 422) that names the parameter, never an ``assert`` or a crash."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tokenwire.errors import InvalidRequestError, excerpt


def check_names(pipeline: str, params: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Refuse unknown parameters: a typo must not silently fall back to a default."""
    known = set(allowed)
    unknown = sorted(str(name) for name in params if name not in known)
    if unknown:
        raise InvalidRequestError(
            f"pipeline {pipeline!r} has no parameter {', '.join(map(excerpt, unknown[:8]))}; "
            f"known: {', '.join(sorted(known))}"
        )


def int_param(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name!r} must be an integer, got {excerpt(value)}")
    if not low <= value <= high:
        raise InvalidRequestError(f"{name!r} must be within {low}..{high}, got {value}")
    return value


def choice_param(params: Mapping[str, Any], name: str, default: str, choices: Iterable[str]) -> str:
    options = tuple(choices)
    value = params.get(name, default)
    if value not in options:
        raise InvalidRequestError(
            f"{name!r} must be one of {', '.join(options)}; got {excerpt(value)}"
        )
    return str(value)


def shape_param(params: Mapping[str, Any], name: str, max_dims: int) -> list[int] | None:
    value = params.get(name)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > max_dims
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
    ):
        raise InvalidRequestError(
            f"{name!r} must be a list of at most {max_dims} non-negative integers, "
            f"got {excerpt(value)}"
        )
    return value
