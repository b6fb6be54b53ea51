"""Writing a streamed HTTP body without the ASGI ``send``, for the broadcast path.

Under uvicorn's httptools protocol (``tokenwire serve``'s default), ``send`` is a
bound method of the response's ``RequestResponseCycle``: after the response has
started, a body message is its chunk framing (RFC 9112 §7.1) and one
``transport.write``, and ``send`` waits only while the protocol has paused writing
(its transport's buffer past the high-water mark). :class:`UvicornBody` does that
write for a broadcast (core/broadcast.py), and says it cannot take one whenever
``send`` would wait or refuse, so the driver's ``send`` takes over.

Under any other server, or when a middleware wraps ``send`` to see or change the
body (gzip, say), there is no direct write and the driver writes as always; the
wrappers known to pass body messages on unchanged are looked through
(:func:`body_send`).
"""

from __future__ import annotations

from typing import Any

from starlette.types import Send

from tokenwire.core.broadcast import Frames

_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")


class UvicornBody:
    __slots__ = ("_cycle", "_flow", "_transport")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._flow = cycle.flow
        self._transport = cycle.transport

    def writable(self) -> bool:
        cycle = self._cycle
        return not (
            cycle.disconnected
            or cycle.response_complete
            or self._flow.write_paused
            or self._transport.is_closing()
        )

    def try_write(self, frames: Frames) -> bool:
        # The broadcast's hot path: what can change while the driver is parked. The
        # response cannot complete then (its driver sends the end), and a connection
        # lost is a closing transport.
        transport = self._transport
        if self._flow.write_paused or transport.is_closing():
            return False
        transport.write(frames.chunked)
        return True


# Wrappers of ``send`` that only watch for ``http.response.start`` (or a WebSocket's
# accept) and pass every body or WebSocket message on unchanged: Starlette's error
# middlewares, tokenwire's access log.
_TRANSPARENT = frozenset(
    {
        ("starlette.middleware.errors", "ServerErrorMiddleware.__call__.<locals>._send"),
        (
            "starlette._exception_handler",
            "wrap_app_handling_exceptions.<locals>.wrapped_app.<locals>.sender",
        ),
        ("tokenwire.server.access_log", "AccessLog.__call__.<locals>.observe"),
    }
)


def body_send(send: Send) -> Send:
    """The ``send`` under the wrappers that pass body messages on unchanged: once the
    response has started, a body message sent to it is sent as through ``send``,
    minus a coroutine a layer per write."""
    for _ in range(16):
        code = getattr(send, "__code__", None)
        if code is None or (send.__module__, send.__qualname__) not in _TRANSPARENT:
            break
        closure = getattr(send, "__closure__", None) or ()
        try:
            inner = closure[code.co_freevars.index("send")].cell_contents
        except (ValueError, IndexError):
            break
        send = inner
    return send


def direct_body(send: Send) -> UvicornBody | None:
    """A direct writer of the response ``send`` belongs to, once its headers are
    sent; None where there is none (see the module docstring)."""
    cycle: Any = getattr(body_send(send), "__self__", None)
    kind = type(cycle)
    if (kind.__module__, kind.__name__) != _CYCLE:
        return None
    if not cycle.response_started or cycle.scope.get("method") == "HEAD":
        return None
    if cycle.chunked_encoding is not True:
        return None  # a declared length: uvicorn counts the body down itself
    return UvicornBody(cycle)
