"""The config file's ``[server]`` table: every ``TOKENWIRE_*`` setting, under its name
without the prefix (docs/operating.md "Configuration"). The table of value classes by
setting kinds runs through pure code; one slice runs through a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.test_cli_config import tokenwire
from tokenwire.server.config import _ENV, ServerConfig, explain, file_settings


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "tokenwire.toml"
    path.write_text(body)
    return str(path)


# (TOML value, setting) -> what ServerConfig holds, or the error's words
CASES: list[tuple[str, str, Any]] = [
    # int setting
    ("retry_ms = 1234", "retry_ms", 1234),
    ('retry_ms = "1234"', "retry_ms", 1234),
    ("retry_ms = 1.5", "retry_ms", "expected an integer"),
    ("retry_ms = true", "retry_ms", "expected an integer"),
    ('retry_ms = "soon"', "retry_ms", "expected an integer"),
    ("retry_ms = [1]", "retry_ms", "expected an integer"),
    # float setting
    ("heartbeat_s = 2", "heartbeat_s", 2.0),
    ("heartbeat_s = 2.5", "heartbeat_s", 2.5),
    ('heartbeat_s = "2.5"', "heartbeat_s", 2.5),
    ("heartbeat_s = false", "heartbeat_s", "expected a number"),
    # flag setting
    ("broadcast = false", "broadcast", False),
    ('broadcast = "off"', "broadcast", False),
    ("broadcast = 1", "broadcast", "expected 1/0, true/false"),
    # list setting
    ('api_keys = ["a", "b"]', "api_keys", ("a", "b")),
    ('api_keys = "a, b"', "api_keys", ("a", "b")),
    ("api_keys = [1]", "api_keys", "expected a list of strings"),
    # string setting
    ('broker = "redis://127.0.0.1:1/0"', "broker", "redis://127.0.0.1:1/0"),
    ("broker = 5", "broker", "expected a string"),
    # hub and retention sections
    ("grace_s = 7", "grace_s", 7.0),
    ("retention_events = 50", "max_events", 50),
    # keys that are not settings
    ("heartbeat = 2", "", "no such setting; did you mean heartbeat_s?"),
    ("zzz = 1", "", "no such setting"),
    ('model = "x"', "", "the default model is `default` in the [models] table"),
]


def held(config: ServerConfig, setting: str) -> Any:
    for obj in (config, config.hub, config.hub.retention):
        if hasattr(obj, setting):
            return getattr(obj, setting)
    raise AssertionError(setting)


@pytest.mark.parametrize(("line", "setting", "expected"), CASES)
def test_each_value_class_of_each_kind(
    tmp_path: Path, line: str, setting: str, expected: Any
) -> None:
    path = write(tmp_path, f"[server]\n{line}\n")
    if isinstance(expected, str) and (" " in expected or setting == ""):
        with pytest.raises(ValueError) as caught:
            ServerConfig.from_env({}, config_file=path)
        assert expected in str(caught.value)
        assert path in str(caught.value)  # the message names the file and the key
        assert line.split(" =")[0] in str(caught.value)
    else:
        assert held(ServerConfig.from_env({}, config_file=path), setting) == expected


def test_every_variable_has_a_key() -> None:
    keys = {name.removeprefix("TOKENWIRE_").lower() for name in _ENV}
    assert len(keys) == len(_ENV)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("[server\n", "config file"),  # not TOML
        ("server = 1\n", "[server] must be a table"),
    ],
)
def test_a_broken_file_is_a_value_error(tmp_path: Path, body: str, says: str) -> None:
    with pytest.raises(ValueError, match="config file"):
        file_settings(write(tmp_path, body))
    with pytest.raises(ValueError) as caught:
        file_settings(write(tmp_path, body))
    assert says in str(caught.value)
    with pytest.raises(ValueError, match="config file"):
        file_settings(str(tmp_path / "missing.toml"))


def test_order_default_file_env_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nretry_ms = 1\ngrace_s = 2\nport = 3\n")
    env = {"TOKENWIRE_GRACE_S": "20", "TOKENWIRE_PORT": "30"}
    config = ServerConfig.from_env(env, config_file=path, port=300)
    assert (config.retry_ms, config.hub.grace_s, config.port) == (1, 20.0, 300)
    assert ServerConfig.from_env({}).retry_ms == 2000  # no file: the default
    # the file named by TOKENWIRE_CONFIG counts when --config is not given
    assert ServerConfig.from_env({"TOKENWIRE_CONFIG": path}).retry_ms == 1
    sources = {row[0]: row[3] for row in explain(env, config_file=path, port=300)}
    assert sources["TOKENWIRE_RETRY_MS"] == "file"
    assert sources["TOKENWIRE_GRACE_S"] == "env"
    assert sources["TOKENWIRE_PORT"] == "flag"
    assert sources["TOKENWIRE_HEARTBEAT_S"] == "default"


def test_commands_read_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nmodel_workers = 0\nretry_ms = 4321\n")
    shown = tokenwire("config", "--config", path)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines()}
    assert rows["TOKENWIRE_RETRY_MS"] == ["4321", "file"]
    # serve and worker take their settings from it too: both refuse a pure gateway /
    # a worker on the memory broker, which only the file asked for
    serve = tokenwire("serve", "--port", "1", "--config", path)
    assert serve.returncode == 2 and "model-workers" in serve.stderr, serve.stderr
    bad = write(tmp_path, "[server]\nheartbeat = 2\n")
    for command in ("serve", "worker", "config"):
        done = tokenwire(command, "--config", bad)
        assert done.returncode == 2, (command, done.stderr)
        assert "did you mean heartbeat_s?" in done.stderr and "Traceback" not in done.stderr


async def test_a_server_runs_with_the_file(start_server: ServerFactory, tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nretry_ms = 4321\nmax_body_bytes = 100\n")
    server = start_server("--config", path)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        too_big = await client.post("/v1/streams", json={"model": "scripted", "prompt": "x" * 200})
        assert too_big.status_code == 413
        r = await client.post(
            "/v1/streams", json={"model": "scripted", "prompt": "hi", "max_tokens": 2}
        )
        assert r.status_code in (200, 201, 202), r.text
        sid = r.json()["id"]
        async with client.stream("GET", f"/v1/streams/{sid}/events") as events:
            body = b""
            async for chunk in events.aiter_bytes():
                body += chunk
                if b"tw-open" in body:
                    break
    assert body.startswith(b"retry: 4321\n")
