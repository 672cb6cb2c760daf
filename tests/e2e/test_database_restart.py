"""A PostgreSQL restart under a running server: readiness turns 503 quickly, requests fail fast
with 503 instead of hanging, and the same process recovers by itself when the database returns."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import ServerFactory
from tests.support.users import bearer, login, register
from veil.devstack.stack import DevStack

DB_TIMEOUT = 2.0


def wait_for_status(client: httpx.Client, path: str, status: int, within: float) -> float:
    """Seconds until `path` answers `status`; fails after `within`."""
    started = time.monotonic()
    while True:
        try:
            if client.get(path).status_code == status:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > within:
            pytest.fail(f"{path} did not answer {status} within {within} s")
        time.sleep(0.1)


def test_readiness_and_requests_follow_the_database(make_server: ServerFactory, stack: DevStack) -> None:
    if stack.postgres is None:
        pytest.skip("DATABASE_URL points at an external server; this test restarts the embedded one")
    server = make_server(VEIL_DB_TIMEOUT=str(DB_TIMEOUT), VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    pid = server.process.pid
    with server.client() as client:
        alice = login(client, register(client))
        assert client.get("/v1/conversations", headers=bearer(alice)).status_code == 200

        stack.postgres.stop(mode="immediate")
        try:
            assert wait_for_status(client, "/readyz", 503, within=5) < 5
            started = time.monotonic()
            during = client.get("/v1/conversations", headers=bearer(alice))
            assert time.monotonic() - started < 2 * DB_TIMEOUT + 1  # no request hangs
            assert during.status_code == 503
            assert during.headers["content-type"] == "application/problem+json"
            assert during.headers["retry-after"]
            # Security decisions fail closed: a login cannot be checked, so it is refused.
            assert (
                client.post(
                    "/v1/auth/login", json={"email": "x@example.org", "password": "y" * 12}
                ).status_code
                == 503
            )
        finally:
            stack.postgres.start()

        assert wait_for_status(client, "/readyz", 200, within=10) < 10
        assert client.get("/v1/conversations", headers=bearer(alice)).status_code == 200
        assert login(client, register(client))["access_token"]
    assert server.process.poll() is None and server.process.pid == pid  # no restart was needed
