"""Readiness follows the backing services: 503 while one is down, 200 again once it is back,
without restarting Veil; liveness stays 200 throughout."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.server import LiveServer
from veil.devstack.stack import DevStack

pytestmark = pytest.mark.slow


def _wait_for_status(client: httpx.Client, path: str, status: int, within: float) -> float:
    started = time.monotonic()
    while True:
        response = client.get(path)
        if response.status_code == status:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{path} stayed {response.status_code}, wanted {status} within {within}s")
        time.sleep(0.2)


def test_readiness_follows_postgres(server: LiveServer, stack: DevStack) -> None:
    assert stack.postgres is not None, "needs the embedded PostgreSQL"
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        stack.postgres.stop(mode="immediate")
        try:
            _wait_for_status(client, "/readyz", 503, within=5)
            body = client.get("/readyz").json()
            assert body["checks"] == {"database": "unavailable", "object_store": "ok"}
            assert client.get("/livez").status_code == 200
        finally:
            stack.postgres.start()
        _wait_for_status(client, "/readyz", 200, within=10)


def test_readiness_follows_the_object_store(server: LiveServer, stack: DevStack) -> None:
    assert stack.s3 is not None, "needs the embedded S3 server"
    with server.client() as client:
        assert client.get("/readyz").status_code == 200
        stack.s3.stop()
        try:
            _wait_for_status(client, "/readyz", 503, within=15)
            assert client.get("/readyz").json()["checks"]["object_store"] == "unavailable"
            assert client.get("/healthz").status_code == 200
        finally:
            stack.s3.start()
        _wait_for_status(client, "/readyz", 200, within=15)
