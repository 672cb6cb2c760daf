"""Attachments through the gateway, as compose deploys them: the nginx templates of deploy/nginx in
front of the test stack's S3 server, and presigned URLs made for the store's public host name
(S3_PUBLIC_ENDPOINT=https://s3.<host>:<port>). SigV4 signs the Host header, port included, so this
fails if the gateway passes another Host than the client sent, or changes the path."""

from __future__ import annotations

import hashlib
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from string import Template
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.support.gateway import nginx_binary
from tests.support.server import free_port
from veil.core.blobstore import BlobStore
from veil.core.config import Settings
from veil.devstack.tls import DevCertificates
from veil.gateway.app import SERVICES

NGINX_DIR = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
TEMPLATES = ("store.conf.template", "veil.conf.template")  # the order the nginx image includes them


@pytest.fixture(scope="module")
def gateway_port(
    settings: Settings, certificates: DevCertificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """The gateway with both templates; the Veil upstreams lead nowhere (not needed here)."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("no nginx binary")
    assert settings.s3_endpoint
    directory = tmp_path_factory.mktemp("store-gateway")
    port = free_port()
    values = {
        **{f"VEIL_UPSTREAM_{service.upper()}": "server 127.0.0.1:9;" for service in SERVICES},
        "VEIL_UPSTREAM_STORE": f"server {urlsplit(settings.s3_endpoint).netloc};",
        "VEIL_GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "VEIL_GATEWAY_CERT": str(certificates.cert_file),
        "VEIL_GATEWAY_KEY": str(certificates.key_file),
        "VEIL_GATEWAY_AUTH_RATE": "10",
        "VEIL_GATEWAY_AUTH_BURST": "20",
    }
    includes = []
    for name in TEMPLATES:
        rendered = Template((NGINX_DIR / name).read_text()).safe_substitute(values)
        assert "${VEIL_" not in rendered, name
        conf = directory / name.removesuffix(".template")
        conf.write_text(rendered)
        includes.append(f"include {conf};")
    temp = " ".join(
        f"{kind}_temp_path {directory / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root root;" if os.geteuid() == 0 else ""  # workers must reach the temp directories
    (directory / "nginx.conf").write_text(
        f"{user}\ndaemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{ access_log {directory}/access.log; {temp} {' '.join(includes)} }}\n"
    )
    process = subprocess.Popen(
        [binary, "-p", str(directory), "-c", str(directory / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                log = directory / "error.log"
                assert process.poll() is None, log.read_text() if log.exists() else "nginx exited"
                assert time.monotonic() < deadline, "nginx did not listen"
                time.sleep(0.05)
        yield port
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def through_gateway(url: str, port: int) -> tuple[str, dict[str, str]]:
    """The URL to connect to (the certificate's name, localhost) and the Host header the client
    sends for `url` (what DNS would do for s3.<host>)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"localhost:{port}")), {"Host": parts.netloc}


async def test_presigned_upload_and_download_pass_through_the_store_host_name(
    settings: Settings, certificates: DevCertificates, gateway_port: int
) -> None:
    assert settings.s3_endpoint and settings.s3_access_key and settings.s3_secret_key
    store = BlobStore(
        settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        bucket=settings.s3_bucket,
        region=settings.s3_region,
        timeout=5,
        public_endpoint=f"https://s3.localhost:{gateway_port}",
    )
    key = f"test-store-gateway/{secrets.token_hex(16)}"
    body = os.urandom(300_000)  # more than one proxy buffer, streamed through
    context = ssl.create_default_context(cafile=str(certificates.ca_file))
    try:
        async with httpx.AsyncClient(verify=context, timeout=30) as client:
            upload = store.presign_put(key, len(body), hashlib.sha256(body).digest(), 60)
            url, host = through_gateway(upload.url, gateway_port)
            put = await client.put(url, content=body, headers={**upload.headers, **host})
            assert put.status_code == 200, put.text
            stored = await store.stat(key)
            assert stored is not None and stored.size == len(body)

            url, host = through_gateway(store.presign_get(key, 60), gateway_port)
            got = await client.get(url, headers=host)
            assert got.status_code == 200
            assert got.content == body
            assert got.headers["content-disposition"] == "attachment"
            assert got.headers["strict-transport-security"].startswith("max-age=")
            assert got.headers["x-content-type-options"] == "nosniff"

            # The API's host name never reaches the store, even with a valid signature.
            api = await client.get(url, headers={"Host": f"localhost:{gateway_port}"})
            assert api.status_code != 200 and api.content != body
    finally:
        await store.delete([key])
        store.close()
