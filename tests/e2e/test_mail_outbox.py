"""Mail goes through the outbox, end to end: real server processes, real SMTP servers (the stack's
sink, or one of the test's own that it stops and starts), PostgreSQL.

A request whose mail cannot be sent now is accepted all the same, and the mail goes out when the
mail server is back; a worker in another process sends what one process queued; mail queued by a
change that rolls back is never sent; retries show in the metrics.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerFactory
from tests.support.mail import MailServerOfItsOwn, body, latest_code, messages_to, wait_for_mail
from tests.support.server import LiveServer, free_port
from tests.support.users import PASSWORD, bearer, login, new_email, register
from veil.core.config import Settings
from veil.devstack import mailbox

LIMITS = {"VEIL_AUTH_RATE": "10000", "VEIL_AUTH_BURST": "10000"}
# Retries a fraction of a second apart, so that a test sees several.
FAST_RETRIES = {"VEIL_MAIL_RETRY_FIRST": "0.2", "VEIL_MAIL_RETRY_MAX": "0.4", **LIMITS}


def user(client: httpx.Client) -> dict[str, Any]:
    email = register(client)
    return {**login(client, email), "email": email}


def ask(client: httpx.Client, who: dict[str, Any], **request: Any) -> httpx.Response:
    return client.post("/v1/account/requests", json=request, headers=bearer(who))


def confirm(client: httpx.Client, who: dict[str, Any], request_id: str, code: str) -> httpx.Response:
    return client.post(f"/v1/account/requests/{request_id}/confirm", json={"code": code}, headers=bearer(who))


def mail_metrics(server: LiveServer) -> dict[str, float]:
    """The outbox metrics of one process: mails by outcome, and the queue it last saw."""
    with server.client() as client:
        text = client.get("/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "veil_mail_outbox_mails_total":
                found[sample.labels["outcome"]] = sample.value
            elif sample.name == "veil_mail_outbox_queued":
                found["queued"] = sample.value
    return found


async def queued_for(db: asyncpg.Connection[asyncpg.Record], address: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM mail_outbox WHERE recipient = $1", address))


async def wait_for_attempts(
    db: asyncpg.Connection[asyncpg.Record], address: str, attempts: int
) -> asyncpg.Record:
    deadline = time.monotonic() + 10
    while True:
        row = await db.fetchrow("SELECT attempts, last_error FROM mail_outbox WHERE recipient = $1", address)
        if row is not None and row["attempts"] >= attempts:
            return row
        assert time.monotonic() < deadline, f"no {attempts} attempts: {row}"
        await asyncio.sleep(0.05)


async def test_a_request_is_accepted_while_the_mail_server_is_down_and_mailed_once_it_is_back(
    make_server: ServerFactory, db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    # Sign up through a process that mails through the stack's sink, then leave it.
    helper = make_server(**LIMITS)
    with helper.client() as client:
        alice = user(client)
    helper.stop()

    with MailServerOfItsOwn(tmp_path / "mail") as smtp:
        smtp.stop()
        server = make_server(SMTP_PORT=str(smtp.port), **FAST_RETRIES)
        with server.client() as client:
            started = time.monotonic()
            asked = ask(client, alice, type="export")
            assert asked.status_code == 202, asked.text
            assert time.monotonic() - started < 2  # nobody waited for the mail server

            row = await wait_for_attempts(db, alice["email"], 3)
            assert row["last_error"] == "SMTPConnectError"  # the kind only, never the reply text
            seen = mail_metrics(server)
            assert seen["retried"] >= 2
            assert seen["queued"] == 1
            assert (seen["sent"], seen["failed"]) == (0, 0)
            assert mailbox.messages_to(smtp.directory, alice["email"]) == []

            smtp.start()
            code = mailbox.wait_for_code(smtp.directory, alice["email"])
            done = confirm(client, alice, asked.json()["request_id"], code)
            assert done.status_code in (200, 202), done.text
    assert await queued_for(db, alice["email"]) == 0  # sent, so gone at once
    assert mail_metrics(server)["sent"] == 1
    assert len(mailbox.messages_to(smtp.directory, alice["email"])) == 1  # sent once


async def test_a_worker_in_another_process_sends_what_one_process_queued(
    make_server: ServerFactory, settings: Settings, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    sending = make_server(**FAST_RETRIES)
    with sending.client() as client:
        alice = user(client)
    # This one's mail server never answers: whatever arrives was sent by the other process. It
    # may claim the mail first and fail, again and again, but never gives it up here.
    mailless = make_server(SMTP_PORT=str(free_port()), VEIL_MAIL_ATTEMPTS="50", **FAST_RETRIES)
    before = len(messages_to(settings, alice["email"]))  # the sign-up code
    with mailless.client() as client:
        asked = ask(client, alice, type="erasure", password=PASSWORD)
        assert asked.status_code == 202, asked.text
    code = latest_code(settings, alice["email"], count=before + 1)
    assert "deletion of your account" in body(messages_to(settings, alice["email"])[before])
    with mailless.client() as client:
        done = confirm(client, alice, asked.json()["request_id"], code)
        assert done.status_code == 202, done.text
    assert await queued_for(db, alice["email"]) == 0
    assert mail_metrics(mailless)["sent"] == 0
    assert mail_metrics(sending)["sent"] >= 1


async def test_the_notice_of_a_change_that_rolls_back_is_never_sent(
    api: LiveServer, settings: Settings, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    """Alice's email change fails at confirmation (Bob took the address meanwhile): the notice to
    her old address, queued in that transaction, goes nowhere."""
    with api.client() as client:
        alice, bob = user(client), user(client)
        wanted = new_email()
        hers = ask(client, alice, type="email_change", new_email=wanted, password=PASSWORD)
        assert hers.status_code == 202, hers.text
        her_code = latest_code(settings, wanted)
        his = ask(client, bob, type="email_change", new_email=wanted, password=PASSWORD)
        assert his.status_code == 202, his.text
        his_code = latest_code(settings, wanted, count=2)
        assert confirm(client, bob, his.json()["request_id"], his_code).status_code == 200
        # A committed change is told (after the sign-up code that address received).
        notice = wait_for_mail(settings, bob["email"], count=2)[-1]
        assert "changed" in body(notice)
        signed_up = len(messages_to(settings, alice["email"]))

        refused = confirm(client, alice, hers.json()["request_id"], her_code)
        assert refused.status_code == 409, refused.text
        # Mail queued after the failed confirmation arrives; nothing from before it ever does.
        assert ask(client, alice, type="export").status_code == 202
        since = wait_for_mail(settings, alice["email"], count=signed_up + 1)[signed_up:]
        assert ["a copy of your data" in body(mail) for mail in since] == [True]
    await asyncio.sleep(0.5)
    assert len(messages_to(settings, alice["email"])) == signed_up + 1
    assert await queued_for(db, alice["email"]) == 0
