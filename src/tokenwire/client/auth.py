"""What the client proves to the server: an API key, or a stream token that it can
refresh (docs/client.md, "Tokens").

:class:`BearerAuth` is a live header mapping: every request and every new link
reads the current ``Authorization`` from it, so a refreshed token is used from the
next one on. When the server answers 401 ``token_expired``, the transport calls
:meth:`BearerAuth.refresh` (the application's ``refresh_token`` callback, sync or
async) once, and retries with the new token; without a callback, or when the new
token is refused too, the error reaches the application.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping

TokenRefresh = Callable[[], "str | Awaitable[str]"]
EXPIRED = "token_expired"


class BearerAuth(Mapping[str, str]):
    """``{"Authorization": "Bearer <key or token>"}``, or nothing, read when used."""

    def __init__(
        self,
        api_key: str | None = None,
        token: str | None = None,
        refresh_token: TokenRefresh | None = None,
    ) -> None:
        if api_key and token:
            raise ValueError("pass api_key= or token=, not both")
        self.api_key = api_key
        self.token = token
        self.refresh_token = refresh_token
        self.refreshes = 0
        self._lock: asyncio.Lock | None = None

    def _value(self) -> str | None:
        secret = self.api_key or self.token
        return f"Bearer {secret}" if secret else None

    def __getitem__(self, name: str) -> str:
        value = self._value()
        if name != "Authorization" or value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(("Authorization",) if self._value() else ())

    def __len__(self) -> int:
        return 1 if self._value() else 0

    async def refresh(self, rejected: str | None) -> bool:
        """Get a new token after ``rejected`` (the one the server refused) expired;
        False when there is no callback. Concurrent callers share one refresh: a
        caller whose rejected token was already replaced just retries."""
        if self.refresh_token is None or self.api_key:
            return False
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if rejected is not None and self.token != rejected:
                return True
            result = self.refresh_token()
            token = await result if inspect.isawaitable(result) else result
            if not isinstance(token, str) or not token:
                raise TypeError("refresh_token must return a non-empty token string")
            self.token = token
            self.refreshes += 1
            return True


async def refresh_after(headers: Mapping[str, str], code: str, used: str | None) -> bool:
    """Whether a request refused with ``code`` should be sent again: the token had
    expired and ``headers`` could refresh it."""
    return code == EXPIRED and isinstance(headers, BearerAuth) and await headers.refresh(used)


def current_token(headers: Mapping[str, str]) -> str | None:
    return headers.token if isinstance(headers, BearerAuth) else None
