"""The TOP client verifies HTTPS certificates: against a server whose certificate it cannot verify, a
call fails before any request is sent, while a client that trusts that certificate gets through."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from taobao.client import RetryPolicy, TopClient
from taobao.errors import RetryableTopError
from taobao.limiter import TopRateLimiter


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: cannot make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def https_gateway(certificate: tuple[Path, Path]) -> AsyncIterator[tuple[str, list[str]]]:
    """An HTTPS endpoint with a self-signed certificate; yields its URL and the requests it served."""
    served: list[str] = []

    async def router(request: web.Request) -> web.Response:
        served.append(request.query.get("method", ""))
        return web.json_response({"error_response": {"code": 15, "sub_code": "isv.trade-not-exist"}})

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    app = web.Application()
    app.router.add_post("/router/rest", router)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/router/rest", served
    finally:
        await runner.cleanup()


async def test_top_client_refuses_a_certificate_it_cannot_verify(
    https_gateway: tuple[str, list[str]], certificate: tuple[Path, Path]
) -> None:
    url, served = https_gateway
    client = TopClient(
        app_key="12345678",
        app_secret=SecretStr("app-secret"),
        api_url=url,
        limiter=TopRateLimiter(100),
        retry=RetryPolicy(max_tries=1),
    )
    async with client:
        with pytest.raises(RetryableTopError, match="Certificate"):
            await client.trade_fullinfo("6100session", 1)
    assert served == []

    # The same server, reached by a client that trusts its certificate: the refusal was the check.
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    async with aiohttp.ClientSession() as http, http.post(url, ssl=trusting) as response:
        assert response.status == 200
    assert len(served) == 1
