"""Stream-scoped tokens: HMAC-SHA256 signed grants that one stream may be read
(``read``) or also stopped (``control``), until an expiry.

Pure code: no clock of its own (``now`` is passed in), no I/O. A token is
``tw1.<payload>.<signature>``, both parts base64url without padding; the payload
is ``{"s": stream id, "c": "read"|"control", "x": expiry in Unix seconds}`` and
the signature covers ``tw1.<payload>``. Every gateway that shares the secret
(``TOKENWIRE_TOKEN_SECRET``) verifies every other's tokens; nothing is stored.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Literal

from tokenwire.errors import TokenwireError
from tokenwire.events import dumps, loads

PREFIX = "tw1."
MAX_TOKEN_CHARS = 512
"""Longer than any token this module issues (stream ids are at most 128 characters)."""
Scope = Literal["read", "control"]
SCOPES: tuple[Scope, ...] = ("read", "control")


class InvalidTokenError(TokenwireError):
    """Not a token this server signed: malformed, or a bad signature (HTTP 401)."""

    status = 401
    code = "invalid_token"


class TokenExpiredError(InvalidTokenError):
    """A genuine token past its expiry: get a new one (HTTP 401)."""

    code = "token_expired"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows."""

    stream: str
    scope: Scope
    expires: float

    def allows_stop(self) -> bool:
        return self.scope == "control"


def looks_like_token(value: str) -> bool:
    """Whether ``value`` is meant as a stream token (and not, say, an API key)."""
    return value.startswith(PREFIX)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies tokens with one secret and one lifetime."""

    def __init__(self, secret: bytes, ttl_s: float = 3600.0) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        if ttl_s <= 0:
            raise ValueError("the token lifetime must be positive")
        self._secret = secret
        self.ttl_s = ttl_s

    def _sign(self, signed: str) -> str:
        return _b64(hmac.new(self._secret, signed.encode("ascii"), hashlib.sha256).digest())

    def issue(self, stream_id: str, scope: Scope, now: float | None = None) -> str:
        if scope not in SCOPES:
            raise ValueError(f"unknown token scope {scope!r}")
        expires = int((time.time() if now is None else now) + self.ttl_s)
        payload = _b64(dumps({"s": stream_id, "c": scope, "x": expires}))
        signed = PREFIX + payload
        return f"{signed}.{self._sign(signed)}"

    def pair(self, stream_id: str, now: float | None = None) -> dict[str, str]:
        """``{"read_token", "control_token"}`` for a stream just started."""
        return {
            "read_token": self.issue(stream_id, "read", now),
            "control_token": self.issue(stream_id, "control", now),
        }

    def verify(self, token: str, now: float | None = None) -> Grant:
        """The grant of a token this secret signed, or :class:`InvalidTokenError` /
        :class:`TokenExpiredError`. The signature is checked before anything is parsed."""
        if len(token) > MAX_TOKEN_CHARS or not token.startswith(PREFIX) or not token.isascii():
            raise InvalidTokenError("not a tokenwire stream token")
        signed, _, signature = token.rpartition(".")
        if not signed.startswith(PREFIX) or not hmac.compare_digest(
            signature.encode("ascii"), self._sign(signed).encode("ascii")
        ):
            raise InvalidTokenError("the token's signature does not verify")
        try:
            claims = loads(_unb64(signed[len(PREFIX) :]))
        except (ValueError, binascii.Error):
            raise InvalidTokenError("the token's payload is malformed") from None
        if (
            not isinstance(claims, dict)
            or not isinstance(claims.get("s"), str)
            or claims.get("c") not in SCOPES
            or not isinstance(claims.get("x"), int)
        ):
            raise InvalidTokenError("the token's payload is malformed")
        if (time.time() if now is None else now) >= claims["x"]:
            raise TokenExpiredError("the token has expired; ask for a new one")
        return Grant(stream=claims["s"], scope=claims["c"], expires=float(claims["x"]))
