"""A4: failed-login budgets bound guessing, but nobody else's failures keep the owner out.

Behind a trusted gateway (VEIL_TRUSTED_PROXIES) each request can come from another client address
(`X-Forwarded-For`), which is how these tests play an attacker and the owner at different places.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import ServerFactory
from tests.support.mail import latest_code, messages_to
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, login, register
from veil.core.config import Settings

ATTACKER = "203.0.113.7"
OWNER = "192.0.2.1"


def _gateway(make_server: ServerFactory) -> LiveServer:
    return make_server(
        VEIL_TRUSTED_PROXIES="127.0.0.1/32",
        VEIL_LOGIN_FAILURES="10",
        VEIL_AUTH_RATE="10000",
        VEIL_AUTH_BURST="10000",
    )


def _login(client: httpx.Client, email: str, password: str, ip: str, **extra: Any) -> httpx.Response:
    return client.post(
        "/v1/auth/login",
        json={"email": email, "password": password, **extra},
        headers={"X-Forwarded-For": ip},
    )


def test_ten_wrong_passwords_from_one_address_do_not_keep_the_owner_out(make_server: ServerFactory) -> None:
    api = _gateway(make_server)
    with api.client() as client:
        email = register(client)
        device_token = _login(client, email, PASSWORD, OWNER).json()["device_token"]
        statuses = [_login(client, email, f"wrong {i}", ATTACKER).status_code for i in range(12)]
        assert statuses == [401] * 10 + [429, 429]
        # The attacker's address stays refused, even with the right password (no oracle)...
        assert _login(client, email, PASSWORD, ATTACKER).status_code == 429
        # ...but the owner signs in from elsewhere, and from a known device anywhere.
        assert _login(client, email, PASSWORD, "198.51.100.20").status_code == 200
        known = _login(client, email, PASSWORD, ATTACKER, device_token=device_token)
        assert known.status_code == 200
        assert known.json()["device_token"] == device_token


def test_guessing_across_addresses_costs_a_fresh_address_per_guess(make_server: ServerFactory) -> None:
    api = _gateway(make_server)
    with api.client() as client:
        email = register(client)
        device_token = login(client, email)["device_token"]
        # Ten failures from ten addresses spend the account's budget...
        assert [_login(client, email, "wrong", f"203.0.113.{i}").status_code for i in range(10)] == [401] * 10
        # ...after which an address that has failed before is refused at once,
        for i in range(10):
            assert _login(client, email, "wrong again", f"203.0.113.{i}").status_code == 429
        # while the owner, from a new address or a known device, still signs in.
        assert _login(client, email, PASSWORD, OWNER).status_code == 200
        assert _login(client, email, PASSWORD, "203.0.113.3", device_token=device_token).status_code == 200
        # A forged or foreign device token is no key: the address stays refused.
        other = register(client)
        foreign = login(client, other)["device_token"]
        for token in ("forged-token", foreign):
            assert _login(client, email, PASSWORD, "203.0.113.3", device_token=token).status_code == 429


def test_the_owners_known_device_has_its_own_budget(make_server: ServerFactory) -> None:
    api = _gateway(make_server)
    with api.client() as client:
        email = register(client)
        token = login(client, email)["device_token"]
        statuses = [_login(client, email, "typo", OWNER, device_token=token).status_code for _ in range(11)]
        assert statuses == [401] * 10 + [429]
        # The owner's own typos on that device do not touch other places.
        assert _login(client, email, PASSWORD, "198.51.100.30").status_code == 200


def test_a_right_password_gives_its_slot_back(make_server: ServerFactory) -> None:
    api = _gateway(make_server)
    with api.client() as client:
        email = register(client)
        for _ in range(9):
            assert _login(client, email, "wrong", ATTACKER).status_code == 401
        for _ in range(5):  # successes do not spend the last slot
            assert _login(client, email, PASSWORD, ATTACKER).status_code == 200
        assert _login(client, email, "wrong", ATTACKER).status_code == 401
        assert _login(client, email, "wrong", ATTACKER).status_code == 429


async def test_concurrent_guesses_cannot_exceed_the_budget(make_server: ServerFactory) -> None:
    """At 9 failures, 5 concurrent wrong logins: exactly one is evaluated (the slot is taken before
    the password is checked), not all five."""
    api = _gateway(make_server)
    with api.client() as client:
        email = register(client)
        for _ in range(9):
            assert _login(client, email, "wrong", ATTACKER).status_code == 401
    async with api.async_client() as client:
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v1/auth/login",
                    json={"email": email, "password": f"guess {i}"},
                    headers={"X-Forwarded-For": ATTACKER},
                )
                for i in range(5)
            )
        )
    assert sorted(r.status_code for r in responses) == [401, 429, 429, 429, 429]
    assert api.logs().count('"kind":"login_failed"') == 10


def test_unknown_accounts_are_limited_like_known_ones(make_server: ServerFactory) -> None:
    api = _gateway(make_server)
    with api.client() as client:
        known = register(client)
        unknown = "nobody-" + known
        for email in (known, unknown):
            statuses = [_login(client, email, "wrong", ATTACKER).status_code for _ in range(11)]
            assert statuses == [401] * 10 + [429], email


def test_an_address_that_failed_gets_no_new_guess_until_its_window_is_over(
    make_server: ServerFactory,
) -> None:
    """Once the account's budget is spent, an address that failed this window stays refused even
    after one interval has passed (only the account budget's own refill lets one guess through)."""
    api = make_server(
        VEIL_TRUSTED_PROXIES="127.0.0.1/32",
        VEIL_LOGIN_FAILURES="2",
        VEIL_LOGIN_FAILURE_WINDOW="8",  # one interval: 4 s
        VEIL_AUTH_RATE="10000",
        VEIL_AUTH_BURST="10000",
    )
    addresses = [f"203.0.113.{i}" for i in range(4)]
    with api.client() as client:
        email = register(client)
        assert [_login(client, email, "wrong", ip).status_code for ip in addresses] == [401] * 4
        time.sleep(4.5)
        statuses = [_login(client, email, "wrong again", ip).status_code for ip in addresses]
    # The account budget refilled one slot in the interval; nothing else gets through.
    assert sorted(statuses) == [401, 429, 429, 429]


def test_an_ipv6_network_counts_as_one_address(make_server: ServerFactory) -> None:
    api = _gateway(make_server)
    with api.client() as client:
        email = register(client)
        statuses = [_login(client, email, "wrong", f"2001:db8:0:7::{i:x}").status_code for i in range(1, 12)]
        assert statuses == [401] * 10 + [429]
        assert _login(client, email, PASSWORD, "2001:db8:0:7::beef").status_code == 429
        assert _login(client, email, PASSWORD, "2001:db8:0:8::1").status_code == 200


async def test_a_login_racing_a_password_reset_never_outlives_it(
    make_server: ServerFactory, settings: Settings
) -> None:
    """A login that checked the old password while a reset committed must not end up with a live
    session: the reset's "old password stops working at once" holds under concurrency."""
    api = _gateway(make_server)
    with api.client() as client:
        email = register(client)
    async with api.async_client() as client:
        for round_number in range(4):
            old = PASSWORD if round_number == 0 else f"{PASSWORD} {round_number}"
            new = f"{PASSWORD} {round_number + 1}"
            before = len(messages_to(settings, email))
            asked = await client.post("/v1/auth/password-reset", json={"email": email})
            assert asked.status_code == 202
            code = await asyncio.to_thread(latest_code, settings, email, count=before + 1)
            logged_in, reset = await asyncio.gather(
                client.post("/v1/auth/login", json={"email": email, "password": old}),
                client.post(
                    "/v1/auth/password-reset/confirm",
                    json={"email": email, "code": code, "new_password": new},
                ),
            )
            assert reset.status_code == 204, reset.text
            if logged_in.status_code == 200:
                token = logged_in.json()["access_token"]
                sessions = await client.get("/v1/auth/sessions", headers={"Authorization": f"Bearer {token}"})
                assert sessions.status_code == 401, (
                    f"round {round_number}: the old password outlived the reset"
                )
            else:
                assert logged_in.status_code == 401
            refused = await client.post("/v1/auth/login", json={"email": email, "password": old})
            assert refused.status_code == 401
