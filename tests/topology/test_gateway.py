"""The production topology on one machine: the nginx gateway of deploy/nginx in front of separate
service processes (two copies each of auth and messaging, one of keys, files and account) sharing
one database and object store. Everything is driven through the gateway only.

Needs nginx (`apt-get install nginx`). Without it these tests are skipped with a message, unless
VEIL_REQUIRE_NGINX=1 (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect

from tests.support.databases import server_url, with_database
from tests.support.gateway import Gateway, nginx_binary, start_gateway, upstreams
from tests.support.messaging import envelope
from tests.support.server import LiveServer, free_port, start_server
from tests.support.users import bearer, login, register
from veil.core.config import Settings
from veil.devstack.tls import DevCertificates

HSTS = "max-age=63072000; includeSubDomains"
COPIES = {"auth": 2, "messaging": 2, "keys": 1, "files": 1, "account": 1}


@dataclass
class Topology:
    gateway: Gateway
    services: dict[str, list[LiveServer]]
    ca_file: Path

    def client(self) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.gateway.base_url, verify=context, timeout=10)


@pytest.fixture(scope="module")
def topology(
    settings: Settings,
    template_database: str,
    certificates: DevCertificates,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Topology]:
    binary = nginx_binary()
    if binary is None:
        message = "nginx is not installed (apt-get install nginx); the topology tests need it"
        if os.environ.get("VEIL_REQUIRE_NGINX") == "1":
            pytest.fail(message)
        pytest.skip(message)
    name = f"veil_topology_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(server_url(settings), name, template_database))
    database_url = with_database(server_url(settings), name)
    directory = tmp_path_factory.mktemp("topology")
    services: dict[str, list[LiveServer]] = {}
    gateway = None
    env = {
        "VEIL_TRUSTED_PROXIES": "127.0.0.1/32",
        # The per-IP auth limit, enforced by the services with state shared in PostgreSQL.
        "VEIL_AUTH_RATE": "5",
        "VEIL_AUTH_BURST": "10",
    }
    try:
        for service, count in COPIES.items():
            services[service] = [
                start_server(
                    settings,
                    database_url,
                    certificates,
                    log_file=directory / f"{service}-{copy}.log",
                    extra_env=env,
                    service=service,
                    plain=True,
                )
                for copy in range(count)
            ]
        gateway = start_gateway(
            binary,
            directory / "nginx",
            free_port(),
            {
                "VEIL_GATEWAY_CERT": str(certificates.cert_file),
                "VEIL_GATEWAY_KEY": str(certificates.key_file),
                # High here, so the tests below see the services' own (shared) limit.
                "VEIL_GATEWAY_AUTH_RATE": "1000",
                "VEIL_GATEWAY_AUTH_BURST": "1000",
                **{f"VEIL_UPSTREAM_{name.upper()}": upstreams(copies) for name, copies in services.items()},
            },
        )
        yield Topology(gateway, services, certificates.ca_file)
    finally:
        if gateway is not None:
            gateway.stop()
        for copies in services.values():
            for live in copies:
                live.stop()
        asyncio.run(_drop_database(server_url(settings), name))


async def _create_database(server: str, name: str, template: str) -> None:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()


async def _drop_database(server: str, name: str) -> None:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def tls_version(topology: Topology, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion) -> str | None:
    context = ssl.create_default_context(cafile=str(topology.ca_file))
    context.minimum_version, context.maximum_version = minimum, maximum
    with (
        socket.create_connection(("127.0.0.1", topology.gateway.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


def test_tls_13_is_negotiated_and_11_refused(topology: Topology) -> None:
    assert tls_version(topology, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED) == "TLSv1.3"
    assert tls_version(topology, ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        tls_version(topology, ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1)


def test_hsts_and_problem_documents_on_every_status(topology: Topology) -> None:
    with topology.client() as client:
        responses = {
            200: client.get("/healthz"),
            401: client.get("/v1/account"),
            404: client.get("/v1/nothing-here"),
            413: client.post("/v1/auth/login", content=b"x" * (600 * 1024)),
        }
        metrics = client.get("/metrics")
    assert {status: r.status_code for status, r in responses.items()} == {s: s for s in responses}
    for response in (*responses.values(), metrics):
        assert response.headers["strict-transport-security"] == HSTS
    for status in (401, 404, 413):
        assert responses[status].headers["content-type"] == "application/problem+json"
        assert responses[status].json()["status"] == status
    # Metrics are for scrapers inside, never through the public gateway.
    assert metrics.status_code == 404
    assert metrics.headers["content-type"] == "application/problem+json"


def test_a_socket_on_one_copy_receives_messages_sent_through_the_other(topology: Topology) -> None:
    with topology.client() as client:
        alice, bob = login(client, register(client)), login(client, register(client))
        created = client.post(
            "/v1/conversations", json={"type": "direct", "member_id": bob["user_id"]}, headers=bearer(alice)
        )
        cid = created.json()["conversation_id"]

    async def scenario() -> list[dict[str, Any]]:
        context = ssl.create_default_context(cafile=str(topology.ca_file))
        url = f"wss://localhost:{topology.gateway.port}/v1/ws"
        headers = {"Authorization": f"Bearer {alice['access_token']}"}
        async with connect(url, ssl=context, additional_headers=headers, proxy=None) as ws:
            await ws.send(json.dumps({"type": "ping?"}))  # answered once the socket is registered
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "error"
            with topology.client() as client:  # round robin: the sends alternate between the copies
                for _ in range(6):
                    path = f"/v1/conversations/{cid}/messages"
                    assert client.post(path, json=envelope(), headers=bearer(bob)).status_code == 201
            received: list[dict[str, Any]] = []
            while len(received) < 6:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if frame["type"] == "message":
                    received.append(frame["message"])
            return received

    received = asyncio.run(scenario())
    assert [m["seq"] for m in received] == [1, 2, 3, 4, 5, 6]
    sends_per_copy = [
        copy.logs().count('"route":"/v1/conversations/{conversation_id}/messages"')
        for copy in topology.services["messaging"]
    ]
    assert all(count >= 1 for count in sends_per_copy), sends_per_copy


def test_the_client_address_and_request_id_come_from_the_gateway(topology: Topology) -> None:
    with topology.client() as client:
        email = register(client)
        pair = login(client, email, device_name="laptop")
        spoofed = client.post(
            "/v1/auth/login",
            json={"email": email, "password": "correct horse battery staple 7"},
            headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "chosen-by-the-client"},
        )
        assert spoofed.status_code == 200
        request_id = spoofed.headers["x-request-id"]
        sessions = client.get("/v1/auth/sessions", headers=bearer(pair)).json()["items"]
    assert {s["ip"] for s in sessions} == {"127.0.0.1"}
    assert request_id != "chosen-by-the-client" and len(request_id) == 32
    assert any(request_id in copy.logs() for copy in topology.services["auth"])


def test_the_per_ip_auth_limit_holds_across_both_auth_copies(topology: Topology) -> None:
    time.sleep(2.5)  # let the earlier tests' logins refill the bucket (5/s, burst 10)
    with topology.client() as client:
        started = time.monotonic()
        statuses = [
            client.post("/v1/auth/refresh", json={"refresh_token": f"not-a-token-{i}"}).status_code
            for i in range(40)
        ]
        elapsed = time.monotonic() - started
    allowed = statuses.count(401)
    assert statuses.count(429) + allowed == 40
    # One shared bucket: burst 10 plus 5/s while the requests ran. Two separate buckets (one per
    # copy) would have let up to 20 through at once.
    assert allowed <= 10 + 5 * elapsed + 1, (allowed, elapsed)
    rejected_by = [copy.logs().count('"status":429') for copy in topology.services["auth"]]
    assert all(count >= 1 for count in rejected_by), rejected_by


def test_a_service_that_is_down_is_a_503_problem_with_hsts(topology: Topology) -> None:
    for copy in topology.services["files"]:
        copy.stop()
    with topology.client() as client:
        response = client.post("/v1/attachments", json={})
    assert response.status_code == 503
    assert response.headers["strict-transport-security"] == HSTS
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "5"
