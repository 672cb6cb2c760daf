"""The foundation, seen from outside: a real `veil serve` process over TLS."""

from __future__ import annotations

import socket
import ssl

import pytest

from tests.support.server import LiveServer

HSTS = "max-age=63072000; includeSubDomains"


def test_health_readiness_metrics_and_openapi(server: LiveServer) -> None:
    with server.client() as client:
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok"}

        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "checks": {"database": "ok", "object_store": "ok"},
        }

        openapi = client.get("/v1/openapi.json")
        assert openapi.status_code == 200
        document = openapi.json()
        assert document["openapi"].startswith("3.1")
        assert {"/healthz", "/readyz", "/metrics", "/v1/openapi.json"} <= set(document["paths"])

        client.get("/no/such/path/3f9a")
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
        assert 'veil_http_requests_total{method="GET",route="/readyz",status="200"}' in text
        assert "veil_http_request_duration_seconds_bucket" in text
        # Labels carry route templates only, never a raw path.
        assert "/no/such/path/3f9a" not in text
        assert 'route="<unmatched>",status="404"' in text


@pytest.mark.parametrize("token", [None, "Bearer not-a-token"])
def test_unknown_path_is_a_404_problem_with_or_without_token(server: LiveServer, token: str | None) -> None:
    headers = {"Authorization": token} if token else {}
    with server.client() as client:
        response = client.get("/v1/nothing-here", headers=headers)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == 404
    assert {"type", "title", "detail"} <= set(body)


def test_wrong_method_is_a_405_problem_with_allow(server: LiveServer) -> None:
    with server.client() as client:
        response = client.delete("/healthz")
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/problem+json"
    assert "GET" in response.headers["allow"]
    assert response.json()["status"] == 405


def test_trailing_slash_is_not_redirected(server: LiveServer) -> None:
    with server.client() as client:
        assert client.get("/healthz/").status_code == 404


@pytest.mark.parametrize(("method", "path"), [("GET", "/healthz"), ("GET", "/nope"), ("PUT", "/readyz")])
def test_every_response_carries_hsts_and_no_store(server: LiveServer, method: str, path: str) -> None:
    with server.client() as client:
        response = client.request(method, path)
    assert response.headers["strict-transport-security"] == HSTS
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert len(response.headers["x-request-id"]) >= 16


def _handshake(server: LiveServer, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


def test_tls_13_is_negotiated(server: LiveServer) -> None:
    with _handshake(server, server.ssl_context()) as tls:
        assert tls.version() == "TLSv1.3"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_are_refused(server: LiveServer, version: ssl.TLSVersion) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.ca_file)
    context.set_ciphers("ALL:@SECLEVEL=0")  # let the client *offer* old protocols
    context.minimum_version = version
    context.maximum_version = version
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(server, context).close()


def test_tls_12_accepts_only_forward_secret_aead_suites(server: LiveServer) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with _handshake(server, context) as tls:
        assert tls.version() == "TLSv1.2"
        cipher = tls.cipher()
        assert (
            cipher is not None
            and cipher[0].startswith("ECDHE-")
            and ("GCM" in cipher[0] or "CHACHA" in cipher[0])
        )

    weak = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    weak.load_verify_locations(server.ca_file)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")  # static RSA, no forward secrecy
    with pytest.raises(ssl.SSLError):
        _handshake(server, weak).close()


def test_log_lines_are_json_and_never_carry_the_authorization_header(server: LiveServer) -> None:
    canary = "canary-4d1b6e0f"
    with server.client() as client:
        client.get("/v1/whatever", headers={"Authorization": f"Bearer {canary}", "X-Api-Key": canary})
        client.get("/healthz", params={"token": canary})
    logs = server.logs()
    assert canary not in logs
    assert '"event":"request"' in logs
