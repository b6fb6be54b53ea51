"""Run producers inside an explicit MLX stream or device (like MLX's ``mx.stream``).

MLX evaluates every operation on a stream; new operations go to the *default*
stream, which ``mlx.core.stream(s)`` replaces for the duration of a ``with``
block. That default is process-wide state: every thread and every asyncio task
sees it. So:

- :func:`with_stream` as a ``with`` block suits sync code. Inside an async
  generator or coroutine the block stays in force while the code is suspended
  at an ``await``/``yield``, and other tasks' MLX work would land on it too.
- :func:`run_in_stream` (and :func:`with_stream` used as a decorator on an
  ``async def``) drive the coroutine or async iterator step by step, entering
  the stream for each step and restoring the previous default at every
  suspension: the producer's code, and only it, runs in the stream.

A stream or device is given as an ``mlx.core.Stream``, ``Device`` or
``DeviceType``, or as ``"cpu"`` / ``"gpu"``. ``None`` means "leave MLX alone" and
never imports it. mlx is imported lazily; when it is missing these helpers
raise :class:`MLXUnavailableError` (an ``ImportError``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
)
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from tokenwire.tensors import TensorOptions, tensors_to_frame_stream
from tokenwire.tensors.arrays import MLXUnavailableError as MLXUnavailableError
from tokenwire.tensors.arrays import import_mlx as import_mlx

T = TypeVar("T")
P = ParamSpec("P")

StreamLike = Any  # mlx.core.Stream | Device | DeviceType | "cpu" | "gpu"


def _resolve(mx: Any, stream: StreamLike) -> Any:
    if isinstance(stream, str):
        devices = {"cpu": mx.cpu, "gpu": mx.gpu}
        if stream not in devices:
            raise ValueError(f"unknown MLX device {stream!r}: expected 'cpu' or 'gpu'")
        return devices[stream]
    return stream


def default_device() -> Any:
    """MLX's default device."""
    return import_mlx().default_device()


def default_stream(device: StreamLike | None = None) -> Any:
    """The default stream of ``device`` (MLX's default device when ``None``)."""
    mx = import_mlx()
    return mx.default_stream(mx.default_device() if device is None else _resolve(mx, device))


def new_stream(device: StreamLike | None = None) -> Any:
    """A new stream on ``device`` (MLX's default device when ``None``).

    MLX streams belong to the thread that made them: use one on that thread only.
    """
    mx = import_mlx()
    return mx.new_stream(mx.default_device() if device is None else _resolve(mx, device))


class StreamScope:
    """What :func:`with_stream` returns: a context manager and a decorator."""

    __slots__ = ("_entered", "stream")

    def __init__(self, stream: StreamLike | None) -> None:
        self.stream = stream
        self._entered: list[AbstractContextManager[Any]] = []

    def context(self) -> AbstractContextManager[Any]:
        """A fresh context manager that makes the stream MLX's default."""
        if self.stream is None:
            return contextlib.nullcontext()
        mx = import_mlx()
        return cast(AbstractContextManager[Any], mx.stream(_resolve(mx, self.stream)))

    def __enter__(self) -> StreamLike | None:
        context = self.context()
        context.__enter__()
        self._entered.append(context)
        return self.stream

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._entered.pop().__exit__(exc_type, exc, tb)

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Decorate a function, coroutine function or async generator function so its
        body runs in the stream (step by step for the async kinds)."""
        if inspect.isasyncgenfunction(fn) or inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            def stepped(*args: P.args, **kwargs: P.kwargs) -> T:
                return cast(T, _wrap(self.context, fn(*args, **kwargs)))

            return stepped

        @functools.wraps(fn)
        def scoped(*args: P.args, **kwargs: P.kwargs) -> T:
            with self:
                return fn(*args, **kwargs)

        return scoped


def with_stream(stream: StreamLike | None) -> StreamScope:
    """Make ``stream`` (a stream, a device, ``"cpu"``/``"gpu"``) MLX's default.

    ``with with_stream(s): ...`` for sync code; ``@with_stream(s)`` on a function,
    ``async def`` or async generator function (see the module docstring for why
    async code wants the decorator or :func:`run_in_stream`).
    """
    return StreamScope(stream)


@overload
def run_in_stream(
    stream: StreamLike | None, target: AsyncIterable[T]
) -> AsyncGenerator[T, None]: ...
@overload
def run_in_stream(stream: StreamLike | None, target: Awaitable[T]) -> Coroutine[Any, Any, T]: ...
@overload
def run_in_stream(stream: StreamLike | None, target: Callable[[], T]) -> T: ...
def run_in_stream(stream: StreamLike | None, target: Any) -> Any:
    """Run ``target`` with ``stream`` as MLX's default stream.

    - an async iterable: returns an async iterator whose every step runs in the
      stream (closing it closes ``target``);
    - an awaitable (a coroutine): returns a coroutine that runs it in the stream;
    - a callable: calls it in the stream and returns its result (wrapped as above
      when it returns a coroutine or an async iterable).

    ``stream=None`` runs ``target`` unchanged and never imports MLX.
    """
    return _wrap(StreamScope(stream).context, target)


def _wrap(enter: Callable[[], AbstractContextManager[Any]], target: Any) -> Any:
    if isinstance(target, AsyncIterable):
        return _iterate_in(enter, target)
    if inspect.isawaitable(target):
        return _await_in(enter, target)
    if callable(target):
        with enter():
            result = target()
        if isinstance(result, AsyncIterable) or inspect.isawaitable(result):
            return _wrap(enter, result)
        return result
    raise TypeError(f"cannot run {type(target).__name__} in a stream")


class _Stepped(Generic[T]):
    """An awaitable that drives another one, inside ``enter()`` for each step.

    Each ``send``/``throw`` into the inner awaitable is one step: the code between
    two suspensions. Between steps (while the event loop runs other tasks) the
    previous default stream is back in force.
    """

    __slots__ = ("_awaitable", "_enter")

    def __init__(
        self, enter: Callable[[], AbstractContextManager[Any]], awaitable: Awaitable[T]
    ) -> None:
        self._enter = enter
        self._awaitable = awaitable

    def __await__(self) -> Generator[Any, Any, T]:
        inner = self._awaitable.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            with self._enter():
                try:
                    signal = inner.send(value) if error is None else inner.throw(error)
                except StopIteration as stop:
                    return cast(T, stop.value)
            try:
                value, error = (yield signal), None
            except GeneratorExit:
                with self._enter():
                    inner.close()
                raise
            except BaseException as exc:
                value, error = None, exc


async def _await_in(enter: Callable[[], AbstractContextManager[Any]], awaitable: Awaitable[T]) -> T:
    return await _Stepped(enter, awaitable)


async def _iterate_in(
    enter: Callable[[], AbstractContextManager[Any]], source: AsyncIterable[T]
) -> AsyncGenerator[T, None]:
    iterator = aiter(source)
    try:
        while True:
            try:
                item = await _Stepped(enter, anext(iterator))
            except StopAsyncIteration:
                return
            yield item
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await _Stepped(enter, aclose())


@dataclass(frozen=True, slots=True)
class ProducerOptions:
    """Where and how a producer runs: the MLX stream or device, and how its
    tensors are framed, for a transport's options to embed.

    ``stream`` is the MLX stream or device the producer runs in (``None``: leave
    MLX alone); ``tensor`` says how its tensors are framed.
    """

    stream: StreamLike | None = None
    tensor: TensorOptions = field(default_factory=TensorOptions)

    def wrap(self, source: AsyncIterable[Any] | Iterable[Any]) -> AsyncGenerator[Any, None]:
        """``source`` with its tensors framed, every step run in ``stream``."""
        frames = tensors_to_frame_stream(
            source,
            chunk_bytes=self.tensor.chunk_bytes,
            id_factory=self.tensor.id_factory,
            meta=self.tensor.meta,
        )
        return run_in_stream(self.stream, frames)
