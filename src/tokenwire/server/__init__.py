"""The tokenwire server: ``create_app()`` and its configuration."""

from tokenwire.server.app import create_app
from tokenwire.server.config import ServerConfig

__all__ = ["ServerConfig", "create_app"]
