"""Actors that answer requests, and stream answers token by token, on the Hub.

An :class:`Actor` answers ``receive(type, payload)``; one that can stream also
has ``stream(type, payload)``, written either as an async generator of tokens
(``str``) and events, or as ``async def stream(self, type, payload, emit)``
calling ``await emit(token)``. A :class:`Router` addresses actors by name::

    router = Router(hub)
    router.register("session-1", SessionActor("session-1", models))
    await router.ask("session-1", "history")
    await router.stream_ask("session-1", "inference", "Hi!", on_chunk=print, timeout=60)
    async for chunk in router.stream("session-1", "inference", "And then?"):
        ...

A streamed answer is a Hub stream, so it has a stream id and any number of
consumers: :meth:`Router.open_stream` starts one and returns it,
:meth:`Router.follow` (async iterator) and ``stream_ask(…, stream_id=…)``
(callbacks) read it. The consumer that started an answer owns it: when it
stops iterating, is cancelled or times out, the answer is stopped and the
model stops generating. A follower that leaves stops nothing.

Errors::

    TokenwireError
    └── ActorError
        ├── ActorNotFoundError          no actor at that address (404)
        ├── StreamingNotSupportedError  the actor has no stream() (422)
        └── ActorTimeoutError           no answer within the timeout (504)
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tokenwire.errors import InvalidRequestError, TokenwireError
from tokenwire.events import CANCELLED, DONE, ERROR, METRICS, TOKEN, Event
from tokenwire.models.base import GenerationRequest
from tokenwire.models.manager import ModelManager
from tokenwire.models.producer import model_producer
from tokenwire.stream import Emitter, Hub, Stream

# -- errors -------------------------------------------------------------------------


class ActorError(TokenwireError):
    code = "actor_error"

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address


class ActorNotFoundError(ActorError):
    status = 404
    code = "actor_not_found"

    def __init__(self, address: str) -> None:
        super().__init__(address, f"no actor registered at {address!r}")


class StreamingNotSupportedError(ActorError):
    status = 422
    code = "streaming_not_supported"

    def __init__(self, address: str) -> None:
        super().__init__(address, f"actor {address!r} does not stream (it has no stream())")


class ActorTimeoutError(ActorError):
    status = 504
    code = "actor_timeout"

    def __init__(self, address: str, type: str, timeout: float) -> None:
        super().__init__(
            address, f"actor {address!r} gave no complete {type!r} answer in {timeout}s"
        )
        self.type = type
        self.timeout = timeout


# -- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenStreamEvent:
    """What a streaming consumer sees (one token, or the end).

    ``type`` is ``token`` (``content`` set), ``done`` (``usage``,
    ``finish_reason`` and the stream's ``metrics``) or ``error`` (``error`` and
    ``code``; a stopped stream is an error with code ``cancelled``).
    ``timestamp`` is wall-clock seconds; ``seq`` the event's place in its stream.
    """

    type: Literal["token", "done", "error"]
    timestamp: float
    seq: int = 0
    content: str | None = None
    error: str | None = None
    code: str | None = None
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None


StreamCallback = Callable[[TokenStreamEvent], Awaitable[None] | None]


@dataclass(slots=True)
class StreamResult:
    """What :meth:`Router.stream_ask` returns once the answer has ended."""

    stream_id: str
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    error: str | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Translator:
    """Hub events -> TokenStreamEvents; remembers ``metrics`` for the ``done`` that follows."""

    def __init__(self) -> None:
        self._metrics: Mapping[str, Any] | None = None

    def __call__(self, ev: Event) -> TokenStreamEvent | None:
        f = ev.fields
        if ev.kind == TOKEN:
            return TokenStreamEvent("token", ev.ts, ev.seq, content=f.get("text", ""))
        if ev.kind == METRICS:
            self._metrics = dict(f)
        elif ev.kind == DONE:
            return TokenStreamEvent(
                "done",
                ev.ts,
                ev.seq,
                finish_reason=f.get("finish_reason"),
                usage=f.get("usage"),
                metrics=self._metrics,
            )
        elif ev.kind == ERROR:
            return TokenStreamEvent(
                "error", ev.ts, ev.seq, error=f.get("message"), code=f.get("code")
            )
        elif ev.kind == CANCELLED:
            reason = f.get("reason", "stopped")
            return TokenStreamEvent(
                "error", ev.ts, ev.seq, error=f"cancelled: {reason}", code="cancelled"
            )
        return None  # progress, data, tensors: not part of a token stream


# -- actors ---------------------------------------------------------------------------


class Actor:
    """Answers requests. Subclasses implement :meth:`receive`; to stream, they add a
    ``stream(type, payload)`` async generator or an ``async stream(type, payload, emit)``.
    The base class has no ``stream``: that is how a router knows an actor cannot."""

    async def receive(self, type: str, payload: Any) -> Any:
        raise NotImplementedError(f"{self.__class__.__name__} does not handle {type!r}")


def _stream_producer(stream_fn: Callable[..., Any], type: str, payload: Any) -> Any:
    """A Hub producer for an actor's ``stream`` method, whichever form it takes."""
    if len(inspect.signature(stream_fn).parameters) >= 3:

        async def produce(emit: Emitter) -> None:
            await stream_fn(type, payload, emit)

        return produce
    source = stream_fn(type, payload)
    if not hasattr(source, "__aiter__"):
        raise TypeError("stream(type, payload) must return an async iterator")
    return source


class Router:
    """Addresses actors by name and runs their streamed answers as Hub streams."""

    def __init__(self, hub: Hub | None = None) -> None:
        self.hub = hub if hub is not None else Hub()
        self._actors: dict[str, Actor] = {}

    def register(self, address: str, actor: Actor) -> None:
        if not address:
            raise ValueError("an actor needs an address")
        self._actors[address] = actor

    def unregister(self, address: str) -> None:
        self._actors.pop(address, None)

    def get(self, address: str) -> Actor:
        actor = self._actors.get(address)
        if actor is None:
            raise ActorNotFoundError(address)
        return actor

    def __contains__(self, address: object) -> bool:
        return address in self._actors

    async def ask(
        self, address: str, type: str, payload: Any = None, *, timeout: float | None = None
    ) -> Any:
        """Request/response: the actor's ``receive`` result."""
        actor = self.get(address)
        try:
            return await asyncio.wait_for(actor.receive(type, payload), timeout)
        except TimeoutError:
            raise ActorTimeoutError(address, type, timeout or 0.0) from None

    async def open_stream(self, address: str, type: str, payload: Any = None) -> Stream:
        """Start the actor's streamed answer and return its stream without reading it.

        Any number of consumers can then :meth:`follow` it (or ``hub.subscribe`` it).
        """
        actor = self.get(address)
        stream_fn = getattr(actor, "stream", None)
        if not callable(stream_fn):
            raise StreamingNotSupportedError(address)
        producer = _stream_producer(stream_fn, type, payload)
        return await self.hub.start(
            producer,
            model=getattr(actor, "model", None),
            meta={"actor": address, "type": type},
        )

    async def follow(self, stream_id: str, *, after: int = 0) -> AsyncIterator[TokenStreamEvent]:
        """Read a streamed answer someone else started; leaving stops nothing."""
        translate = _Translator()
        subscription = self.hub.subscribe(stream_id, after, transport="actor")
        try:
            while not subscription.finished:
                for ev in await subscription.read():
                    out = translate(ev)
                    if out is not None:
                        yield out
        finally:
            subscription.close()

    async def stream(
        self,
        address: str,
        type: str,
        payload: Any = None,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[TokenStreamEvent]:
        """The actor's streamed answer as an async iterator, ending with ``done`` or
        ``error``. Stopping the iteration stops the answer; past ``timeout`` seconds
        it is stopped and :class:`ActorTimeoutError` is raised."""
        stream = await self.open_stream(address, type, payload)
        deadline = None if timeout is None else time.monotonic() + timeout
        events = self.follow(stream.id)
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                try:
                    chunk = await asyncio.wait_for(anext(events), remaining)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise ActorTimeoutError(address, type, timeout or 0.0) from None
                yield chunk
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            await self._stop(stream)

    async def stream_ask(
        self,
        address: str,
        type: str,
        payload: Any = None,
        *,
        on_chunk: StreamCallback,
        timeout: float | None = None,
        stream_id: str | None = None,
    ) -> StreamResult:
        """Seed 001's ``streamAsk``: call ``on_chunk`` for every token, then for the
        final ``done`` or ``error``; return the whole answer once it has ended.

        With ``stream_id``, follow that running answer instead of starting one
        (another consumer of the same answer). Errors of the answer reach
        ``on_chunk`` and the result; a timeout raises :class:`ActorTimeoutError`
        (stopping the answer if this call started it).
        """
        owned = stream_id is None
        if stream_id is None:
            stream = await self.open_stream(address, type, payload)
            stream_id = stream.id
        else:
            stream = self.hub.get(stream_id)
        result = StreamResult(stream_id)
        parts: list[str] = []

        async def consume() -> None:
            async for chunk in self.follow(stream.id):
                if chunk.type == "token":
                    parts.append(chunk.content or "")
                    result.tokens += 1
                elif chunk.type == "done":
                    result.finish_reason, result.usage = chunk.finish_reason, chunk.usage
                else:
                    result.error, result.code = chunk.error, chunk.code
                outcome = on_chunk(chunk)
                if inspect.isawaitable(outcome):
                    await outcome

        try:
            await asyncio.wait_for(consume(), timeout)
        except TimeoutError:
            raise ActorTimeoutError(address, type, timeout or 0.0) from None
        finally:
            if owned:
                await self._stop(stream)
        result.text = "".join(parts)
        return result

    async def _stop(self, stream: Stream) -> None:
        if not stream.status.ended:
            await self.hub.cancel(stream.id, "consumer_left")


# -- sessions -------------------------------------------------------------------------


_REQUEST_KEYS = ("max_tokens", "temperature", "top_p", "seed", "stop", "delay_ms")


@dataclass
class _Turn:
    user: Mapping[str, str]
    reply: list[str] = field(default_factory=list)


class SessionActor(Actor):
    """One conversation: a model, an optional system prompt and the history.

    ``stream("inference", payload)`` streams the model's answer to the next
    user message and, when it completes (``done``), appends both to the
    history; an answer that fails or is stopped leaves the history as it was.
    Turns of one session run one at a time. ``payload`` is the message text or
    ``{"message": …, "system"?, "max_tokens"?, "temperature"?, "top_p"?, "seed"?, "stop"?}``.

    ``receive`` handles ``inference`` (the whole answer as a string),
    ``history`` (the messages so far) and ``reset``. The history keeps the
    last ``max_history`` messages.
    """

    STREAM_TYPES = frozenset({"inference", "chat"})

    def __init__(
        self,
        session_id: str,
        models: ModelManager,
        model: str | None = None,
        system: str | None = None,
        *,
        max_history: int = 64,
    ) -> None:
        self.session_id = session_id
        self.models = models
        self.model = models.resolve(model)
        self.system = system
        self.history: deque[Mapping[str, str]] = deque(maxlen=max_history)
        self._turn = asyncio.Lock()

    async def receive(self, type: str, payload: Any) -> Any:
        if type in self.STREAM_TYPES:
            parts: list[str] = []
            async for ev in self.stream(type, payload):
                if ev.kind == TOKEN:
                    parts.append(ev.fields["text"])
                elif ev.kind == ERROR:
                    err = TokenwireError(ev.fields.get("message", ""))
                    err.code = ev.fields.get("code", err.code)
                    raise err
            return "".join(parts)
        if type == "history":
            return [dict(m) for m in self.history]
        if type == "reset":
            self.history.clear()
            return None
        raise InvalidRequestError(f"session actor does not handle {type!r}")

    async def stream(self, type: str, payload: Any) -> AsyncIterator[Event]:
        try:
            if type not in self.STREAM_TYPES:
                raise InvalidRequestError(
                    f"session actor streams {sorted(self.STREAM_TYPES)}, not {type!r}"
                )
            request, user = self._request(payload)
            backend = self.models.get(self.model)
        except TokenwireError as exc:
            yield Event.error(exc.code, exc.message)
            return
        async with self._turn:
            turn = _Turn(user)
            async for ev in model_producer(backend, request):
                if ev.kind == TOKEN:
                    turn.reply.append(ev.fields["text"])
                elif ev.kind == DONE:
                    # Before the terminal event is yielded: the Hub closes us right after it.
                    self.history.append(turn.user)
                    self.history.append({"role": "assistant", "content": "".join(turn.reply)})
                yield ev

    def _request(self, payload: Any) -> tuple[GenerationRequest, Mapping[str, str]]:
        opts: Mapping[str, Any] = payload if isinstance(payload, Mapping) else {}
        text = opts.get("message", opts.get("content")) if opts else payload
        if not isinstance(text, str) or not text:
            raise InvalidRequestError("the payload needs a message: a string or {'message': …}")
        system = opts.get("system", self.system)
        user = {"role": "user", "content": text}
        messages = [
            *([{"role": "system", "content": system}] if system else []),
            *self.history,
            user,
        ]
        body = {k: opts[k] for k in _REQUEST_KEYS if k in opts}
        request = GenerationRequest.from_body(
            {**body, "model": self.model, "messages": messages}, default_model=self.model
        )
        return request, user
