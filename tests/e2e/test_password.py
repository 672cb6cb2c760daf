"""Password change and password reset end to end: real server processes, the real mail sink,
PostgreSQL. Codes are read from the messages the development mail sink received, as a user would.

What a password change or reset must end is checked from the outside: refresh and access tokens
of the ended sessions are refused, their WebSockets close with 4401, their device keys are gone
from the directory, the old password stops working at once, and a `pg_dump` holds neither the old
nor the new password (RELIABILITY A1).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support.keys import bundle
from tests.support.mail import body, latest_code, messages_to, wait_for_mail
from tests.support.pgdump import dump
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, new_email, register
from tests.support.ws import next_frame, registered, ws_connect
from veil.core.config import Settings

NEW_PASSWORD = "a brand new passphrase 42"


def signed_in_twice(client: httpx.Client) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An account with two sessions, each a device with keys."""
    email = register(client)
    first, second = login(client, email), login(client, email)
    for session in (first, second):
        assert client.put("/v1/keys", json=bundle(), headers=bearer(session)).status_code == 200
    return email, first, second


def change(client: httpx.Client, who: dict[str, Any], current: str, new: str) -> httpx.Response:
    return client.post(
        "/v1/account/password",
        json={"current_password": current, "new_password": new},
        headers=bearer(who),
    )


def ask_reset(client: httpx.Client, email: str) -> httpx.Response:
    return client.post("/v1/auth/password-reset", json={"email": email})


def confirm_reset(client: httpx.Client, email: str, code: str, new: str = NEW_PASSWORD) -> httpx.Response:
    return client.post(
        "/v1/auth/password-reset/confirm", json={"email": email, "code": code, "new_password": new}
    )


def reset_code(client: httpx.Client, settings: Settings, email: str) -> str:
    """Ask for a reset and read the code from the newest mail."""
    before = len(messages_to(settings, email))
    assert ask_reset(client, email).status_code == 202
    return latest_code(settings, email, count=before + 1)


def login_status(client: httpx.Client, email: str, password: str) -> int:
    return client.post("/v1/auth/login", json={"email": email, "password": password}).status_code


def refresh_status(client: httpx.Client, who: dict[str, Any]) -> int:
    return client.post("/v1/auth/refresh", json={"refresh_token": who["refresh_token"]}).status_code


def device_ids(client: httpx.Client, reader: dict[str, Any], user_id: str) -> set[str]:
    listed = client.get(f"/v1/users/{user_id}/devices", headers=bearer(reader))
    assert listed.status_code == 200, listed.text
    return {item["device_id"] for item in listed.json()["items"]}


def other_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def comparable(response: httpx.Response) -> tuple[int, bytes, tuple[tuple[str, str], ...]]:
    """Status, body and headers, without those that differ on every request anyway."""
    varying = {"date", "x-request-id"}
    return (
        response.status_code,
        response.content,
        tuple(sorted((k, v) for k, v in response.headers.items() if k not in varying)),
    )


async def frames_until_closed(ws: Any) -> None:
    while True:  # events about the account's own devices may come first
        await next_frame(ws, timeout=5)


async def closes_with(ws: Any) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await frames_until_closed(ws)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def assert_no_password_in(database_url: str, *passwords: str) -> None:
    dumped = dump(database_url)
    for password in passwords:
        assert password not in dumped


async def test_a_change_keeps_the_caller_and_ends_every_other_session(
    api: LiveServer, settings: Settings, database_url: str
) -> None:
    with api.client() as client:
        email, mine, other = signed_in_twice(client)
        bystander = login(client, register(client))
        assert device_ids(client, bystander, mine["user_id"]) == {mine["session_id"], other["session_id"]}

        async with ws_connect(api, other) as ws:
            await registered(ws)
            changed = change(client, mine, PASSWORD, NEW_PASSWORD)
            assert changed.status_code == 204, changed.text
            assert await closes_with(ws) == 4401

        # The other session is over: its tokens and its device.
        assert client.get("/v1/account", headers=bearer(other)).status_code == 401
        assert refresh_status(client, other) == 401
        assert device_ids(client, bystander, mine["user_id"]) == {mine["session_id"]}
        # The caller's session stays: its access token, its refresh token, its device.
        assert client.get("/v1/account", headers=bearer(mine)).status_code == 200
        assert refresh_status(client, mine) == 200

        assert login_status(client, email, PASSWORD) == 401
        assert login_status(client, email, NEW_PASSWORD) == 200
        (notice,) = wait_for_mail(settings, email, count=2)[1:]  # after the sign-up code
        assert "password was changed" in str(notice["Subject"])
        assert NEW_PASSWORD not in body(notice) and PASSWORD not in body(notice)
    assert_no_password_in(database_url, PASSWORD, NEW_PASSWORD)


def test_a_wrong_current_password_is_403_and_changes_nothing(api: LiveServer) -> None:
    with api.client() as client:
        email, mine, other = signed_in_twice(client)
        wrong = change(client, mine, PASSWORD + "x", NEW_PASSWORD)
        assert wrong.status_code == 403
        assert wrong.headers["content-type"] == "application/problem+json"
        assert client.get("/v1/account", headers=bearer(other)).status_code == 200
        assert login_status(client, email, PASSWORD) == 200
        assert login_status(client, email, NEW_PASSWORD) == 401
        # The new password follows the sign-up policy; the current one is not checked first.
        assert change(client, mine, PASSWORD, "short").status_code == 422
        common = change(client, mine, PASSWORD, "password123")
        assert common.status_code == 422
        assert common.json()["errors"][0]["loc"] == ["new_password"]
        assert change(client, mine, PASSWORD, NEW_PASSWORD).status_code == 204
        assert (
            client.post(
                "/v1/account/password", json={"current_password": PASSWORD, "new_password": NEW_PASSWORD}
            ).status_code
            == 401
        )


def test_password_change_attempts_are_limited_per_user(make_server: ServerFactory) -> None:
    """A stolen access token cannot guess the current password at the speed of the hash: every
    attempt takes a slot first, so concurrent ones cannot exceed the budget either."""
    server = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000", VEIL_PASSWORD_CHANGES_PER_HOUR="3")
    with server.client() as client:
        email = register(client)
        mine = login(client, email)
        someone = login(client, register(client))

    async def guess(async_client: httpx.AsyncClient, n: int) -> int:
        response = await async_client.post(
            "/v1/account/password",
            json={"current_password": f"guess number {n}", "new_password": NEW_PASSWORD},
            headers=bearer(mine),
        )
        return response.status_code

    async def burst() -> list[int]:
        async with server.async_client() as async_client:
            return await asyncio.gather(*(guess(async_client, n) for n in range(8)))

    statuses = asyncio.run(burst())
    assert sorted(statuses) == [403] * 3 + [429] * 5
    with server.client() as client:
        limited = change(client, mine, PASSWORD, NEW_PASSWORD)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
        # Another user's budget is their own.
        assert change(client, someone, PASSWORD, NEW_PASSWORD).status_code == 204
        assert login_status(client, email, PASSWORD) == 200


def test_a_reset_request_answers_the_same_for_known_and_unknown_addresses(
    api: LiveServer, settings: Settings
) -> None:
    with api.client() as client:
        known, unknown = register(client), new_email()
        answers = [ask_reset(client, address) for address in (unknown, known, unknown.upper(), known)]
        assert all(answer.status_code == 202 for answer in answers)
        assert answers[0].json() == {}
        assert len({comparable(answer) for answer in answers}) == 1

        # The code goes to the known address only (after its sign-up code).
        mails = wait_for_mail(settings, known, count=3)
        assert len(mails) == 3
        assert all("password reset" in str(mail["Subject"]) for mail in mails[1:])
        assert messages_to(settings, unknown) == []

        malformed = ask_reset(client, "not an address")
        assert malformed.status_code == 422


async def test_a_reset_ends_every_session_and_removes_every_device(
    api: LiveServer, settings: Settings, database_url: str
) -> None:
    with api.client() as client:
        email, first, second = signed_in_twice(client)
        bystander = login(client, register(client))
        async with ws_connect(api, first) as ws:
            await registered(ws)
            code = reset_code(client, settings, email)
            # Asking for a reset changes nothing yet: the password still works, sessions stay.
            assert client.get("/v1/account", headers=bearer(first)).status_code == 200
            assert confirm_reset(client, email, code).status_code == 204
            assert await closes_with(ws) == 4401

        for session in (first, second):
            assert client.get("/v1/account", headers=bearer(session)).status_code == 401
            assert refresh_status(client, session) == 401
        assert device_ids(client, bystander, first["user_id"]) == set()
        assert login_status(client, email, PASSWORD) == 401
        assert login_status(client, email, NEW_PASSWORD) == 200

        # Single use: the same code again is the same 400 as an unknown address.
        reused = confirm_reset(client, email, code, "yet another passphrase 9")
        unknown = confirm_reset(client, new_email(), code, "yet another passphrase 9")
        assert reused.status_code == unknown.status_code == 400
        assert reused.content == unknown.content
        assert login_status(client, email, NEW_PASSWORD) == 200

        notice = wait_for_mail(settings, email, count=3)[-1]
        assert "password was reset" in str(notice["Subject"])
    assert_no_password_in(database_url, PASSWORD, NEW_PASSWORD)


def test_wrong_codes_are_one_400_and_a_code_allows_few_attempts(api: LiveServer, settings: Settings) -> None:
    with api.client() as client:
        email = register(client)
        code = reset_code(client, settings, email)
        weak = confirm_reset(client, email, code, "password123")
        assert weak.status_code == 422  # refused before the code is looked at: the code stays usable
        assert confirm_reset(client, email, "12ab56").status_code == 422

        wrong = [confirm_reset(client, email, other_code(code)) for _ in range(5)]
        unknown = confirm_reset(client, new_email(), code)
        assert {w.status_code for w in wrong} == {400}
        assert len({w.content for w in wrong} | {unknown.content}) == 1
        # Five wrong tries used the code up: even the right one is refused now.
        assert confirm_reset(client, email, code).status_code == 400
        assert login_status(client, email, PASSWORD) == 200

        # Two live codes: a wrong guess counts against both, so they do not add up to more tries.
        first = reset_code(client, settings, email)
        second = reset_code(client, settings, email)
        wrong_for_both = next(c for c in (f"{n:06d}" for n in range(10**6)) if c not in (first, second))
        assert [confirm_reset(client, email, wrong_for_both).status_code for _ in range(5)] == [400] * 5
        assert confirm_reset(client, email, first).status_code == 400
        assert confirm_reset(client, email, second).status_code == 400

        # A newer request does not void an older code; using one voids every other.
        old = reset_code(client, settings, email)
        new = reset_code(client, settings, email)
        assert confirm_reset(client, email, old).status_code == 204
        assert login_status(client, email, NEW_PASSWORD) == 200
        if old != new:
            assert confirm_reset(client, email, new, "yet another passphrase 7").status_code == 400
        assert login_status(client, email, NEW_PASSWORD) == 200


async def test_reset_codes_expire(
    api: LiveServer, settings: Settings, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    with api.client() as client:
        email = register(client)
        code = reset_code(client, settings, email)
        stored = await db.fetchrow("SELECT code_hash, expires_at - created_at AS ttl FROM password_resets")
        assert stored is not None and code.encode() not in bytes(stored["code_hash"])
        assert stored["ttl"].total_seconds() == 900
        await db.execute("UPDATE password_resets SET expires_at = now() - interval '1 second'")
        assert confirm_reset(client, email, code).status_code == 400
        assert login_status(client, email, PASSWORD) == 200


def test_reset_mails_are_limited_per_address(make_server: ServerFactory, settings: Settings) -> None:
    """Nobody can bomb a mailbox; over the budget the answer stays the same 202 (for unknown
    addresses too, so nothing tells about an account) and no mail goes out."""
    server = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000", VEIL_PASSWORD_RESETS_PER_HOUR="2")
    with server.client() as client:
        known, unknown = register(client), new_email()
        answers = {address: [ask_reset(client, address) for _ in range(4)] for address in (known, unknown)}
        assert len({comparable(a) for replies in answers.values() for a in replies}) == 1
        assert {a.status_code for replies in answers.values() for a in replies} == {202}
        assert len(wait_for_mail(settings, known, count=3)) == 3  # sign-up code and two reset codes
        assert messages_to(settings, unknown) == []
        time.sleep(1)  # a late third reset mail would have arrived by now
        assert len(messages_to(settings, known)) == 3


def test_a_third_party_cannot_block_the_owners_reset(make_server: ServerFactory, settings: Settings) -> None:
    """Someone who asks for resets of another person's address, more often than the per-address
    budget allows, neither voids the code its owner holds nor gets the owner's request refused."""
    server = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")  # 5 reset mails an hour
    with server.client() as owner, server.client() as stranger:
        email = register(owner)
        code = reset_code(owner, settings, email)
        assert [ask_reset(stranger, email).status_code for _ in range(6)] == [202] * 6
        assert ask_reset(owner, email).status_code == 202
        # The budget let four of the stranger's requests through; those codes are live as well.
        others = {latest_code(settings, email, count=n) for n in range(3, 7)} - {code}
        assert confirm_reset(owner, email, code).status_code == 204
        assert login_status(owner, email, NEW_PASSWORD) == 200
        # Every other live code went with the reset.
        for other in others:
            assert confirm_reset(stranger, email, other, "a stranger's passphrase 9").status_code == 400
        assert login_status(owner, email, NEW_PASSWORD) == 200


def test_reset_requests_count_against_the_per_ip_auth_limit(server: LiveServer) -> None:
    with server.client() as client:
        statuses = [ask_reset(client, new_email()).status_code for _ in range(12)]
    assert statuses.count(429) >= 5
    assert statuses[:5] == [202] * 5


@pytest.mark.parametrize("limiter_store", ["postgres", "memory"])
def test_a_reset_lifts_the_failed_login_lock_out(
    make_server: ServerFactory, settings: Settings, limiter_store: str
) -> None:
    """With either limiter store: the budgets live in the memory of the process with
    VEIL_RATE_LIMIT_STORE=memory, where deleting rows of `rate_limits` would clear nothing."""
    server = make_server(
        VEIL_AUTH_RATE="1000",
        VEIL_AUTH_BURST="1000",
        VEIL_LOGIN_FAILURES="3",
        VEIL_RATE_LIMIT_STORE=limiter_store,
    )
    with server.client() as client:
        email = register(client)
        for _ in range(3):
            assert login_status(client, email, "not the password 1") == 401
        assert login_status(client, email, PASSWORD) == 429  # this address used up its failures
        code = reset_code(client, settings, email)
        assert confirm_reset(client, email, code).status_code == 204
        assert login_status(client, email, NEW_PASSWORD) == 200
