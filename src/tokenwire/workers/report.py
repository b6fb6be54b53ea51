"""The one paragraph ``tokenwire serve`` prints when a model fails its start-up self-check."""

from __future__ import annotations

from typing import Any

from tokenwire.models.errors import ModelStartFailedError


def _last_words(failure: ModelStartFailedError) -> str:
    """The most telling line the worker wrote to stderr before it died."""
    lines = [line.strip() for line in failure.stderr_tail if line.strip()]
    for line in lines:
        if line.startswith("Fatal Python error"):
            return line
    return lines[-1] if lines else ""


def start_failure_paragraph(models: Any, exc: BaseException) -> str:
    """What failed and what to do, for the model manager's failed self-check ``exc``."""
    name = getattr(exc, "model", None) or getattr(models, "default", None) or "?"
    urls = {entry["id"]: entry["url"] for entry in models.describe()}
    url = urls.get(name)
    where = f"model {name!r}" + (f" ({url})" if url else "")
    if not isinstance(exc, ModelStartFailedError):
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        return (
            f"tokenwire serve: the start-up self-check failed: {where} could not start: "
            f"{message}. Fix the model's configuration (--model, --models, --config, "
            "TOKENWIRE_MODEL) and run `tokenwire serve` again."
        )
    what = f"its worker process (pid {exc.pid}) {exc.how} before it generated one token"
    if exc.error:
        what += f"; the worker reported: {exc.error}"
    words = _last_words(exc)
    if words and words not in exc.error:
        what += f"; its last words on stderr: {words!r}"
    advice = ""
    try:
        backend = models.get(name)
    except Exception:
        backend = None
    explain = getattr(backend, "advice", None)
    if explain is not None:
        advice = " " + explain(exc)
    return (
        f"tokenwire serve: the start-up self-check failed: {where}: {what}.{advice} "
        "The server is not started; run `tokenwire serve` again once that is fixed, or pick "
        "another default model with --model."
    )
