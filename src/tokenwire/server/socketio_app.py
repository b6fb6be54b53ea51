"""Placeholder: Socket.IO lands with the transports issue."""

from __future__ import annotations

from starlette.types import ASGIApp

from tokenwire.server.services import Services


def wrap(app: ASGIApp, services: Services) -> ASGIApp:
    return app
