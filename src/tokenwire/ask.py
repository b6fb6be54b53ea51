"""``tokenwire ask "prompt"`` and ``tokenwire models``.

``ask`` prints the answer's tokens as they arrive, then one stats line on
stderr (time to first token, tokens, tokens/s). By default it runs the model
in this process (the embedded SmolLM2 unless ``--model`` names another); with
``--url`` it asks a running tokenwire server (``POST /v1/streams``, then the
SSE events, resuming after a dropped connection). Ctrl-C stops the
generation — on the server too, with ``DELETE /v1/streams/{id}`` — and exits
with status 130.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx

from tokenwire.errors import TokenwireError
from tokenwire.events import Event, loads
from tokenwire.sse import SSEParser
from tokenwire.tracker import StreamingTracker

EXIT_INTERRUPTED = 130
_RESUME_ATTEMPTS = 5


def add_arguments(sub: Any) -> None:
    """Register the ``ask`` and ``models`` subcommands on an argparse subparsers object."""
    ask = sub.add_parser("ask", help="ask a model and print tokens as they arrive")
    ask.add_argument("prompt", help="the question (use - to read it from stdin)")
    ask.add_argument("--model", default=None, help="model name (default: the default model)")
    ask.add_argument("--max-tokens", type=int, default=256)
    ask.add_argument("--temperature", type=float, default=0.7)
    ask.add_argument("--top-p", type=float, default=None)
    ask.add_argument("--seed", type=int, default=None)
    ask.add_argument("--system", default=None, help="a system prompt")
    ask.add_argument(
        "--url", default=None, help="a running tokenwire server, e.g. http://127.0.0.1:8000"
    )
    ask.add_argument("--models", default=None, help="extra models: name=URL,… (in-process only)")
    ask.add_argument("--config", default=None, help="TOML config file with a [models] table")
    ask.set_defaults(handler=run_ask)

    models = sub.add_parser("models", help="list the available models")
    models.add_argument("--url", default=None, help="list a running server's models instead")
    models.add_argument("--models", default=None, help="extra models: name=URL,…")
    models.add_argument("--config", default=None, help="TOML config file with a [models] table")
    models.set_defaults(handler=run_models)


# -- ask ----------------------------------------------------------------------------


@dataclass
class Answer:
    """What the stats line is made of, filled in as events arrive."""

    tracker: StreamingTracker = field(default_factory=StreamingTracker)
    usage: dict[str, Any] | None = None
    terminal: str | None = None
    error: str | None = None
    stream_id: str | None = None
    last_seq: int = 0

    def stats(self) -> str:
        tokens = (self.usage or {}).get("completion_tokens")
        snap = self.tracker.snapshot(tokens=tokens if tokens else None)
        ttft = f"{snap.ttft_ms:.0f} ms" if snap.ttft_ms is not None else "-"
        return f"TTFT {ttft} · {snap.tokens} tokens · {snap.tokens_per_s:.1f} tokens/s"


def _body(args: argparse.Namespace, prompt: str) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
    }
    for key, value in (("model", args.model), ("top_p", args.top_p), ("seed", args.seed)):
        if value is not None:
            body[key] = value
    return body


def _printer(out: TextIO, answer: Answer) -> Callable[[Event], None]:
    def show(ev: Event) -> None:
        answer.last_seq = max(answer.last_seq, ev.seq)
        if ev.kind == "token":
            answer.tracker.on_token()
            out.write(ev.fields.get("text", ""))
            out.flush()
        elif ev.kind == "done":
            answer.usage = ev.fields.get("usage")
        elif ev.kind == "error":
            answer.error = f"{ev.fields.get('code')}: {ev.fields.get('message')}"
        if ev.terminal:
            answer.terminal = ev.kind

    return show


def run_ask(args: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    answer = Answer()
    show = _printer(sys.stdout, answer)
    body = _body(args, prompt)
    try:
        if args.url:
            asyncio.run(_ask_server(args.url, body, show, answer))
        else:
            asyncio.run(_ask_local(args, body, show))
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        sys.stdout.flush()
        print(f"stopped · {answer.stats()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (TokenwireError, httpx.HTTPError) as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("\n")
    sys.stdout.flush()
    print(answer.stats(), file=sys.stderr)
    if answer.error:
        print(f"error: {answer.error}", file=sys.stderr)
        return 1
    return 0 if answer.terminal == "done" else 1


async def _ask_local(
    args: argparse.Namespace, body: dict[str, Any], show: Callable[[Event], None]
) -> None:
    from tokenwire.models import GenerationRequest, default_manager, model_producer
    from tokenwire.stream import Hub

    models = default_manager(config_file=args.config, models=args.models)
    request = GenerationRequest.from_body(body, default_model=models.default or "")
    backend = models.get(request.model)
    hub = Hub()
    stream = await hub.start(model_producer(backend, request), model=request.model)
    try:
        async for ev in hub.subscribe(stream.id, transport="cli"):
            show(ev)
    finally:
        # On Ctrl-C (this task cancelled) this stops the generation before the loop ends.
        await hub.aclose()
        await models.aclose()


async def _ask_server(
    url: str, body: dict[str, Any], show: Callable[[Event], None], answer: Answer
) -> None:
    base = url.rstrip("/")
    timeout = httpx.Timeout(connect=10.0, read=None, write=10.0, pool=10.0)
    async with httpx.AsyncClient(base_url=base, timeout=timeout) as client:
        resp = await client.post("/v1/streams", json=body)
        if resp.status_code >= 400:
            raise TokenwireError(f"{base}: HTTP {resp.status_code}: {resp.text.strip()[:500]}")
        created = resp.json()
        answer.stream_id = created["id"]
        try:
            await _read_events(
                client,
                created.get("events_url") or f"/v1/streams/{answer.stream_id}/events",
                show,
                answer,
            )
        except asyncio.CancelledError:
            # Ctrl-C: stop is not leave — tell the server to stop generating.
            try:
                await asyncio.wait_for(client.delete(f"/v1/streams/{answer.stream_id}"), 5)
            except (httpx.HTTPError, TimeoutError):
                pass
            raise


async def _read_events(
    client: httpx.AsyncClient, path: str, show: Callable[[Event], None], answer: Answer
) -> None:
    """Read the SSE events to the terminal one, resuming after a dropped connection."""
    failures = 0
    while answer.terminal is None:
        headers = {"Accept": "text/event-stream"}
        if answer.last_seq:
            headers["Last-Event-ID"] = str(answer.last_seq)
        parser = SSEParser()
        try:
            async with client.stream("GET", path, headers=headers) as resp:
                if resp.status_code >= 400:
                    detail = (await resp.aread()).decode("utf-8", "replace").strip()[:500]
                    raise TokenwireError(f"HTTP {resp.status_code}: {detail}")
                async for chunk in resp.aiter_bytes():
                    for message in parser.feed(chunk):
                        if message.event in ("tw-open", "open", "heartbeat") or not message.data:
                            continue
                        show(Event.from_dict(loads(message.data)))
                        failures = 0
                    if answer.terminal is not None:
                        return
        except httpx.TransportError:
            failures += 1
            if failures > _RESUME_ATTEMPTS:
                raise
            await asyncio.sleep(min(0.25 * 2**failures, 2.0))


# -- models --------------------------------------------------------------------------


def run_models(args: argparse.Namespace) -> int:
    if args.url:
        try:
            rows = asyncio.run(_server_models(args.url))
        except (TokenwireError, httpx.HTTPError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    else:
        from tokenwire.models import default_manager

        try:
            manager = default_manager(config_file=args.config, models=args.models)
        except TokenwireError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        rows = manager.describe()
    for row in rows:
        mark = "*" if row.get("default") else " "
        aliases = f"  (alias: {', '.join(row['aliases'])})" if row.get("aliases") else ""
        url = row.get("url") or ""
        print(f"{mark} {row['id']:<24} {url}{aliases}")
    return 0


async def _server_models(url: str) -> list[dict[str, Any]]:
    base = url.rstrip("/")
    async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
        resp = await client.get("/v1/models")
        if resp.status_code == 200:
            return [{"id": m["id"], "url": m.get("owned_by")} for m in resp.json().get("data", [])]
        health = await client.get("/healthz")
        health.raise_for_status()
        return [{"id": name} for name in health.json().get("models", [])]
