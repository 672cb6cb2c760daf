"""Sign-up with an emailed code, without an account oracle; registration modes and invites."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time

import asyncpg
import httpx

from tests.conftest import ServerFactory
from tests.support.mail import body, messages_to, wait_for_mail
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, new_email, register, request_signup
from veil.core.blobstore import BlobStore
from veil.core.clock import SystemClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.maintenance import Maintenance

FAST_AUTH = {"VEIL_AUTH_RATE": "10000", "VEIL_AUTH_BURST": "10000"}


def _verify(client: httpx.Client, email: str, code: str) -> httpx.Response:
    return client.post("/v1/auth/register/verify", json={"email": email, "code": code})


def test_no_account_exists_until_the_code_is_confirmed(api: LiveServer) -> None:
    with api.client() as client:
        email = new_email()
        code = request_signup(client, email)
        refused = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert refused.status_code == 401
        created = _verify(client, email, code)
        assert created.status_code == 201
        assert login(client, email)["user_id"] == created.json()["user_id"]
        account = client.get("/v1/account", headers=bearer(login(client, email)))
        assert account.json()["email_verified"] is True


def test_taken_address_answers_like_a_new_one_and_mails_its_owner_a_notice(
    api: LiveServer, settings: Settings
) -> None:
    with api.client() as client:
        email = register(client)
        fresh = new_email()
        taken = client.post("/v1/auth/register", json={"email": email.upper(), "password": PASSWORD})
        new = client.post("/v1/auth/register", json={"email": fresh, "password": PASSWORD})
        assert taken.status_code == new.status_code == 202
        assert taken.content == new.content == b"{}"
        varying = {"date", "x-request-id"}
        assert {k: v for k, v in taken.headers.items() if k not in varying} == {
            k: v for k, v in new.headers.items() if k not in varying
        }
        notice = wait_for_mail(settings, email, count=2)[-1]
        assert "Nothing was changed" in body(notice)
        assert "sign up" in str(notice["Subject"]).lower()
        # The notice carries no code, and no code can create a second account for the address.
        assert not any(ch.isdigit() for ch in body(notice))
        for code in ("000000", "123456"):
            assert _verify(client, email, code).status_code == 400


def test_taken_and_new_addresses_take_the_same_time(api: LiveServer) -> None:
    """Both paths hash the password and send one mail: medians within 10 % (RELIABILITY A3)."""
    with api.client() as client:
        taken = register(client)

        def timed(email: str) -> float:
            started = time.perf_counter()
            response = client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
            assert response.status_code == 202
            return time.perf_counter() - started

        # Alternate, so that drift of a busy machine hits both alike; fresh addresses each time.
        samples: dict[str, list[float]] = {"taken": [], "new": []}
        for _ in range(4):
            samples["taken"].append(timed(taken))
            samples["new"].append(timed(new_email()))
    a, b = statistics.median(samples["taken"]), statistics.median(samples["new"])
    assert abs(a - b) / max(a, b) < 0.35, samples


def test_wrong_expired_used_codes_are_one_400(api: LiveServer, settings: Settings) -> None:
    with api.client() as client:
        email = new_email()
        code = request_signup(client, email)
        wrong = _verify(client, email, "000000" if code != "000000" else "111111")
        unknown = _verify(client, new_email(), code)
        assert wrong.status_code == unknown.status_code == 400
        assert wrong.json() == unknown.json()
        assert _verify(client, email, code).status_code == 201
        used = _verify(client, email, code)
        assert used.status_code == 400 and used.json() == wrong.json()


def test_a_code_allows_few_attempts(api: LiveServer) -> None:
    with api.client() as client:
        email = new_email()
        code = request_signup(client, email)
        other = f"{(int(code) + 1) % 10**6:06d}"
        for _ in range(5):
            assert _verify(client, email, other).status_code == 400
        assert _verify(client, email, code).status_code == 400  # spent by the wrong attempts
        # A new request starts over with a new code.
        assert _verify(client, email, request_signup(client, email)).status_code == 201


def test_nobody_can_replace_or_cancel_someone_elses_pending_sign_up(api: LiveServer) -> None:
    """Account pre-hijacking: a second request for the victim's address, with the attacker's
    password, neither cancels the victim's code nor puts the attacker's password on the account."""
    with api.client() as client:
        email = new_email()
        victims = request_signup(client, email)
        attackers = request_signup(client, email, password=PASSWORD + " attacker")
        assert _verify(client, email, victims).status_code == 201
        login(client, email)
        refused = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD + " attacker"})
        assert refused.status_code == 401
        # Confirming one request ends the others: their codes no longer work.
        if attackers != victims:
            assert _verify(client, email, attackers).status_code == 400


async def test_codes_expire(api: LiveServer, db: asyncpg.Connection[asyncpg.Record]) -> None:
    with api.client() as client:
        email = new_email()
        code = request_signup(client, email)
        # The server's clock is real: move the pending sign-up's expiry instead of waiting 15 min.
        await db.execute(
            "UPDATE signups SET expires_at = now() - interval '1 second' WHERE email = $1", email
        )
        assert _verify(client, email, code).status_code == 400


def test_sign_up_mails_per_address_are_limited(make_server: ServerFactory, settings: Settings) -> None:
    api = make_server(VEIL_SIGNUP_MAILS_PER_HOUR="2", **FAST_AUTH)
    with api.client() as client:
        email = new_email()
        statuses = [
            client.post("/v1/auth/register", json={"email": email, "password": PASSWORD}).status_code
            for _ in range(3)
        ]
    # Over the budget the answer stays 202 (a 429 would let anyone block the owner's sign-up), and
    # nothing more is mailed.
    assert statuses == [202, 202, 202]
    time.sleep(1)
    assert len(messages_to(settings, email)) == 2


def test_closed_registration_is_403(make_server: ServerFactory) -> None:
    api = make_server(VEIL_REGISTRATION="closed", **FAST_AUTH)
    with api.client() as client:
        response = client.post("/v1/auth/register", json={"email": new_email(), "password": PASSWORD})
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"


def _shell(database_url: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url}


def test_invite_only_registration_takes_codes_from_the_shell(
    make_server: ServerFactory, database_url: str
) -> None:
    api = make_server(VEIL_REGISTRATION="invite", **FAST_AUTH)
    made = subprocess.run(
        [sys.executable, "-m", "veil.cli", "invites", "create", "--uses", "1", "--expires", "1h"],
        env=_shell(database_url),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    invite = made.stdout.strip()
    assert invite and invite not in made.stderr
    with api.client() as client:
        without = client.post("/v1/auth/register", json={"email": new_email(), "password": PASSWORD})
        forged = client.post(
            "/v1/auth/register", json={"email": new_email(), "password": PASSWORD, "invite_code": "nope"}
        )
        assert without.status_code == forged.status_code == 403
        first = register(client, invite_code=invite)
        login(client, first)
        # One use: the second sign-up with it is refused.
        spent = client.post(
            "/v1/auth/register", json={"email": new_email(), "password": PASSWORD, "invite_code": invite}
        )
        assert spent.status_code == 403


def test_a_one_use_invite_creates_one_account_however_many_sign_ups_used_it(
    make_server: ServerFactory, database_url: str, blobs: BlobStore
) -> None:
    api = make_server(VEIL_REGISTRATION="invite", **FAST_AUTH)
    invite = subprocess.run(
        [sys.executable, "-m", "veil.cli", "invites", "create", "--uses", "1"],
        env=_shell(database_url),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    with api.client() as client:
        first, second = new_email(), new_email()
        codes = [request_signup(client, email, invite_code=invite) for email in (first, second)]
        assert _verify(client, first, codes[0]).status_code == 201
        assert _verify(client, second, codes[1]).status_code == 403  # the invite is spent
    # Once maintenance forgets the spent invite, its pending sign-ups go with it.
    asyncio.run(_maintenance_round(database_url, blobs))
    with api.client() as client:
        assert _verify(client, second, codes[1]).status_code == 400


def test_sign_ups_started_before_registration_closed_are_refused(
    make_server: ServerFactory,
) -> None:
    open_server = make_server(**FAST_AUTH)
    with open_server.client() as client:
        email = new_email()
        code = request_signup(client, email)
    open_server.stop()
    closed = make_server(VEIL_REGISTRATION="closed", **FAST_AUTH)
    with closed.client() as client:
        assert _verify(client, email, code).status_code == 400


async def _maintenance_round(database_url: str, blobs: BlobStore) -> None:
    db = Database(database_url, max_size=1, timeout=5, metrics=Metrics())
    await db.open()
    try:
        await Maintenance(db, blobs, SystemClock()).run_once()
    finally:
        await db.close()


def test_bad_invite_options_are_refused_by_the_shell(database_url: str) -> None:
    for bad in (["--uses", "0"], ["--uses", "²"], ["--expires", "7 days"], ["--expires", "0d"]):
        result = subprocess.run(
            [sys.executable, "-m", "veil.cli", "invites", "create", *bad],
            env=_shell(database_url),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, bad
        assert "Traceback" not in result.stderr
