"""The OpenAPI 3.1 document: in step with the app's routes, served with its docs
page, and schemathesis against a real server from it: no 5xx, and every error
body is ``{error: {code, message}}``."""

from __future__ import annotations

import copy
import re
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from starlette.routing import Route

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.models.manager import ModelManager
from tokenwire.models.scripted import ScriptedBackend
from tokenwire.server.app import create_app
from tokenwire.server.openapi import document

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


def app_operations() -> set[tuple[str, str]]:
    models = ModelManager(default="scripted")
    models.register("scripted", ScriptedBackend())
    app = create_app(models=models)
    ops = set()
    for route in app.router.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
            ops |= {(m.lower(), path) for m in route.methods or () if m != "HEAD"}
    return ops


def test_the_document_names_every_http_route_and_no_other() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops if m in HTTP_METHODS}
    assert described == app_operations()
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"] and op["responses"], (method, path)
            names = set(re.findall(r"\{(\w+)\}", path))
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == declared, (method, path)


def test_the_document_is_valid_openapi() -> None:
    schema = schemathesis.openapi.from_dict(document())
    assert len(list(schema.get_all_operations())) == len(app_operations())


@pytest.mark.slow
async def test_served_with_a_page_that_needs_nothing_from_elsewhere(
    start_server: ServerFactory,
) -> None:
    locked = start_server(TOKENWIRE_API_KEYS="key-one")
    async with httpx.AsyncClient(base_url=locked.url, timeout=10) as http:
        r = await http.get("/openapi.json")  # public, like /healthz
        assert r.status_code == 200 and r.json() == document()
        page = await http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in page.text
        # No script, style or font from another host.
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page.text)
        assert "@import" not in page.text


# -- schemathesis against a real server ----------------------------------------------

MAX_EXAMPLES = 25


def fuzz_document() -> dict[str, Any]:
    """The document with the generation bounds tightened so each example answers in
    milliseconds (a generated ``delay_ms`` of a minute would only test patience);
    everything else exactly as served."""
    doc = copy.deepcopy(document())
    for ops in doc["paths"].values():
        for op in ops.values():
            for media in op.get("requestBody", {}).get("content", {}).values():
                props = media["schema"].get("properties", {})
                if "max_tokens" in props:
                    props["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": 8}
                if "delay_ms" in props:
                    props["delay_ms"] = {"type": "number", "minimum": 0, "maximum": 2}
    return doc


schema = schemathesis.openapi.from_dict(fuzz_document())
# Valid and invalid input both: what a client gets wrong must be a 4xx with the JSON
# error, never a 5xx.
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)


@pytest.fixture(scope="module")
def fuzzed(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_GRACE_S="0.2", TOKENWIRE_HEARTBEAT_S="0.5")


def error_bodies_are_json(response: Any) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), response.text[:200]
    assert "code" in body["error"] and isinstance(body["error"].get("message"), str), body


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_error_and_json_errors(case: schemathesis.Case, fuzzed: ServerProcess) -> None:
    response = case.call(base_url=fuzzed.url, timeout=10)
    case.validate_response(response, checks=[schemathesis.checks.not_a_server_error])
    error_bodies_are_json(response)


@pytest.mark.slow
async def test_what_the_fuzz_found_ignored_field_names_in_a_header(fuzzed: ServerProcess) -> None:
    # schemathesis found it: an unknown field's name went into a response header
    # as it was, and a control character in it made the answer a dropped connection.
    body = {"model": "scripted", "messages": [{"role": "user", "content": "x"}], "\r\x01é": 1}
    async with httpx.AsyncClient(base_url=fuzzed.url, timeout=10) as http:
        r = await http.post("/v1/chat/completions", json={**body, "max_tokens": 2})
        assert r.status_code == 200
        assert r.headers["x-tokenwire-ignored-fields"] == "???"
