"""ModelManager configuration: built-ins, TOML file, environment, flags; URL schemes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenwire.errors import InvalidRequestError, UnknownModelError
from tokenwire.models import ModelManager, ModelURL, ScriptedBackend, default_manager
from tokenwire.models.errors import ModelStartFailedError
from tokenwire.models.llamacpp import (
    LlamaCppBackend,
    build_advice,
    build_stamp,
    default_model_path,
)
from tokenwire.models.ollama import OllamaBackend
from tokenwire.models.openai import OpenAIBackend
from tokenwire.models.registry import local_backend_from_url
from tokenwire.workers import WorkerBackend


def test_builtins_smollm2_is_the_default() -> None:
    models = default_manager(env={})
    assert models.default == "smollm2"
    assert models.names() == ["smollm2", "scripted", "smollm2-mlx"]
    assert "SmolLM2-135M-Instruct" in models
    backend = models.get()
    # The embedded model runs in worker processes (built there from the same URL).
    assert isinstance(backend, WorkerBackend) and backend.url == "llamacpp:"
    assert models.get("SmolLM2-135M-Instruct") is backend
    local = local_backend_from_url("smollm2", "llamacpp:")
    assert isinstance(local, LlamaCppBackend)
    assert local.settings.model_path == default_model_path()
    assert default_model_path().endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert isinstance(models.get("scripted"), ScriptedBackend)
    described = {m["id"]: m for m in models.describe()}
    assert described["smollm2"]["default"] is True
    assert described["smollm2"]["aliases"] == ["SmolLM2-135M-Instruct"]
    assert described["scripted"]["url"] == "scripted:"


def test_url_parsing() -> None:
    url = ModelURL.parse("openai+https://api.example.com:8443/v1?timeout=5#gpt-4o-mini")
    assert (url.kind, url.target, url.model) == (
        "openai",
        "https://api.example.com:8443/v1",
        "gpt-4o-mini",
    )
    assert url.params == {"timeout": "5"}
    local = ModelURL.parse("llamacpp:///models/x.gguf?n_ctx=4096&instances=2")
    assert (local.kind, local.target) == ("llamacpp", "/models/x.gguf")
    assert local.int_param("n_ctx", 0) == 4096
    assert ModelURL.parse("llamacpp:").target == ""


def test_env_file_and_flags_in_order(tmp_path: Path) -> None:
    config = tmp_path / "tokenwire.toml"
    config.write_text(
        """
[models]
default = "remote"
remote = "openai+http://127.0.0.1:9/v1#smollm2"
llama = "ollama+http://127.0.0.1:11434#llama3.2"

[models.big]
url = "llamacpp:?instances=2"
n_ctx = 1024
"""
    )
    env = {
        "TOKENWIRE_MODELS": "llama=openai+http://10.0.0.1:8000/v1#llama,extra=scripted:",
    }
    models = ModelManager.from_config(config=config, env=env, models="extra=ollama+http://h:1#m")
    assert models.default == "remote"
    remote = models.get("remote")
    assert isinstance(remote, OpenAIBackend)
    assert (remote.url, remote.model) == ("http://127.0.0.1:9/v1/chat/completions", "smollm2")
    assert isinstance(models.get("llama"), OpenAIBackend)  # env beats the file
    extra = models.get("extra")
    assert isinstance(extra, OllamaBackend) and extra.model == "m"  # flags beat the env
    big = models.get("big")
    assert isinstance(big, WorkerBackend)
    assert len(big.pool.workers) == 2  # instances: worker processes
    assert big.pool.spec.settings["n_ctx"] == 1024  # what each worker builds its backend with
    in_worker = local_backend_from_url("big", big.url, {**big.pool.spec.settings, "instances": 1})
    assert isinstance(in_worker, LlamaCppBackend) and in_worker.settings.n_ctx == 1024
    # The default: flag, then TOKENWIRE_MODEL, then the file.
    env2 = {"TOKENWIRE_MODEL": "scripted"}
    assert ModelManager.from_config(config=config, env=env2).default == "scripted"
    assert ModelManager.from_config(config=config, env=env2, default="big").default == "big"


def test_api_key_comes_from_a_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TW_TEST_KEY", "sk-test")
    models = ModelManager.from_config(
        models={
            "gpt": {"url": "openai+https://api.example.com/v1#gpt", "api_key_env": "TW_TEST_KEY"}
        },
        env={},
    )
    backend = models.get("gpt")
    assert isinstance(backend, OpenAIBackend)
    assert backend._clients._headers["Authorization"] == "Bearer sk-test"
    missing = ModelManager.from_config(
        models={"gpt": {"url": "openai+https://h/v1", "api_key_env": "TW_TEST_UNSET"}}, env={}
    )
    with pytest.raises(InvalidRequestError, match="TW_TEST_UNSET"):
        missing.get("gpt")


@pytest.mark.parametrize(
    "spec",
    ["nourl", "x=nope+http://h/v1", "x=http://h/v1", "=scripted:", "x=openai+"],
)
def test_bad_specs_fail_at_configuration(spec: str) -> None:
    with pytest.raises(InvalidRequestError):
        ModelManager.from_config(models=spec, env={}).get("x")


def test_unknown_default_fails_early() -> None:
    with pytest.raises(UnknownModelError):
        ModelManager.from_config(env={"TOKENWIRE_MODEL": "nope"})


def test_unknown_model_lists_the_available_ones() -> None:
    with pytest.raises(UnknownModelError, match="smollm2, scripted"):
        default_manager(env={}).get("gpt-5")


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[models\n")
    with pytest.raises(InvalidRequestError, match="cannot read"):
        ModelManager.from_config(config=bad, env={})
    with pytest.raises(InvalidRequestError, match="cannot read"):
        ModelManager.from_config(config=tmp_path / "missing.toml", env={})


def test_worker_false_keeps_a_llama_model_in_the_server_process() -> None:
    models = ModelManager.from_config(models="inproc=llamacpp:?worker=false", env={})
    assert isinstance(models.get("inproc"), LlamaCppBackend)
    assert models.states()["inproc"] == {"state": "in_process"}
    assert models.states()["smollm2"] == {"state": "not_started"}


def test_a_llama_worker_crash_at_start_names_the_build_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tokenwire.models import llamacpp

    crashed = ModelStartFailedError(
        "smollm2", 1, "was killed by signal SIGSEGV (Segmentation fault)"
    )
    where = "/site/llama_cpp/TOKENWIRE_BUILD"
    native = "llama-cpp-python==0.3.36 build=native flags=-DGGML_NATIVE=ON"
    monkeypatch.setattr(llamacpp, "build_stamp", lambda: (native, where))
    advice = build_advice(crashed)
    assert "native crash" in advice and native in advice and where in advice
    assert "bash scripts/llama_build.sh" in advice and "TOKENWIRE_LLAMA_BUILD=native" in advice
    monkeypatch.setattr(llamacpp, "build_stamp", lambda: (None, where))
    assert f"no build stamp ({where} is missing)" in build_advice(crashed)
    monkeypatch.setattr(llamacpp, "build_stamp", lambda: ("x==1 build=portable", where))
    assert "already the portable build" in build_advice(crashed)
    missing = ModelStartFailedError(
        "m", 1, "exited with status 1", error="the model file /x does not exist"
    )
    assert "model file is missing" in build_advice(missing)


def test_the_installed_build_is_stamped() -> None:
    stamp, where = build_stamp()
    assert where.endswith("llama_cpp/TOKENWIRE_BUILD")
    assert stamp is not None and stamp.startswith("llama-cpp-python==")
