"""Small ASGI pieces: what the streaming responses share, and the lifespan of a
tokenwire app embedded in a host app (docs/embedding.md).

Starlette runs only the outermost app's lifespan, so ``host.mount("/tw", tw)``
alone would never start tw's models nor close its hub: :func:`lifespan` and
:func:`mount` compose tw's lifespan with the host's.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from starlette.types import Message, Receive

# Any, not Mapping | None: FastAPI and Starlette accept a lifespan yielding either.
Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]


async def wait_disconnect(receive: Receive) -> Message:
    """Return when the client has gone (``http.disconnect``); drains request messages."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return message


def lifespan(*apps: Any, host: Lifespan | None = None) -> Lifespan:
    """A host app's lifespan that starts each embedded tokenwire app (models, lag
    monitor) before the host's own ``host`` lifespan, and shuts them down after it::

        tw = tokenwire.server.create_app()
        app = FastAPI(lifespan=tokenwire.lifespan(tw))
        app.mount("/tw", tw)

    Whatever state ``host`` yields is the host app's lifespan state."""

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        async with contextlib.AsyncExitStack() as stack:
            for embedded in apps:
                await stack.enter_async_context(embedded.router.lifespan_context(embedded))
            state = None
            if host is not None:
                state = await stack.enter_async_context(host(app))
            yield state

    return run


def mount(host_app: Any, prefix: str, app: Any, name: str | None = None) -> None:
    """``host_app.mount(prefix, app)`` and the app's lifespan composed with the
    host's existing one (``host_app.router.lifespan_context``), for a host app
    that was built without :func:`lifespan`. Call it before the host starts."""
    host_app.mount(prefix, app, name=name)
    router = host_app.router
    router.lifespan_context = lifespan(app, host=router.lifespan_context)
