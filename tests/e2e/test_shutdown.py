"""SIGTERM stops accepting, lets the request in flight finish, closes the pools and exits 0."""

from __future__ import annotations

import json
import socket
import time

from tests.support.server import LiveServer


def test_sigterm_drains_the_request_in_flight(api: LiveServer) -> None:
    body = json.dumps({"email": "someone@example.org", "password": "whatever password"}).encode()
    raw = socket.create_connection(("127.0.0.1", api.port), timeout=10)
    tls = api.ssl_context().wrap_socket(raw, server_hostname="localhost")
    head = (
        "POST /v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    # The request is in flight: headers and half the body sent, the handler waiting for the rest.
    tls.sendall(head + body[:10])
    time.sleep(0.5)
    api.terminate()
    time.sleep(1.0)
    assert api.process.poll() is None, "the server must wait for the request in flight"

    tls.sendall(body[10:])
    response = b""
    while chunk := tls.recv(65536):
        response += chunk
    tls.close()
    assert response.startswith(b"HTTP/1.1 401"), response[:200]

    assert api.wait(timeout=20) == 0
    refused = False
    try:
        socket.create_connection(("127.0.0.1", api.port), timeout=2).close()
    except OSError:
        refused = True
    assert refused, "a stopped server accepts nothing"
