"""A same-origin host for the React test page: the built bundle at ``/react-app/``
beside the tokenwire app itself, on one port, so the page needs no CORS and the
server no test hook.

    python -m tests.e2e.react_host BUNDLE_DIR PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from tokenwire.server.app import create_app


def host_app(bundle: str) -> Starlette:
    return Starlette(
        routes=[
            Mount("/react-app", StaticFiles(directory=bundle, html=True)),
            Mount("/", create_app()),
        ]
    )


if __name__ == "__main__":
    uvicorn.run(host_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
