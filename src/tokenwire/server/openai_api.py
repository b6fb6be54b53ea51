"""Placeholder: routes land with the transports issue."""

from __future__ import annotations

from starlette.routing import BaseRoute

from tokenwire.server.services import Services


def routes(services: Services) -> list[BaseRoute]:
    return []
