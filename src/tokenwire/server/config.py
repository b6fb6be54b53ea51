"""Server configuration: defaults, overridden by the config file's ``[server]`` table,
overridden by ``TOKENWIRE_*`` environment variables, overridden by command-line flags.

The file's keys are the variables' names without the prefix, in lower case
(``TOKENWIRE_BROKER`` -> ``broker``, ``TOKENWIRE_GRACE_S`` -> ``grace_s``); its path is
``--config FILE`` or ``TOKENWIRE_CONFIG`` (docs/operating.md)."""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tokenwire.broker import Retention
from tokenwire.pipelines import DEFAULT_MAX_STREAM_EVENTS
from tokenwire.stream import HubConfig


# Environment variable -> (section, field, type). Section "" is ServerConfig itself.
def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


_EXPECTED = {int: "an integer", float: "a number", _flag: "1/0, true/false, yes/no or on/off"}

_ENV: dict[str, tuple[str, str, Any]] = {
    "TOKENWIRE_BROKER": ("", "broker", str),
    "TOKENWIRE_PROCESSES": ("", "processes", int),
    "TOKENWIRE_MODEL_WORKERS": ("", "model_workers", int),
    "TOKENWIRE_MAX_QUEUED_JOBS": ("", "max_queued_jobs", int),
    "TOKENWIRE_WORKER_TTL_S": ("", "worker_ttl_s", float),
    "TOKENWIRE_MAX_JOB_WAIT_S": ("", "max_job_wait_s", float),
    "TOKENWIRE_COOP_COEP": ("", "coop_coep", _flag),
    "TOKENWIRE_HOST": ("", "host", str),
    "TOKENWIRE_PORT": ("", "port", int),
    "TOKENWIRE_MODEL": ("", "default_model", str),
    "TOKENWIRE_HEARTBEAT_S": ("", "heartbeat_s", float),
    "TOKENWIRE_COALESCE_MS": ("", "coalesce_ms", int),
    "TOKENWIRE_BROADCAST": ("", "broadcast", _flag),
    "TOKENWIRE_RETRY_MS": ("", "retry_ms", int),
    "TOKENWIRE_API_KEYS": ("", "api_keys", _csv),
    "TOKENWIRE_CORS_ORIGINS": ("", "cors_origins", _csv),
    "TOKENWIRE_TOKEN_SECRET": ("", "token_secret", str),
    "TOKENWIRE_TOKEN_TTL_S": ("", "token_ttl_s", float),
    "TOKENWIRE_RATE_LIMIT": ("", "rate_limit", str),
    "TOKENWIRE_MAX_CONNECTIONS_PER_IP": ("", "max_connections_per_ip", int),
    "TOKENWIRE_MAX_BODY_BYTES": ("", "max_body_bytes", int),
    "TOKENWIRE_HEADER_TIMEOUT_S": ("", "header_timeout_s", float),
    "TOKENWIRE_BODY_TIMEOUT_S": ("", "body_timeout_s", float),
    "TOKENWIRE_KEEPALIVE_S": ("", "keepalive_s", float),
    "TOKENWIRE_MAX_CONNECTIONS": ("", "max_connections", int),
    "TOKENWIRE_BACKLOG": ("", "backlog", int),
    "TOKENWIRE_MAX_HEADER_BYTES": ("", "max_header_bytes", int),
    "TOKENWIRE_HTTP": ("", "http_impl", str),
    "TOKENWIRE_MAX_STREAM_EVENTS": ("", "max_stream_events", int),
    "TOKENWIRE_MAX_WS_MESSAGE_BYTES": ("", "max_ws_message_bytes", int),
    "TOKENWIRE_WS_COMPRESSION": ("", "ws_compression", _flag),
    "TOKENWIRE_MAX_SUBSCRIPTIONS_PER_CONNECTION": ("", "max_subscriptions_per_connection", int),
    "TOKENWIRE_SHUTDOWN_TIMEOUT_S": ("", "shutdown_timeout_s", float),
    "TOKENWIRE_GRACE_S": ("hub", "grace_s", float),
    "TOKENWIRE_IDLE_TIMEOUT_S": ("hub", "idle_timeout_s", float),
    "TOKENWIRE_DEADLINE_S": ("hub", "deadline_s", float),
    "TOKENWIRE_MAX_STREAMS": ("hub", "max_streams", int),
    "TOKENWIRE_MAX_SUBSCRIBERS": ("hub", "max_subscribers", int),
    "TOKENWIRE_MAX_SUBSCRIBERS_PER_STREAM": ("hub", "max_subscribers_per_stream", int),
    "TOKENWIRE_MAX_ENDED_STREAMS": ("hub", "max_ended_streams", int),
    "TOKENWIRE_WINDOW_BYTES": ("hub", "window_bytes", int),
    "TOKENWIRE_RETENTION_EVENTS": ("retention", "max_events", int),
    "TOKENWIRE_RETENTION_BYTES": ("retention", "max_bytes", int),
    "TOKENWIRE_RETENTION_TTL_S": ("retention", "ttl_s", float),
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    default_model: str = "smollm2"
    heartbeat_s: float = 15.0
    """Heartbeat interval on every transport while nothing else is sent."""
    retry_ms: int = 2000
    """The SSE ``retry:`` sent first: how long a browser waits before reconnecting."""
    max_body_bytes: int = 1024 * 1024
    header_timeout_s: float = 10.0
    """A request's headers must be complete within this long of the connection
    opening (or of its previous response), else 408 and closed (server/connections.py)."""
    body_timeout_s: float = 30.0
    """A request body (``POST``) must be read within this long, else 408."""
    keepalive_s: float = 5.0
    """An idle keep-alive connection is closed after this long."""
    max_connections: int = 10_000
    """Open HTTP and WebSocket connections at most (lowered to fit the descriptor
    limit); one more gets 503 and is closed."""
    backlog: int = 16_384
    """The listen queue: connections the kernel holds for the accept loop, sized for a
    reconnection storm; the kernel caps it at ``net.core.somaxconn`` (``serve`` warns)."""
    max_header_bytes: int = 64 * 1024
    """Request line and headers at most, else 431."""
    max_stream_events: int = DEFAULT_MAX_STREAM_EVENTS
    """Events a pipeline's stream may publish; past it, ``error event_budget_exceeded``."""
    http_impl: str = "auto"
    """uvicorn's HTTP parser: ``httptools`` (``auto`` when installed) or ``h11``."""
    max_batch_events: int = 512
    """At most this many events go into one socket write."""
    merge_after: int = 32
    """A batch longer than this is a catch-up: consecutive tokens are merged into one frame."""
    coalesce_ms: int = 0
    """SSE and NDJSON: at most one write of events per this many ms per subscription
    (``?coalesce_ms=`` overrides it); 0 writes each event as it comes."""
    broadcast: bool = True
    """Live HTTP subscribers get each event from one pass over them (core/broadcast.py)."""
    max_ws_message_bytes: int = 1024 * 1024
    ws_compression: bool = True
    """Negotiate permessage-deflate for WebSocket text frames; binary tensor frames
    are never compressed (server/ws_deflate.py, docs/tensors.md)."""
    max_subscriptions_per_connection: int = 64
    """Streams one WebSocket or Socket.IO connection may be subscribed to at once."""
    shutdown_timeout_s: float = 3.0
    """On SIGTERM, how long open connections get for their final frames (core/shutdown.py)."""
    preload_model: bool = False
    """Load the default model at startup (``tokenwire serve`` does)."""
    api_keys: tuple[str, ...] = ()
    """When set, /v1/ and /socket.io/ need one of these as a bearer token (see server/auth.py)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the server from a browser page of another origin
    (and to open WebSockets and Socket.IO; with none, only same-host pages may)."""
    token_secret: str = dataclasses.field(default="", repr=False)
    """Signs stream tokens (server/tokens.py); gateways behind one balancer share it.
    Empty: a random secret for this process (with a warning, when keys are on)."""
    token_ttl_s: float = 3600.0
    """How long a ``read_token`` / ``control_token`` is valid."""
    rate_limit: str = ""
    """Stream starts and connection opens per client (API key, else IP), as a token
    bucket: ``10/s``, ``600/m``, ``100/h``; empty: none (server/ratelimit.py)."""
    max_connections_per_ip: int = 0
    """Connections one client IP may hold open at once; 0: no cap of its own."""
    coop_coep: bool = False
    """Send ``Cross-Origin-Opener-Policy: same-origin`` and
    ``Cross-Origin-Embedder-Policy: require-corp`` with the demo page and /static/, so
    the page is cross-origin isolated and may use ``SharedArrayBuffer``."""
    broker: str = "memory://"
    """Where stream logs live: ``memory://`` (one process) or ``redis://host:port/db``
    (any number of processes and machines; docs/scaling.md)."""
    processes: int = 1
    """Server processes on one port (needs a shared broker, i.e. Redis)."""
    model_workers: int = 1
    """Over Redis: generations this node runs at once, its own requests and jobs it
    claims from the queue (0: a pure gateway that only queues). With the memory broker
    generations run here as always, and 0 is refused (docs/scaling.md)."""
    max_queued_jobs: int = 1024
    """Over Redis: generation jobs that may wait for a worker; one more gets 503
    ``queue_full``."""
    worker_ttl_s: float = 3.0
    """Over Redis: a node that runs jobs and has not renewed its liveness for this long
    is gone; its running streams end with ``error {code: "worker_lost"}``."""
    max_job_wait_s: float = 60.0
    """Over Redis: a queued job no worker took within this long ends with
    ``error {code: "queue_timeout"}``."""
    hub: HubConfig = field(default_factory=HubConfig)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        config_file: str | None = None,
        **overrides: Any,
    ) -> ServerConfig:
        """Defaults, then the ``[server]`` table of ``config_file`` (else of the file
        ``TOKENWIRE_CONFIG`` names), then ``TOKENWIRE_*`` variables, then ``overrides``
        (None values ignored). A bad value or key is a ValueError naming it."""
        env = os.environ if environ is None else environ
        values: dict[str, dict[str, Any]] = {"": {}, "hub": {}, "retention": {}}
        for name, value in file_settings(config_file or env.get(ENV_CONFIG)).items():
            section, key, _ = _ENV[name]
            values[section][key] = value
        for name, (section, key, kind) in _ENV.items():
            if name in env:
                try:
                    values[section][key] = kind(env[name])
                except ValueError as exc:
                    expected = _EXPECTED.get(kind)
                    why = f"expected {expected}" if expected else str(exc)
                    raise ValueError(f"{name}={env[name]!r}: {why}") from None
        for key, value in overrides.items():
            if value is None:
                continue
            if key in {f.name for f in dataclasses.fields(cls)}:
                values[""][key] = value
            elif key in {f.name for f in dataclasses.fields(HubConfig)}:
                values["hub"][key] = value
            else:
                raise TypeError(f"unknown config option {key!r}")
        retention = dataclasses.replace(Retention(), **values["retention"])
        hub = dataclasses.replace(HubConfig(), retention=retention, **values["hub"])
        return cls(hub=hub, **values[""])


# Read by other parts (the model registry, the build and test scripts), not settings
# of the server: known, so never warned about.
ENV_CONFIG = "TOKENWIRE_CONFIG"
FILE_TABLE = "server"

OTHER_VARIABLES: dict[str, str] = {
    ENV_CONFIG: "the TOML config file, as --config ([server] and [models] tables)",
    "TOKENWIRE_MODELS": "extra models, name=URL,… (docs/models.md)",
    "TOKENWIRE_BACKEND_MODULES": "modules that register model URL schemes",
    "TOKENWIRE_LLAMA_BUILD": "scripts/llama_build.sh: portable (default) or native",
    "TOKENWIRE_LLAMA_VERSION": "scripts/llama_build.sh: the llama-cpp-python version",
    "TOKENWIRE_WHEEL_DIR": "scripts/llama_build.sh: where the built wheel is kept",
    "TOKENWIRE_URL": "examples and benchmarks: the server to use",
    "TOKENWIRE_CHROMIUM": "browser tests: the Chromium executable",
    "TOKENWIRE_BENCH_PROBE": "benchmarks: an internal probe switch",
}


def config_path(given: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The config file: ``--config``'s value, else ``TOKENWIRE_CONFIG``, else none."""
    env = os.environ if environ is None else environ
    return given or env.get(ENV_CONFIG) or None


def file_settings(path: str | None) -> dict[str, Any]:
    """The ``[server]`` table of the TOML file at ``path``, as ``{variable: value}``.

    A key is a variable's name without ``TOKENWIRE_``, in lower case; a value is of the
    setting's own type (a string is read as the variable would be, a list for a list
    setting). An unknown key or a value of the wrong type is a ValueError that names
    the file and the key."""
    if not path:
        return {}
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"config file {path}: {exc}") from None
    table = doc.get(FILE_TABLE, {})
    if not isinstance(table, dict):
        raise ValueError(f"config file {path}: [{FILE_TABLE}] must be a table")
    keys = {name.removeprefix("TOKENWIRE_").lower(): name for name in _ENV}
    out: dict[str, Any] = {}
    for key, value in table.items():
        where = f"config file {path}: [{FILE_TABLE}] {key}"
        if key == "model":
            raise ValueError(f"{where}: the default model is `default` in the [models] table")
        name = keys.get(key)
        if name is None:
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.7)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(f"{where}: no such setting{hint}")
        out[name] = _file_value(where, _ENV[name][2], value)
    return out


def _file_value(where: str, kind: Any, value: Any) -> Any:
    expected = _EXPECTED.get(kind, "a list of strings" if kind is _csv else "a string")
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{where} = {value!r}: expected {expected}") from None
    if kind is _flag and isinstance(value, bool):
        return value
    if kind in (int, float) and isinstance(value, int | float) and not isinstance(value, bool):
        if kind is int and not isinstance(value, int):
            raise ValueError(f"{where} = {value!r}: expected {expected}")
        return kind(value)
    if kind is _csv and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{where} = {value!r}: expected {expected}")


def _section(config: ServerConfig, section: str) -> Any:
    return {"": config, "hub": config.hub, "retention": config.hub.retention}[section]


def variables() -> list[tuple[str, str, Any]]:
    """``(variable, setting, default)`` for every ``TOKENWIRE_*`` server setting."""
    defaults = ServerConfig()
    return [
        (name, key, getattr(_section(defaults, section), key))
        for name, (section, key, _) in sorted(_ENV.items())
    ]


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning line for each ``TOKENWIRE_*`` variable nothing reads, with the
    closest known name when there is one (``TOKENWIRE_HEARTBEAT`` -> ``_HEARTBEAT_S``)."""
    env = os.environ if environ is None else environ
    known = sorted({*_ENV, *OTHER_VARIABLES})
    # compared without the shared prefix, which would make every name look close
    suffixes = [k.removeprefix("TOKENWIRE_") for k in known]
    lines = []
    for name in sorted(env):
        if name.startswith("TOKENWIRE_") and name not in known:
            suffix = name.removeprefix("TOKENWIRE_")
            close = difflib.get_close_matches(suffix, suffixes, n=1, cutoff=0.7)
            hint = f"; did you mean TOKENWIRE_{close[0]}?" if close else ""
            lines.append(f"unknown environment variable {name} is ignored{hint}")
    return lines


def explain(
    environ: Mapping[str, str] | None = None, *, config_file: str | None = None, **flags: Any
) -> list[tuple[str, str, Any, str]]:
    """``(variable, setting, value, source)`` for every setting of the configuration
    ``ServerConfig.from_env(environ, config_file=…, **flags)`` builds; source is
    ``default``, ``file``, ``env`` or ``flag``. Raises ValueError for a bad value, like
    ``from_env``."""
    env = os.environ if environ is None else environ
    config = ServerConfig.from_env(env, config_file=config_file, **flags)
    from_file = file_settings(config_file or env.get(ENV_CONFIG))
    rows = []
    for name, (section, key, _) in sorted(_ENV.items()):
        value = getattr(_section(config, section), key)
        if section in ("", "hub") and flags.get(key) is not None:
            source = "flag"
        elif name in env:
            source = "env"
        elif name in from_file:
            source = "file"
        else:
            source = "default"
        if key == "token_secret" and value:
            value = "(set)"
        rows.append((name, key, value, source))
    return rows
