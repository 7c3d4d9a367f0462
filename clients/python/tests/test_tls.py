"""HTTPS: both publishers verify the server's certificate (the asyncio one drives TLS
itself through ssl.SSLObject, so it is tested here on a real TLS socket)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest

import fake_herald
from herald import RetryPolicy, TransportError
from publishers import AsyncFacade, SyncFacade

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def tls_fake(cert):
    server = fake_herald.start()
    assert server.server is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    yield server
    fake_herald.stop(server)


@pytest.mark.parametrize("facade", [SyncFacade, AsyncFacade])
def test_publish_over_verified_tls(tls_fake, cert, facade):
    port = tls_fake.server.server_address[1]
    pub = facade(f"https://localhost:{port}", ssl_context=ssl.create_default_context(cafile=str(cert[0])))
    big = {"blob": "é🦀" * 50_000}  # several TLS records each way
    for _ in range(3):
        result = pub.publish("alerts", "alert", big)
        assert result.delivered_locally == 1
    assert [r.body["data"] for r in tls_fake.requests] == [big] * 3
    assert len({r.client_port for r in tls_fake.requests}) == 1
    pub.inner.close()


@pytest.mark.parametrize("facade", [SyncFacade, AsyncFacade])
def test_an_untrusted_certificate_is_refused(tls_fake, facade):
    port = tls_fake.server.server_address[1]
    pub = facade(f"https://localhost:{port}", retry=RetryPolicy(max_retries=0))
    with pytest.raises(TransportError) as info:
        pub.publish("alerts", "alert", {})
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert tls_fake.requests == []
