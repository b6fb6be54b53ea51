"""Strict, discoverable configuration (issue 13, deliverable 6): a typo in a flag,
a variable or a value gets one line and exit status 2, unknown ``TOKENWIRE_*``
variables are warned about, ``serve --help`` lists every variable, ``tokenwire
config`` says where each value came from."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ServerFactory
from tokenwire import __version__
from tokenwire.server.config import _ENV, unknown_variables, variables
from tokenwire.server.logformat import LOG_LEVELS


def tokenwire(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOKENWIRE_")}
    return subprocess.run(
        [sys.executable, "-m", "tokenwire", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        ((), {"TOKENWIRE_PORT": "abc"}, "TOKENWIRE_PORT='abc': expected an integer"),
        ((), {"TOKENWIRE_GRACE_S": "soon"}, "TOKENWIRE_GRACE_S='soon': expected a number"),
        ((), {"TOKENWIRE_COOP_COEP": "maybe"}, "TOKENWIRE_COOP_COEP='maybe'"),
        (("--model", "nope"), {}, "no model 'nope'"),
        (("--log-level", "loud"), {}, "invalid choice: 'loud'"),
        (("--port", "abc"), {}, "invalid int value: 'abc'"),
        (("--models", "broken"), {}, "bad model spec 'broken'"),
        (("--log-format", "xml"), {}, "invalid choice: 'xml'"),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(
    args: tuple[str, ...], env: dict[str, str], says: str
) -> None:
    done = tokenwire("serve", "--port", "1", *args, **env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0] and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_unknown_variables_get_a_did_you_mean() -> None:
    lines = unknown_variables(
        {"TOKENWIRE_HEARTBEAT": "5", "TOKENWIRE_PORT": "1", "TOKENWIRE_ZZZ": "1", "HOME": "/"}
    )
    assert lines == [
        "unknown environment variable TOKENWIRE_HEARTBEAT is ignored; "
        "did you mean TOKENWIRE_HEARTBEAT_S?",
        "unknown environment variable TOKENWIRE_ZZZ is ignored",
    ]
    assert unknown_variables({"TOKENWIRE_MODELS": "a=scripted:"}) == []


def test_the_server_warns_about_an_unknown_variable_at_start(start_server: ServerFactory) -> None:
    server = start_server(TOKENWIRE_HEARTBEAT="5")
    log = server.log()
    warned = [line for line in log.splitlines() if "TOKENWIRE_HEARTBEAT " in line]
    assert len(warned) == 1 and "did you mean TOKENWIRE_HEARTBEAT_S?" in warned[0]
    assert "WARNING" in warned[0]


def test_serve_help_lists_every_variable_with_its_default_and_the_log_levels() -> None:
    done = tokenwire("serve", "--help")
    assert done.returncode == 0
    for name, _, default in variables():
        line = next(
            line for line in done.stdout.splitlines() if line.strip().startswith(name + " ")
        )
        if default not in ("", ()):
            assert str(default) in line
    assert len(variables()) == len(_ENV)
    assert ", ".join(LOG_LEVELS) in done.stdout
    assert "--log-format {text,json}" in done.stdout


def test_config_says_where_each_value_came_from(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    toml = tmp_path / "tokenwire.toml"
    toml.write_text('[models]\ndefault = "filed"\nfiled = "scripted:"\n')
    done = tokenwire(
        "config",
        "--port",
        "9001",
        "--config",
        str(toml),
        TOKENWIRE_GRACE_S="3",
        TOKENWIRE_HEARTBEATS="1",
    )
    assert done.returncode == 0, done.stderr
    rows = {
        line.split()[0]: line.split()
        for line in done.stdout.splitlines()
        if line.startswith("TOKENWIRE_")
    }
    assert rows["TOKENWIRE_PORT"][1:] == ["9001", "flag"]
    assert rows["TOKENWIRE_GRACE_S"][1:] == ["3.0", "env"]
    assert rows["TOKENWIRE_RETRY_MS"][1:] == ["2000", "default"]
    assert set(rows) == set(_ENV)
    models = done.stdout.split("models:")[1]
    assert "(default model)" in models and "filed" in models.splitlines()[1]
    assert models.splitlines()[1].split()[-1] == "file"
    assert "TOKENWIRE_HEARTBEATS is ignored; did you mean TOKENWIRE_HEARTBEAT_S?" in done.stderr


def test_the_file_default_model_is_the_one_serve_uses(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    toml = tmp_path / "tokenwire.toml"
    toml.write_text('[models]\ndefault = "nope"\n')
    done = tokenwire("serve", "--port", "1", "--config", str(toml))
    assert done.returncode == 2 and "no model 'nope'" in done.stderr


def test_version() -> None:
    done = tokenwire("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"tokenwire {__version__}"
