"""The model backend protocol and the request/result types every backend shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tokenwire.errors import InvalidRequestError


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Finish:
    """The last item a backend yields: why it stopped, and the token usage."""

    finish_reason: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate. ``messages`` is the chat history (``role``/``content``);
    a bare ``prompt`` is turned into one user message."""

    model: str
    messages: tuple[Mapping[str, str], ...]
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None
    delay_ms: float = 0.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    top_logprobs: int | None = None
    """Token logprobs with this many alternatives (0..20) on each piece; None: none."""

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.get("content", "") for m in self.messages)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], *, default_model: str) -> GenerationRequest:
        """Validate a JSON request body (``POST /v1/streams``, WS ``start``)."""
        if not isinstance(body, Mapping):
            raise InvalidRequestError("the request body must be a JSON object")
        model = body.get("model", default_model)
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("'model' must be a non-empty string")
        messages = _messages(body)
        max_tokens = _number(body, "max_tokens", 256, int, 1, 32768)
        temperature = _number(body, "temperature", 0.7, float, 0.0, 2.0)
        top_p = _number(body, "top_p", 0.95, float, 0.0, 1.0)
        delay_ms = _number(body, "delay_ms", 0.0, float, 0.0, 60_000.0)
        top_logprobs = body.get("top_logprobs")
        if top_logprobs is not None:
            top_logprobs = int(_number(body, "top_logprobs", 0, int, 0, 20))
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise InvalidRequestError("'seed' must be an integer")
        stop_raw = body.get("stop")
        if stop_raw is None:
            stop_raw = ()
        elif isinstance(stop_raw, str):
            stop_raw = (stop_raw,)
        if not isinstance(stop_raw, list | tuple) or not all(
            isinstance(s, str) and s for s in stop_raw
        ):
            raise InvalidRequestError("'stop' must be a non-empty string or a list of them")
        if len(stop_raw) > 8:
            raise InvalidRequestError("'stop' takes at most 8 strings")
        return cls(
            model=model,
            messages=messages,
            max_tokens=int(max_tokens),
            temperature=float(temperature),
            top_p=float(top_p),
            stop=tuple(stop_raw),
            seed=seed,
            delay_ms=float(delay_ms),
            top_logprobs=top_logprobs,
        )


def _messages(body: Mapping[str, Any]) -> tuple[Mapping[str, str], ...]:
    prompt = body.get("prompt")
    messages = body.get("messages")
    if prompt is not None and messages is not None:
        raise InvalidRequestError("give either 'prompt' or 'messages', not both")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InvalidRequestError("'prompt' must be a string")
        return ({"role": "user", "content": prompt},)
    if messages is None:
        raise InvalidRequestError("'prompt' or 'messages' is required")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise InvalidRequestError(f"messages[{i}] must be an object")
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant"):
            raise InvalidRequestError(f"messages[{i}].role must be system, user or assistant")
        if not isinstance(content, str):
            raise InvalidRequestError(f"messages[{i}].content must be a string")
        out.append({"role": role, "content": content})
    return tuple(out)


def _number(
    body: Mapping[str, Any], key: str, default: float, kind: type, lo: float, hi: float
) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequestError(f"'{key}' must be a number")
    if kind is int and not isinstance(value, int):
        raise InvalidRequestError(f"'{key}' must be an integer")
    if not lo <= value <= hi:
        raise InvalidRequestError(f"'{key}' must be within {lo:g}..{hi:g}")
    return value


@runtime_checkable
class ModelBackend(Protocol):
    """A streaming model. ``generate`` yields text pieces as they are produced,
    then exactly one :class:`Finish`. It must stop promptly (within one token)
    when the consuming task is cancelled or the generator is closed."""

    name: str

    def generate(self, request: GenerationRequest) -> AsyncIterator[str | Finish]: ...

    async def aclose(self) -> None: ...
