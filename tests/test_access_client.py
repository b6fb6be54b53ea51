"""The Python client carries stream tokens (``Client(url, token=…)``) and refreshes
an expired one through its callback, against a real server with keys on."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import ServerFactory, ServerProcess
from tokenwire.client import Client
from tokenwire.client.auth import BearerAuth
from tokenwire.client.errors import AuthenticationError
from tokenwire.models.scripted import scripted_token
from tokenwire.server.tokens import TokenSigner

pytestmark = pytest.mark.slow

SECRET = "client-test-secret-0123456789"
KEY = {"Authorization": "Bearer key-one"}
SIGNER = TokenSigner(SECRET.encode())


@pytest.fixture(scope="module")
def locked(start_server: ServerFactory) -> ServerProcess:
    return start_server(TOKENWIRE_API_KEYS="key-one", TOKENWIRE_TOKEN_SECRET=SECRET)


async def start(server: ServerProcess, **params: object) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"model": "scripted", "prompt": "x", "max_tokens": 6, **params}
        r = await http.post("/v1/streams", json=body, headers=KEY)
        assert r.status_code == 201
        started: dict[str, str] = r.json()
        return started


def expired(stream_id: str, scope: str = "read") -> str:
    return SIGNER.issue(stream_id, scope, now=time.time() - 7200)  # type: ignore[arg-type]


EXPECTED = "".join(scripted_token(i) for i in range(6))


@pytest.mark.parametrize("transport", ["sse", "ndjson", "ws"])
async def test_a_read_token_reads_its_stream(locked: ServerProcess, transport: str) -> None:
    started = await start(locked)
    async with Client(locked.url, transport=transport, token=started["read_token"]) as client:
        assert await client.subscribe(started["id"]).text() == EXPECTED
        with pytest.raises(AuthenticationError) as refused:
            await client.stop(started["id"])
        assert refused.value.status_code == 403 and refused.value.code == "forbidden"
        other = await start(locked)
        with pytest.raises(AuthenticationError) as refused:
            await client.status(other["id"])
        assert refused.value.code == "forbidden"


async def test_a_control_token_stops_its_stream(locked: ServerProcess) -> None:
    started = await start(locked, max_tokens=500, delay_ms=20)
    async with Client(locked.url, token=started["control_token"]) as client:
        await client.stop(started["id"])
        assert (await client.status(started["id"]))["status"] == "cancelled"


async def test_an_expired_token_is_refreshed_through_the_callback(locked: ServerProcess) -> None:
    started = await start(locked)
    calls: list[str] = []

    def refresh() -> str:
        calls.append("sync")
        return started["read_token"]

    async with Client(locked.url, token=expired(started["id"]), refresh_token=refresh) as client:
        assert await client.subscribe(started["id"]).text() == EXPECTED
        assert calls == ["sync"]
        # The refreshed token is used from then on: no second refresh.
        assert (await client.status(started["id"]))["status"] == "done"
        assert calls == ["sync"]

    later = await start(locked, max_tokens=500, delay_ms=20)

    async def refresh_async() -> str:
        calls.append("async")
        return later["control_token"]

    token = expired(later["id"], "control")
    async with Client(locked.url, token=token, refresh_token=refresh_async) as client:
        await client.stop(later["id"])
        assert calls[-1] == "async"
        assert (await client.status(later["id"]))["status"] == "cancelled"


async def test_without_a_callback_the_expiry_reaches_the_application(
    locked: ServerProcess,
) -> None:
    started = await start(locked)
    async with Client(locked.url, token=expired(started["id"])) as client:
        with pytest.raises(AuthenticationError) as refused:
            await client.subscribe(started["id"]).text()
        assert refused.value.status_code == 401 and refused.value.code == "token_expired"
    # A callback whose token is refused too does not loop: the second 401 is final.
    async with Client(
        locked.url, token=expired(started["id"]), refresh_token=lambda: expired(started["id"])
    ) as client:
        with pytest.raises(AuthenticationError) as refused:
            await client.status(started["id"])
        assert refused.value.code == "token_expired"


async def test_bearer_auth_is_read_when_used() -> None:
    auth = BearerAuth(token="tw1.old")
    assert dict(auth) == {"Authorization": "Bearer tw1.old"}
    assert dict(BearerAuth()) == {} and not await BearerAuth(token="x").refresh("x")
    auth.refresh_token = lambda: "tw1.new"
    assert await auth.refresh("tw1.old") and dict(auth) == {"Authorization": "Bearer tw1.new"}
    # A caller that saw the old token fail after another refreshed: no second call.
    assert await auth.refresh("tw1.old") and auth.refreshes == 1
    with pytest.raises(ValueError):
        BearerAuth(api_key="k", token="t")
