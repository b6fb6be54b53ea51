"""One model worker process as the gateway sees it: spawn it, talk to it, notice its death.

A :class:`WorkerProcess` is a slot that holds at most one live process at a
time; the pool starts it again after a crash. It serves one generation at a
time. Everything it reads arrives on the process's stdout (framed
:mod:`~tokenwire.workers.messages`); when that pipe reaches EOF the process is
gone, whatever killed it, and the generation in flight ends at once with
:class:`~tokenwire.models.errors.ModelCrashedError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import json
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenwire.models.base import Finish, GenerationRequest, Usage
from tokenwire.models.errors import ModelCrashedError, ModelStartFailedError
from tokenwire.workers import messages as wm

log = logging.getLogger("tokenwire.workers")

# Pieces read from the pipe that the consumer has not taken yet. Past this the
# reader stops reading, the pipe fills and the worker waits: no buffer grows.
CALL_BOUND = 256
STDERR_TAIL_LINES = 20
STDERR_LINE_BYTES = 2000


class WorkerState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    BUSY = "busy"
    RESTARTING = "restarting"


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker runs: the model ``name`` and the backend ``url`` (+ ``settings``)."""

    name: str
    url: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    start_timeout_s: float = 120.0
    cancel_timeout_s: float = 10.0

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tokenwire.workers",
            "--name",
            self.name,
            "--url",
            self.url,
            "--settings",
            json.dumps(dict(self.settings)),
        ]


class Listener(Protocol):
    def worker_idle(self, worker: WorkerProcess) -> None: ...

    def worker_exited(self, worker: WorkerProcess, how: str) -> None: ...


def describe_exit(returncode: int | None) -> str:
    """``killed by signal SIGSEGV (Segmentation fault)``, ``exited with status 1``."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"was killed by signal {-returncode}"
        return f"was killed by signal {sig.name} ({signal.strsignal(sig) or sig.name})"
    return f"exited with status {returncode}"


class _Call:
    """The generation in flight: pieces read from the pipe, waiting for the consumer."""

    __slots__ = ("_space", "_waiter", "after_cancel", "cancelled_at", "id", "items")

    def __init__(self, id: str) -> None:
        self.id = id
        self.items: deque[str | Finish | BaseException] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self.cancelled_at: float | None = None
        self.after_cancel = 0  # pieces that crossed the pipe after the cancel was sent

    def push(self, item: str | Finish | BaseException) -> None:
        if self.cancelled_at is not None:
            return
        self.items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def full(self) -> bool:
        return self.cancelled_at is None and len(self.items) >= CALL_BOUND

    async def wait_for_space(self) -> None:
        while self.full:
            self._space = asyncio.get_running_loop().create_future()
            try:
                await self._space
            finally:
                self._space = None

    def _release_space(self) -> None:
        space = self._space
        if space is not None and not space.done():
            space.set_result(None)

    async def next(self) -> str | Finish | BaseException:
        while not self.items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self.items.popleft()
        self._release_space()
        return item

    def abandon(self) -> None:
        self.cancelled_at = time.monotonic()
        self.items.clear()
        self._release_space()


class WorkerProcess:
    """A slot for one worker process of one model (see the module docstring)."""

    _ids = itertools.count(1)

    def __init__(self, spec: WorkerSpec, index: int, listener: Listener) -> None:
        self.spec = spec
        self.index = index
        self.listener = listener
        self.state = WorkerState.STOPPED
        self.pid: int | None = None
        self.restarts = 0
        self.last_exit: str | None = None
        self.last_cancel: dict[str, float] | None = None
        self.ready_info: wm.Ready | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._call: _Call | None = None
        self._ready: asyncio.Future[None] | None = None
        self._start_error = ""
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._fatal = ""  # "Fatal Python error: …", however long the traceback after it
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._cancel_timer: asyncio.TimerHandle | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None and not self._stopping

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "state": str(self.state),
            "pid": self.pid,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }
        if self.last_cancel is not None:
            out["last_cancel"] = self.last_cancel
        return out

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the process and wait until it is ready (its self-check generated a token).

        Raises :class:`ModelStartFailedError` once the process is gone; the listener
        hears of that exit like of any other."""
        if self.alive:
            raise RuntimeError("the worker is already running")
        loop = asyncio.get_running_loop()
        self._stopping = False
        self._start_error = ""
        self._stderr_tail.clear()
        self._fatal = ""
        self.state = WorkerState.STARTING
        self._ready = ready = loop.create_future()
        try:
            self._proc = proc = await asyncio.create_subprocess_exec(
                *self.spec.command(),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                # Ctrl-C in a terminal is for the server; a worker ends when its stdin does.
                start_new_session=True,
            )
        except OSError as exc:  # no process at all (out of memory, of file descriptors)
            self.state = WorkerState.STOPPED
            self.last_exit = f"could not be started ({exc})"
            self._ready = None
            if not self._stopping:
                self.listener.worker_exited(self, self.last_exit)
            raise ModelStartFailedError(self.spec.name, None, self.last_exit) from exc
        self.pid = proc.pid
        stderr = self._own(self._read_stderr(proc))
        self._own(self._read_stdout(proc, stderr))
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.spec.start_timeout_s)
        except TimeoutError:
            self._start_error = f"no ready message within {self.spec.start_timeout_s:g} s"
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await ready  # the reader sets the failure once the process is gone

    async def stop(self) -> None:
        """End the process: close its stdin (it exits on EOF), kill it if it lingers."""
        self._stopping = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 3.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.state = WorkerState.STOPPED

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    # -- one generation -------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[str | Finish, None]:
        """Run ``request`` on this worker; closing the iterator sends ``cancel``."""
        if self._call is not None:
            raise RuntimeError("a worker serves one generation at a time")
        if not self.alive:
            raise ModelCrashedError(self.spec.name, self.pid, self.last_exit or "is not running")
        call = self._call = _Call(f"g{next(self._ids)}")
        self.state = WorkerState.BUSY
        self._send(wm.Request.from_generation(call.id, request))
        try:
            while True:
                item = await call.next()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finish):
                    return
        finally:
            if self._call is call:  # no terminal message yet: the consumer left
                call.abandon()
                self._send(wm.Cancel(call.id))
                self._cancel_timer = asyncio.get_running_loop().call_later(
                    self.spec.cancel_timeout_s, self._cancel_overdue, call
                )

    def _cancel_overdue(self, call: _Call) -> None:
        if self._call is call:
            log.error("worker %s pid %s ignored a cancel; killing it", self.spec.name, self.pid)
            self.kill()

    def _send(self, msg: wm.Message) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(wm.frame(msg))

    def _finish_call(self, call: _Call) -> None:
        self._call = None
        if self._cancel_timer is not None:
            self._cancel_timer.cancel()
            self._cancel_timer = None
        if call.cancelled_at is not None:
            self.last_cancel = {
                "tokens_after": call.after_cancel,
                "ms": round((time.monotonic() - call.cancelled_at) * 1000, 3),
            }
        self.state = WorkerState.READY
        self.listener.worker_idle(self)

    # -- reading --------------------------------------------------------------

    def _own(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read_stdout(
        self, proc: asyncio.subprocess.Process, stderr: asyncio.Task[Any]
    ) -> None:
        assert proc.stdout is not None
        decoder = wm.Decoder()
        try:
            while data := await proc.stdout.read(65536):
                for msg in decoder.feed(data):
                    self._dispatch(msg)
                call = self._call
                if call is not None:
                    await call.wait_for_space()
        except wm.WorkerProtocolError as exc:
            log.error("worker %s pid %s: %s; killing it", self.spec.name, proc.pid, exc)
            self._start_error = exc.message
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        try:
            returncode = await asyncio.wait_for(proc.wait(), 2.0)
        except TimeoutError:  # stdout closed by hand but the process lives on: end it
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            returncode = await proc.wait()
        self._exited(describe_exit(returncode), stderr)

    def _dispatch(self, msg: wm.Message) -> None:
        call = self._call
        if isinstance(msg, wm.Text):
            if call is not None and msg.id == call.id:
                if call.cancelled_at is not None:
                    call.after_cancel += len(msg.texts)
                for text in msg.pieces():
                    call.push(text)
        elif isinstance(msg, wm.Finish):
            if call is not None and msg.id == call.id:
                call.push(
                    Finish(msg.finish_reason, Usage(msg.prompt_tokens, msg.completion_tokens))
                )
                self._finish_call(call)
        elif isinstance(msg, wm.Error):
            if msg.id is None:
                self._start_error = f"{msg.code}: {msg.message}"
            elif call is not None and msg.id == call.id:
                err = _error_from(msg)
                call.push(err)
                self._finish_call(call)
        elif isinstance(msg, wm.Ready):
            self.ready_info = msg
            self.state = WorkerState.READY
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif isinstance(msg, wm.Hello):
            pass
        else:
            log.warning("worker %s sent an unexpected %s message", self.spec.name, msg.type)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        """Pass the worker's stderr through to ours, line by line, and keep its last lines."""
        assert proc.stderr is not None
        prefix = f"[worker {self.spec.name}/{self.index} pid {proc.pid}] "
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:  # a line over the reader's limit: take what is there
                line = await proc.stderr.read(STDERR_LINE_BYTES)
            if not line:
                return
            text = line[:STDERR_LINE_BYTES].decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(text)
            if text.startswith("Fatal Python error") and not self._fatal:
                self._fatal = text
            print(prefix + text, file=sys.stderr, flush=True)

    def _exited(self, how: str, stderr: asyncio.Task[Any]) -> None:
        self.last_exit = how
        self.state = WorkerState.STOPPED
        call = self._call
        if call is not None:
            call.push(ModelCrashedError(self.spec.name, self.pid, how))
            self._call = None
            if self._cancel_timer is not None:
                self._cancel_timer.cancel()
                self._cancel_timer = None
        ready = self._ready
        if ready is not None and not ready.done():
            # The last words on stderr ("Fatal Python error: …") say most; give them a moment.
            self._own(self._fail_start(ready, how, stderr))
        if not self._stopping:
            detail = f" ({self._start_error})" if self._start_error else ""
            self.listener.worker_exited(self, how + detail)

    async def _fail_start(
        self, ready: asyncio.Future[None], how: str, stderr: asyncio.Task[Any]
    ) -> None:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(stderr), 1.0)
        tail = tuple(self._stderr_tail)
        if self._fatal and self._fatal not in tail:
            tail = (self._fatal, *tail)
        if not ready.done():
            ready.set_exception(
                ModelStartFailedError(
                    self.spec.name,
                    self.pid,
                    how,
                    error=self._start_error,
                    stderr_tail=tail,
                )
            )


def _error_from(msg: wm.Error) -> Exception:
    from tokenwire.models.errors import ModelError

    err = ModelError(msg.message)
    err.code = msg.code  # the worker's own code (model_busy, context_length_exceeded, …)
    if msg.code in ("model_busy", "model_unavailable"):
        err.status = 503
    elif msg.code == "context_length_exceeded":
        err.status = 422
    return err
