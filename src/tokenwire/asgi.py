"""Small ASGI pieces shared by the streaming responses."""

from __future__ import annotations

from starlette.types import Message, Receive


async def wait_disconnect(receive: Receive) -> Message:
    """Return when the client has gone (``http.disconnect``); drains request messages."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message
