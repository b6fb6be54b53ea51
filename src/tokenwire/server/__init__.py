"""The tokenwire server: ``create_app()`` and its configuration."""

from typing import TYPE_CHECKING, Any

from tokenwire.server.config import ServerConfig

if TYPE_CHECKING:
    from tokenwire.server.app import create_app


def __getattr__(name: str) -> Any:
    # Imported when asked for, not with the package: the app imports every
    # transport, they import the session core, and the core imports
    # tokenwire.server.access, which runs this file first. Eagerly, whichever of
    # the core's modules was imported first met itself half-initialised.
    if name == "create_app":
        from tokenwire.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ServerConfig", "create_app"]
