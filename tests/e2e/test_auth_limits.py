"""A3/A4/A5: rate limits per client IP and per account, unforgeable keys, no enumeration by timing."""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx

from tests.conftest import ServerFactory
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, login, new_email, register


async def _burst(
    server: LiveServer, count: int, headers: list[dict[str, str]] | None = None
) -> list[httpx.Response]:
    async with server.async_client() as client:
        return await asyncio.gather(
            *(
                client.post(
                    "/v1/auth/login",
                    json={"email": new_email(), "password": PASSWORD},
                    headers=headers[i] if headers else None,
                )
                for i in range(count)
            )
        )


async def test_auth_endpoints_allow_5_per_second_per_ip_with_a_burst_of_5(server: LiveServer) -> None:
    started = time.monotonic()
    responses = await _burst(server, 50)
    elapsed = time.monotonic() - started
    admitted = [r for r in responses if r.status_code != 429]
    limited = [r for r in responses if r.status_code == 429]
    # A burst of 5 at once, then 5/s: at most 5 + 5 x elapsed (+1 for rounding at the edges).
    assert 5 <= len(admitted) <= 5 + 5 * elapsed + 1
    assert all(r.status_code == 401 for r in admitted)
    assert limited
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
    assert limited[0].headers["content-type"] == "application/problem+json"
    assert '"kind":"rate_limited"' in server.logs()


async def test_x_forwarded_for_from_an_untrusted_peer_does_not_move_the_limit(server: LiveServer) -> None:
    spoofed = [{"X-Forwarded-For": f"198.51.100.{i}"} for i in range(50)]
    responses = await _burst(server, 50, spoofed)
    assert sum(r.status_code != 429 for r in responses) <= 12


def test_failed_logins_are_limited_per_account_across_ips(make_server: ServerFactory) -> None:
    # Behind a trusted gateway each request comes from another client address, so only the
    # per-account limit can stop the guessing.
    gateway = make_server(VEIL_TRUSTED_PROXIES="127.0.0.1/32", VEIL_LOGIN_FAILURES="10")
    with gateway.client() as client:
        email = register(client)
        statuses = []
        for i in range(12):
            response = client.post(
                "/v1/auth/login",
                json={"email": email, "password": "wrong password " + str(i)},
                headers={"X-Forwarded-For": f"203.0.113.{i}"},
            )
            statuses.append(response.status_code)
        assert statuses[:10] == [401] * 10
        assert statuses[10:] == [429, 429]
        # Even the right password waits out the window: no oracle, but no permanent lockout either
        # (Retry-After is at most the window).
        blocked = client.post(
            "/v1/auth/login",
            json={"email": email, "password": PASSWORD},
            headers={"X-Forwarded-For": "192.0.2.1"},
        )
        assert blocked.status_code == 429
        assert 1 <= int(blocked.headers["retry-after"]) <= 900
        # Another account is unaffected.
        other = register(client)
        login(client, other)


def test_unknown_email_and_wrong_password_take_the_same_time(make_server: ServerFactory) -> None:
    server = make_server(VEIL_RATE_LIMITS="off")
    samples = 60
    with server.client() as client:
        email = register(client)
        unknown_times, wrong_times = [], []
        for i in range(samples * 2):
            # Interleaved so that drift in machine load hits both series alike.
            target = new_email() if i % 2 else email
            started = time.perf_counter()
            response = client.post("/v1/auth/login", json={"email": target, "password": "not the password"})
            (unknown_times if i % 2 else wrong_times).append(time.perf_counter() - started)
            assert response.status_code == 401
    unknown, wrong = statistics.median(unknown_times), statistics.median(wrong_times)
    assert abs(unknown - wrong) / max(unknown, wrong) < 0.10, (unknown, wrong)
