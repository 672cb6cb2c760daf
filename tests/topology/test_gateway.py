"""The production topology on one machine: the nginx gateway of deploy/nginx in front of separate
service processes (two copies each of auth and messaging, one of keys, files and account) sharing
one database and object store. Everything is driven through the gateway only.

Needs nginx (`apt-get install nginx`). Without it these tests are skipped with a message, unless
VEIL_REQUIRE_NGINX=1 (set by CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.gateway import Topology
from tests.support.messaging import envelope
from tests.support.tls_probe import EXPECTED, INTERMEDIATE, OUTSIDE, accepted_groups, negotiated_group
from tests.support.users import bearer, login, register

HSTS = "max-age=63072000; includeSubDomains"


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


def test_only_the_intermediate_groups_complete_a_handshake(topology: Topology) -> None:
    """The template offered X448, P-521 and the finite-field groups (OpenSSL's default) until
    `ssl_ecdh_curve` named the profile's three."""
    port = topology.gateway.port
    assert accepted_groups(port, INTERMEDIATE, "1.3") == EXPECTED
    assert accepted_groups(port, OUTSIDE, "1.3") == dict.fromkeys(OUTSIDE)
    assert negotiated_group(port, "P-256", "1.2") == EXPECTED["P-256"]
    assert negotiated_group(port, "X448:P-521", "1.2") is None


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
