"""``tokenwire serve --tls-cert … --tls-key …``: HTTPS and WSS with a self-signed
certificate this test makes, checked by clients that trust only it."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port
from tokenwire.events import loads

pytestmark = pytest.mark.slow


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenwire test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def trusting(cert: Path) -> ssl.SSLContext:
    """A client context that trusts ``cert`` and nothing else."""
    return ssl.create_default_context(cafile=str(cert))


def serve(*args: str, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "TOKENWIRE_MODEL": "scripted", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tokenwire", "serve", "--port", str(port), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    return proc, port


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory)
    proc, port = serve("--tls-cert", str(cert), "--tls-key", str(key), log=directory / "log")
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (directory / "log").read_text()
            try:
                if httpx.get(url + "/healthz", verify=trusting(cert), timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the TLS server did not answer"
                time.sleep(0.1)
        yield url, cert
    finally:
        proc.terminate()
        proc.wait(10)


async def test_https_streams_with_the_certificate(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    async with httpx.AsyncClient(base_url=url, verify=trusting(cert), timeout=10) as http:
        r = await http.post("/v1/streams", json={"prompt": "x", "max_tokens": 3})
        assert r.status_code == 201
        r = await http.get(f"/v1/streams/{r.json()['id']}/events")
        assert r.status_code == 200 and "event: done" in r.text
    # A client that does not trust the certificate refuses it; plain HTTP is not served.
    async with httpx.AsyncClient(timeout=5) as untrusting:
        with pytest.raises(httpx.ConnectError):
            await untrusting.get(url + "/healthz")
        with pytest.raises(httpx.HTTPError):
            await untrusting.get(url.replace("https://", "http://") + "/healthz")


async def test_wss_streams_with_the_certificate(tls_server: tuple[str, Path]) -> None:
    url, cert = tls_server
    context = trusting(cert)
    async with websockets.connect(url.replace("https://", "wss://") + "/v1/ws", ssl=context) as ws:
        request = {"prompt": "x", "max_tokens": 2}
        await ws.send(json.dumps({"op": "start", "id": 1, "request": request}))
        kinds = []
        while "done" not in kinds:
            frame = loads(await ws.recv())
            if frame["type"] == "event":
                kinds.append(frame["kind"])
        assert kinds == ["token", "token", "metrics", "done"]


def test_a_missing_or_lone_tls_option_fails_clearly(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    for args, says in (
        (("--tls-cert", str(cert)), "go together"),
        (("--tls-cert", str(cert), "--tls-key", str(tmp_path / "none.pem")), "cannot use"),
    ):
        proc, _ = serve(*args, log=tmp_path / "log")
        assert proc.wait(30) == 2
        assert says in (tmp_path / "log").read_text()
