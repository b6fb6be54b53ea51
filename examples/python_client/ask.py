"""Ask a tokenwire server a question from Python, let go of the connection
halfway, and pick the answer up again over another transport: nothing lost,
nothing twice.

    tokenwire serve                      # in another terminal
    python examples/python_client/ask.py "Why is the sky blue?"
    python examples/python_client/ask.py --model scripted --param delay_ms=20 hi

``--url`` (or ``TOKENWIRE_URL``) names the server, default http://127.0.0.1:8000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from tokenwire.client import Client

TERMINAL = ("done", "error", "cancelled")


def tokens_in(event: Any) -> int:
    """A catch-up frame merges the tokens from_seq..seq into one event."""
    return int(event.seq - event.fields.get("from_seq", event.seq) + 1)


async def ask(url: str, question: str, leave_after: int, params: dict[str, Any]) -> None:
    async with Client(url, transport="ws") as ws, Client(url, transport="sse") as sse:
        handle = await ws.start(prompt=question, **params)
        seen, ended = 0, None
        async for event in handle:
            if event.kind == "token":
                print(event.fields["text"], end="", flush=True)
                seen += tokens_in(event)
                if seen >= leave_after:
                    break
            elif event.kind in TERMINAL:
                ended = event
                break
        stream_id, last_seq = handle.stream_id, handle.last_seq
        handle.close()  # a leave, not a stop: the stream keeps running on the server
        if ended is None and stream_id is not None:
            print(f"\n[left after seq {last_seq}; resuming {stream_id} over SSE]", file=sys.stderr)
            # Everything after last_seq from the server's log, then the live tail.
            async for event in sse.subscribe(stream_id, after=last_seq):
                if event.kind == "token":
                    print(event.fields["text"], end="", flush=True)
                elif event.kind in TERMINAL:
                    ended = event
                    break
        print()
        if ended is not None:
            print(f"[{ended.kind}: {json.dumps(ended.fields)}]", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="*", default=["Why is the sky blue?"])
    parser.add_argument("--url", default=os.environ.get("TOKENWIRE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--model", help="a model the server knows (default: its default)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--leave-after", type=int, default=10, help="tokens read before letting go")
    parser.add_argument("--param", action="append", default=[], help="another field: name=JSON")
    args = parser.parse_args()
    params: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.model:
        params["model"] = args.model
    for item in args.param:
        name, _, value = item.partition("=")
        params[name] = json.loads(value)
    asyncio.run(ask(args.url, " ".join(args.question), args.leave_after, params))


if __name__ == "__main__":
    main()
