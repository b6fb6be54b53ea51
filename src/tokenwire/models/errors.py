"""Errors raised by model backends. ``model_producer`` turns each into an ``error``
event carrying its ``code``.

::

    TokenwireError                       (tokenwire.errors)
    └── ModelError                       model_error: the backend failed
        ├── ModelBusyError               model_busy: the request queue is full
        ├── ModelUnavailableError        model_unavailable: its workers crash in a loop
        ├── ModelCrashedError            model_crashed: the worker process died mid-answer
        ├── ModelStartFailedError        model_start_failed: a worker could not start
        ├── ContextLengthExceededError   context_length_exceeded
        └── UpstreamError                upstream_error: a remote model server failed
            ├── UpstreamHTTPError        upstream_http_<status>: it answered non-2xx
            ├── UpstreamUnreachableError upstream_unreachable: connect / read failed
            └── UpstreamProtocolError    upstream_protocol_error: a body we cannot use,
                                         or an error the upstream sent mid-stream
"""

from __future__ import annotations

from tokenwire.errors import TokenwireError


class ModelError(TokenwireError):
    status = 502
    code = "model_error"


class ModelBusyError(ModelError):
    status = 503
    code = "model_busy"

    def __init__(self, model: str, waiting: int) -> None:
        super().__init__(f"model {model!r} is busy: {waiting} requests already wait for it")
        self.model = model
        self.waiting = waiting


class ModelUnavailableError(ModelError):
    status = 503
    code = "model_unavailable"

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"model {model!r} is unavailable: {reason}")
        self.model = model
        self.reason = reason


class ModelCrashedError(ModelError):
    code = "model_crashed"

    def __init__(self, model: str, pid: int | None, how: str) -> None:
        super().__init__(f"the worker process of model {model!r} (pid {pid}) {how}")
        self.model = model
        self.pid = pid
        self.how = how


class ModelStartFailedError(ModelError):
    """A worker did not become ready: ``how`` it ended, the ``error`` it reported,
    the last lines it wrote to stderr."""

    code = "model_start_failed"

    def __init__(
        self,
        model: str,
        pid: int | None,
        how: str,
        *,
        error: str = "",
        stderr_tail: tuple[str, ...] = (),
    ) -> None:
        detail = f": {error}" if error else ""
        super().__init__(f"the worker process of model {model!r} (pid {pid}) {how}{detail}")
        self.model = model
        self.pid = pid
        self.how = how
        self.error = error
        self.stderr_tail = stderr_tail


class ContextLengthExceededError(ModelError):
    status = 422
    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        super().__init__(f"the prompt has {prompt_tokens} tokens; the context window holds {n_ctx}")
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class UpstreamError(ModelError):
    code = "upstream_error"

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"{url}: {message}")
        self.url = url


class UpstreamHTTPError(UpstreamError):
    def __init__(self, url: str, status_code: int, detail: str = "") -> None:
        detail = " ".join(detail.split())[:500]
        super().__init__(url, f"HTTP {status_code}" + (f": {detail}" if detail else ""))
        self.status_code = status_code
        self.code = f"upstream_http_{status_code}"


class UpstreamUnreachableError(UpstreamError):
    code = "upstream_unreachable"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


# The names before 0.1.0 that tokenwire.models exported, deprecated.
ModelBusy = ModelBusyError
ContextLengthExceeded = ContextLengthExceededError
UpstreamUnreachable = UpstreamUnreachableError
