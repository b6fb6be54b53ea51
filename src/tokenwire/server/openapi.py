"""The HTTP API as an OpenAPI 3.1 document (``GET /openapi.json``) and a page that
renders it (``GET /docs``: plain HTML and a few lines of script, nothing fetched
from anywhere but this server).

Hand-written, beside the routes it describes: tests/test_openapi.py checks that
it names every HTTP route of the app, and no other, and fuzzes a real server
from it with schemathesis. The WebSocket (``/v1/ws``) and Socket.IO protocols
are in docs/protocol.md; OpenAPI does not describe them.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tokenwire import __version__ as VERSION

JSON = "application/json"
ERROR = {"$ref": "#/components/schemas/Error"}
STREAM_ID = {
    "name": "stream_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 128},
    "description": "A stream id (`st_…`).",
}
TOKEN_QUERY = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "A stream token, for clients that cannot send `Authorization`.",
}
AFTER = {
    "name": "after",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Resume after this seq (wins over `Last-Event-ID`).",
}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The SSE resume header: the last seq received.",
}
MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
}
GENERATION = {
    "type": "object",
    "description": "Either `prompt` or `messages`; or a `pipeline` with its `params`.",
    "properties": {
        "model": {"type": "string", "minLength": 1},
        "prompt": {"type": "string"},
        "messages": {"type": "array", "minItems": 1, "items": MESSAGE},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 32768},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20},
        "seed": {"type": "integer"},
        "stop": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "maxItems": 8, "items": {"type": "string", "minLength": 1}},
            ]
        },
        "delay_ms": {"type": "number", "minimum": 0, "maximum": 60000},
        "pipeline": {"type": "string"},
        "params": {"type": "object"},
    },
}
STARTED = {
    "type": "object",
    "required": ["id", "status", "events_url", "ndjson_url", "status_url"],
    "properties": {
        "id": {"type": "string"},
        "status": {"type": "string"},
        "model": {"type": ["string", "null"]},
        "events_url": {"type": "string"},
        "ndjson_url": {"type": "string"},
        "status_url": {"type": "string"},
        "read_token": {"type": "string", "description": "With API keys on: reads this stream."},
        "control_token": {"type": "string", "description": "Also stops it."},
    },
}
UI_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "id": {"type": "string"},
        "role": {"enum": ["system", "user", "assistant"]},
        "parts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
            },
        },
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed request",
        401: "No valid API key or token",
        403: "Not allowed with these credentials (or this Origin)",
        404: "No such stream or model",
        408: "The body did not arrive in time",
        409: "Conflict",
        413: "Body too large",
        415: "The body is not declared JSON",
        422: "Invalid request",
        429: "A limit or the rate limit was reached (`Retry-After`)",
        503: "The model or the server cannot take more work now",
    }
    return {
        str(status): {
            "description": reasons[status],
            "content": {JSON: {"schema": ERROR}},
        }
        for status in statuses
    }


COMMON = (401, 429)


def _op(summary: str, responses: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**responses, **_errors(*COMMON, *errors)}, **extra}


def _ok(
    description: str, media: str = JSON, schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema or {}}}}


SSE = "text/event-stream"


def _stream_op(summary: str, media: str) -> dict[str, Any]:
    return _op(
        summary,
        {"200": _ok("The open frame, then the events, until the terminal one", media)},
        400,
        403,
        404,
        422,
        parameters=[STREAM_ID, AFTER, LAST_EVENT_ID, TOKEN_QUERY],
    )


def _public(summary: str, response: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "security": [], "responses": {"200": response}}


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every HTTP route ``create_app()`` serves."""
    json_body = {"required": True, "content": {JSON: {"schema": GENERATION}}}
    paths: dict[str, Any] = {
        "/": {"get": _public("The demo page", _ok("HTML", "text/html"))},
        "/healthz": {"get": _public("Liveness and counts", _ok("Health"))},
        "/readyz": {
            "get": {
                "summary": "Readiness: 503 until the default model passed its self-check",
                "security": [],
                "responses": {
                    "200": _ok("Ready"),
                    "503": _ok("Not ready", JSON, {"$ref": "#/components/schemas/Error"}),
                },
            }
        },
        "/metrics": {"get": _public("Prometheus metrics", _ok("Metrics", "text/plain"))},
        "/openapi.json": {"get": _public("This document", _ok("OpenAPI 3.1"))},
        "/docs": {"get": _public("This document, rendered", _ok("HTML", "text/html"))},
        "/v1/streams": {
            "post": _op(
                "Start a generation (needs an API key when keys are on)",
                {"201": _ok("Started", JSON, STARTED)},
                400,
                403,
                408,
                413,
                415,
                422,
                503,
                requestBody=json_body,
            )
        },
        "/v1/streams/{stream_id}": {
            "get": _op(
                "A stream's status",
                {"200": _ok("Status")},
                403,
                404,
                parameters=[STREAM_ID, TOKEN_QUERY],
            ),
            "delete": _op(
                "Stop a stream (a key, or its control_token)",
                {"200": _ok("Stopped")},
                403,
                404,
                parameters=[STREAM_ID, TOKEN_QUERY],
            ),
        },
        "/v1/streams/{stream_id}/events": {
            "get": _stream_op("Server-Sent Events, resumable", "text/event-stream")
        },
        "/v1/streams/{stream_id}/ndjson": {
            "get": _stream_op("NDJSON, resumable", "application/x-ndjson")
        },
        "/v1/streams/{stream_id}/openai": {
            "get": _stream_op("Any stream as OpenAI chat.completion chunks, resumable", SSE)
        },
        "/v1/streams/{stream_id}/ai-sdk": {
            "get": _stream_op("Any stream as the AI SDK UI message stream, resumable", SSE)
        },
        "/v1/chat/completions": {
            "post": _op(
                "OpenAI-compatible chat completions (errors in OpenAI's shape, with code)",
                {"200": _ok("A completion, or its chunks as SSE with stream: true")},
                400,
                408,
                413,
                422,
                503,
                requestBody={
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                **GENERATION,
                                "required": ["messages"],
                                "properties": {
                                    **GENERATION["properties"],  # type: ignore[dict-item]
                                    "stream": {"type": "boolean"},
                                    "n": {"type": "integer", "const": 1},
                                },
                            }
                        }
                    },
                },
            )
        },
        "/v1/models": {"get": _op("OpenAI-compatible model list", {"200": _ok("Models")})},
        "/v1/models/{model}": {
            "get": _op(
                "One model",
                {"200": _ok("A model")},
                404,
                parameters=[
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            )
        },
        "/v1/ai-sdk/chat": {
            "post": _op(
                "The Vercel AI SDK UI message stream, for useChat",
                {"200": _ok("UI message chunks as SSE", "text/event-stream")},
                400,
                408,
                413,
                422,
                503,
                requestBody={
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["messages"],
                                "properties": {
                                    "id": {"type": "string", "minLength": 1, "maxLength": 256},
                                    "messages": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": UI_MESSAGE,
                                    },
                                    "trigger": {"type": "string"},
                                    "messageId": {"type": "string"},
                                    "model": {"type": "string"},
                                    "max_tokens": GENERATION["properties"]["max_tokens"],  # type: ignore[index]
                                    "delay_ms": GENERATION["properties"]["delay_ms"],  # type: ignore[index]
                                },
                            }
                        }
                    },
                },
            )
        },
        "/v1/ai-sdk/chat/{chat_id}/stream": {
            "get": _op(
                "useChat's resume: replay the chat's running stream (its owner only), or 204",
                {
                    "200": _ok("UI message chunks as SSE", "text/event-stream"),
                    "204": {"description": "Nothing runs for this chat"},
                },
                403,
                parameters=[
                    {
                        "name": "chat_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    TOKEN_QUERY,
                    {
                        "name": "x-tokenwire-chat-token",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tokenwire",
            "version": VERSION,
            "description": "Stream AI model output over SSE, NDJSON, WebSocket, Socket.IO, "
            "OpenAI and AI SDK routes. Every error is `{error: {code, message}}`. "
            "Access control: docs/protocol.md.",
        },
        "paths": paths,
        "security": [{"bearer": []}, {"api_key": []}, {}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key, or a stream's read_token / control_token",
                },
                "api_key": {"type": "apiKey", "in": "query", "name": "api_key"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": ["string", "null"]},
                                "message": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
    }


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tokenwire API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
.op{margin:1rem 0;padding:.6rem .8rem;border:1px solid #e3e3e3;border-radius:6px}
.m{display:inline-block;min-width:4.5rem;font-weight:600;text-transform:uppercase}
.get{color:#1565c0}.post{color:#2e7d32}.delete{color:#c62828}
code,pre{font:13px ui-monospace,monospace;background:#f6f6f6;border-radius:4px}
pre{padding:.5rem;overflow:auto;max-height:20rem}
details summary{cursor:pointer}
</style></head>
<body><h1>tokenwire HTTP API</h1>
<p>Rendered from <a href="/openapi.json"><code>/openapi.json</code></a> (OpenAPI 3.1).
WebSocket and Socket.IO are described in <code>docs/protocol.md</code>.</p>
<div id="api">Loading…</div>
<script>
const el = (tag, attrs = {}, ...kids) => {
  const node = document.createElement(tag);
  Object.assign(node, attrs);
  node.append(...kids);
  return node;
};
const json = (value) => el("pre", {}, JSON.stringify(value, null, 2));
fetch("/openapi.json").then((r) => r.json()).then((doc) => {
  const root = document.getElementById("api");
  root.replaceChildren(el("p", {}, doc.info.description));
  for (const [path, ops] of Object.entries(doc.paths)) {
    root.append(el("h2", {}, el("code", {}, path)));
    for (const [method, op] of Object.entries(ops)) {
      const box = el("div", {className: "op"},
        el("span", {className: "m " + method}, method), " ", op.summary || "");
      if (op.parameters) box.append(el("details", {}, el("summary", {}, "Parameters"),
        json(op.parameters)));
      if (op.requestBody) box.append(el("details", {}, el("summary", {}, "Request body"),
        json(op.requestBody.content)));
      box.append(el("details", {}, el("summary", {}, "Responses: " +
        Object.keys(op.responses).join(", ")), json(op.responses)));
      root.append(box);
    }
  }
}).catch((err) => {
  document.getElementById("api").textContent = "Could not load /openapi.json: " + err;
});
</script></body></html>
"""


def routes() -> list[BaseRoute]:
    doc = document()

    async def openapi_json(request: Request) -> Response:
        return JSONResponse(doc)

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_PAGE)

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
