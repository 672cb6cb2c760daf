"""The operator role end to end: granted by the command-line tool only, invisible (404) to everyone
else, metadata only, suspension and revocation that take effect at once, the append-only incident
log and audit trail (enforced by the database), and content-free notices to affected users."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support.files import direct, upload
from tests.support.keys import bundle
from tests.support.mail import MailServerOfItsOwn, body, messages_to, wait_for_mail
from tests.support.messaging import envelope, send
from tests.support.server import LiveServer
from tests.support.users import bearer, login, new_email, register
from tests.support.ws import next_frame, registered, ws_connect
from veil.core.config import Settings
from veil.devstack import mailbox
from veil.operator.service import NOTICE_BODY

Pair = dict[str, Any]

# Property names no operator response may have: content, keys, credentials and IP history.
FORBIDDEN_NAME = re.compile(
    r"ciphertext|nonce|auth_tag|password|token|email_hash|secret|signature|prekey|plaintext|user_agent"
    r"|(^|_)(key|keys|ip|ips|hash|tag)($|_)"
)


def veil_operator(database_url: str, action: str, email: str) -> subprocess.CompletedProcess[str]:
    """`veil operator grant|revoke EMAIL`, as an administrator would run it."""
    ours = ("VEIL_", "S3_", "DATABASE_", "SMTP_", "MAIL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(DATABASE_URL=database_url, VEIL_ENV="test")
    return subprocess.run(
        [sys.executable, "-m", "veil", "--env-file", "/dev/null", "operator", action, email],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def user(client: httpx.Client) -> Pair:
    pair = login(client, email := register(client))
    return {**pair, "email": email}


def operator(client: httpx.Client, database_url: str) -> Pair:
    email = register(client)
    granted = veil_operator(database_url, "grant", email)
    assert granted.returncode == 0, granted.stderr
    return {**login(client, email), "email": email}


def admin_operations(client: httpx.Client) -> list[tuple[str, str, dict[str, Any]]]:
    document = client.get("/v1/openapi.json").json()
    return [
        (method.upper(), path, operation)
        for path, operations in document["paths"].items()
        if path.startswith("/v1/admin")
        for method, operation in operations.items()
    ]


def create_incident(client: httpx.Client, who: Pair, **overrides: Any) -> dict[str, Any]:
    spec = {
        "title": "Database backup exposed",
        "scope": "Account metadata of some users (emails, timestamps); no message content.",
        "mitigation": "Bucket made private; credentials rotated.",
        **overrides,
    }
    created = client.post("/v1/admin/incidents", json=spec, headers=bearer(who))
    assert created.status_code == 201, created.text
    incident: dict[str, Any] = created.json()
    return incident


def test_the_command_line_grants_and_revokes_the_role(api: LiveServer, database_url: str) -> None:
    unknown = veil_operator(database_url, "grant", new_email())
    assert unknown.returncode != 0
    assert "no account with the email" in unknown.stderr
    assert "Traceback" not in unknown.stderr

    with api.client() as client:
        someone = user(client)
        assert client.get("/v1/admin/users", headers=bearer(someone)).status_code == 404

        granted = veil_operator(database_url, "grant", someone["email"].upper())
        assert granted.returncode == 0, granted.stderr
        # The role is read from the database on each request: the same token works at once.
        assert client.get("/v1/admin/users", headers=bearer(someone)).status_code == 200

        revoked = veil_operator(database_url, "revoke", someone["email"])
        assert revoked.returncode == 0, revoked.stderr
        assert client.get("/v1/admin/users", headers=bearer(someone)).status_code == 404


def test_everyone_but_operators_gets_404_on_every_operator_endpoint(api: LiveServer) -> None:
    with api.client() as client:
        someone = user(client)
        unknown_path = client.get("/v1/admin/no-such-thing", headers=bearer(someone))
        assert unknown_path.status_code == 404
        operations = admin_operations(client)
        assert len(operations) >= 10
        valid_bodies = {
            "/v1/admin/incidents": {"title": "t", "scope": "s", "mitigation": "m"},
            "/v1/admin/incidents/{incident_id}/entries": {"kind": "update", "body": "b"},
            "/v1/admin/incidents/{incident_id}/notifications": {"user_ids": [someone["user_id"]]},
        }
        for method, template, operation in operations:
            path = template.format(user_id=someone["user_id"], incident_id=uuid.uuid4())
            bodies: list[Any] = [None]
            if "requestBody" in operation:
                bodies = [valid_bodies[template], {"not": "valid"}, "not even an object"]
            for payload in bodies:
                for query in ("", "?limit=0&cursor=nonsense"):
                    response = client.request(method, path + query, json=payload, headers=bearer(someone))
                    assert response.status_code == 404, (method, path, response.text)
                    # Word for word an unknown path: no oracle for what exists here.
                    assert response.json() == unknown_path.json()
            assert client.request(method, path).status_code == 401


def test_operators_see_metadata_and_counts_only(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        login(client, alice["email"])  # a second session
        assert client.put("/v1/keys", json=bundle(), headers=bearer(alice)).status_code in (200, 201)
        conversation_id = direct(client, alice, bob)
        message = envelope()
        assert send(client, alice, conversation_id, message).status_code == 201
        upload(client, alice, conversation_id, os.urandom(1000))
        op = operator(client, database_url)

        listed = client.get("/v1/admin/users", headers=bearer(op))
        assert listed.status_code == 200, listed.text
        page = listed.json()
        assert page["next_cursor"] is None
        by_id = {item["user_id"]: item for item in page["items"]}
        assert set(by_id) == {alice["user_id"], bob["user_id"], op["user_id"]}

        seen = by_id[alice["user_id"]]
        assert set(seen) == {
            "user_id",
            "email",
            "status",
            "role",
            "email_verified",
            "created_at",
            "updated_at",
            "last_seen_at",
            "active_sessions",
            "devices",
            "conversations",
            "messages_sent",
            "attachments",
        }
        assert seen["email"] == alice["email"]
        assert (seen["status"], seen["role"]) == ("active", "user")
        assert (seen["active_sessions"], seen["devices"], seen["conversations"]) == (2, 1, 1)
        assert (seen["messages_sent"], seen["attachments"]) == (1, 1)
        assert by_id[op["user_id"]]["role"] == "operator"
        assert by_id[bob["user_id"]]["messages_sent"] == 0
        # Neither the envelope nor any IP address reaches the operator.
        assert message["ciphertext"] not in listed.text
        assert "127.0.0.1" not in listed.text

        one = client.get(f"/v1/admin/users/{alice['user_id']}", headers=bearer(op))
        assert one.status_code == 200
        assert one.json() == seen
        assert client.get(f"/v1/admin/users/{uuid.uuid4()}", headers=bearer(op)).status_code == 404
        assert client.get("/v1/admin/users/not-a-uuid", headers=bearer(op)).status_code == 404

        # Cursor pagination over all users, in id order.
        collected: list[str] = []
        cursor = None
        while True:
            query = "?limit=1" + (f"&cursor={cursor}" if cursor else "")
            current = client.get("/v1/admin/users" + query, headers=bearer(op)).json()
            collected += [item["user_id"] for item in current["items"]]
            cursor = current["next_cursor"]
            if cursor is None:
                break
        assert collected == sorted(by_id)
        bad = client.get("/v1/admin/users?limit=500", headers=bearer(op))
        assert bad.status_code == 422

        # One account by its email, written any way the owner may have written it.
        by_email = client.get("/v1/admin/users", params={"email": alice["email"].upper()}, headers=bearer(op))
        assert by_email.status_code == 200, by_email.text
        assert by_email.json() == {"items": [seen], "next_cursor": None}
        nobody = client.get("/v1/admin/users", params={"email": new_email()}, headers=bearer(op))
        assert nobody.status_code == 404
        for malformed in ("not-an-address", "a@b@example.org", "x" * 400 + "@example.org"):
            refused = client.get("/v1/admin/users", params={"email": malformed}, headers=bearer(op))
            assert refused.status_code == 422, malformed
            assert [e["loc"] for e in refused.json()["errors"]] == [["query", "email"]]
        twice = client.get(
            "/v1/admin/users", params=[("email", alice["email"]), ("email", bob["email"])], headers=bearer(op)
        )
        assert twice.status_code == 422
        # To anyone without the role it is an unknown path, as for every operator endpoint.
        as_user = client.get("/v1/admin/users", params={"email": bob["email"]}, headers=bearer(alice))
        assert as_user.status_code == 404
        assert as_user.json() == client.get("/v1/admin/nothing", headers=bearer(alice)).json()
        declared = client.get("/v1/openapi.json").json()["paths"]["/v1/admin/users"]["get"]["parameters"]
        assert "email" in {param["name"] for param in declared if param["in"] == "query"}


async def test_suspension_ends_every_session_at_once(
    api: LiveServer, database_url: str, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    with api.client() as client:
        alice, other = user(client), user(client)
        second = login(client, alice["email"])
        op = operator(client, database_url)
    async with ws_connect(api, alice) as ws:
        await registered(ws)
        with api.client() as client:
            suspended = client.post(f"/v1/admin/users/{alice['user_id']}/suspend", headers=bearer(op))
            assert suspended.status_code == 204, suspended.text
            # The very next request with any of her tokens is refused, and her socket closes.
            for pair in (alice, second):
                assert client.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 401
            refresh = client.post("/v1/auth/refresh", json={"refresh_token": alice["refresh_token"]})
            assert refresh.status_code == 401
            assert (
                client.post(
                    "/v1/auth/login",
                    json={"email": alice["email"], "password": "correct horse battery staple 7"},
                ).status_code
                == 401
            )
            # Others are untouched.
            assert client.get("/v1/auth/sessions", headers=bearer(other)).status_code == 200
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(ws, timeout=5)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401

    reasons = await db.fetch(
        "SELECT revoke_reason FROM sessions WHERE user_id = $1", uuid.UUID(alice["user_id"])
    )
    assert [r["revoke_reason"] for r in reasons] == ["account_disabled", "account_disabled"]

    with api.client() as client:
        viewed = client.get(f"/v1/admin/users/{alice['user_id']}", headers=bearer(op)).json()
        assert (viewed["status"], viewed["active_sessions"], viewed["devices"]) == ("suspended", 0, 0)
        # Idempotent; operators cannot be suspended (the command-line tool takes the role first).
        assert (
            client.post(f"/v1/admin/users/{alice['user_id']}/suspend", headers=bearer(op)).status_code == 204
        )
        assert client.post(f"/v1/admin/users/{op['user_id']}/suspend", headers=bearer(op)).status_code == 409
        assert client.post(f"/v1/admin/users/{uuid.uuid4()}/suspend", headers=bearer(op)).status_code == 404

        reinstated = client.post(f"/v1/admin/users/{alice['user_id']}/reinstate", headers=bearer(op))
        assert reinstated.status_code == 204
        assert (
            client.get("/v1/auth/sessions", headers=bearer(alice)).status_code == 401
        )  # sessions stay ended
        login(client, alice["email"])


async def test_revoking_sessions_does_not_suspend(
    api: LiveServer, database_url: str, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    with api.client() as client:
        alice = user(client)
        second = login(client, alice["email"])
        op = operator(client, database_url)
        revoked = client.post(f"/v1/admin/users/{alice['user_id']}/sessions/revoke", headers=bearer(op))
        assert revoked.status_code == 204, revoked.text
        for pair in (alice, second):
            assert client.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 401
        again = login(client, alice["email"])
        assert client.get("/v1/auth/sessions", headers=bearer(again)).status_code == 200
        viewed = client.get(f"/v1/admin/users/{alice['user_id']}", headers=bearer(op)).json()
        assert (viewed["status"], viewed["active_sessions"]) == ("active", 1)
        missing = client.post(f"/v1/admin/users/{uuid.uuid4()}/sessions/revoke", headers=bearer(op))
        assert missing.status_code == 404
    reasons = await db.fetch(
        "SELECT revoke_reason FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL",
        uuid.UUID(alice["user_id"]),
    )
    assert [r["revoke_reason"] for r in reasons] == ["revoked", "revoked"]


def test_incident_log(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        op = operator(client, database_url)
        first = create_incident(client, op, detected_at="2026-01-02T03:04:05Z")
        assert first["detected_at"] == "2026-01-02T03:04:05.000Z"
        assert first["created_by"] == op["user_id"]
        assert set(first) == {
            "incident_id",
            "number",
            "title",
            "scope",
            "mitigation",
            "detected_at",
            "created_at",
            "created_by",
        }
        second = create_incident(client, op, title="Second")
        assert second["number"] > first["number"]

        path = f"/v1/admin/incidents/{first['incident_id']}"
        for kind, text in (
            ("update", "Scope confirmed."),
            ("mitigation", "Keys rotated."),
            ("notification", "DPA told."),
        ):
            added = client.post(path + "/entries", json={"kind": kind, "body": text}, headers=bearer(op))
            assert added.status_code == 201, added.text
            assert added.json()["author_id"] == op["user_id"]

        detail = client.get(path, headers=bearer(op)).json()
        assert detail["title"] == first["title"]
        assert [(e["kind"], e["body"]) for e in detail["entries"]] == [
            ("update", "Scope confirmed."),
            ("mitigation", "Keys rotated."),
            ("notification", "DPA told."),
        ]
        seqs = [e["seq"] for e in detail["entries"]]
        assert seqs == sorted(seqs)
        assert detail["users_notified"] == 0

        listed = client.get("/v1/admin/incidents", headers=bearer(op)).json()
        assert [i["incident_id"] for i in listed["items"]] == [second["incident_id"], first["incident_id"]]
        page = client.get("/v1/admin/incidents?limit=1", headers=bearer(op)).json()
        assert [i["incident_id"] for i in page["items"]] == [second["incident_id"]]
        rest = client.get(f"/v1/admin/incidents?limit=1&cursor={page['next_cursor']}", headers=bearer(op))
        assert [i["incident_id"] for i in rest.json()["items"]] == [first["incident_id"]]

        future = client.post(
            "/v1/admin/incidents",
            json={"title": "t", "scope": "s", "mitigation": "m", "detected_at": "2999-01-01T00:00:00Z"},
            headers=bearer(op),
        )
        assert future.status_code == 422
        blank = client.post(
            "/v1/admin/incidents", json={"title": "  ", "scope": "s", "mitigation": "m"}, headers=bearer(op)
        )
        assert blank.status_code == 422
        nowhere = f"/v1/admin/incidents/{uuid.uuid4()}"
        assert client.get(nowhere, headers=bearer(op)).status_code == 404
        entry = {"kind": "update", "body": "x"}
        assert client.post(nowhere + "/entries", json=entry, headers=bearer(op)).status_code == 404


async def test_the_database_keeps_the_logs_append_only(
    api: LiveServer, database_url: str, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    with api.client() as client:
        op, other_op, alice = operator(client, database_url), operator(client, database_url), user(client)
        incident = create_incident(client, other_op)
        path = f"/v1/admin/incidents/{incident['incident_id']}"
        client.post(path + "/entries", json={"kind": "update", "body": "u"}, headers=bearer(other_op))
        notified = client.post(
            path + "/notifications", json={"user_ids": [alice["user_id"]]}, headers=bearer(op)
        )
        assert notified.status_code == 200, notified.text
        client.get(f"/v1/admin/users/{alice['user_id']}", headers=bearer(other_op))

    stamped = {
        "incidents": "created_at",
        "incident_entries": "created_at",
        "incident_notifications": "notified_at",
        "operator_audit": "created_at",
    }
    tables = tuple(stamped)
    for table, column in stamped.items():
        assert await db.fetchval(f"SELECT count(*) FROM {table}") > 0  # noqa: S608
        for statement in (
            f"UPDATE {table} SET {column} = now()",  # noqa: S608
            f"DELETE FROM {table}",  # noqa: S608
            f"TRUNCATE {table} CASCADE",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await db.execute(statement)
    # A user-id column may become NULL only on its own, and never point at someone else.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE incidents SET created_by = NULL, title = 'changed'")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE operator_audit SET operator_id = $1", uuid.UUID(op["user_id"]))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("UPDATE incident_entries SET incident_id = incident_id, kind = 'mitigation'")

    # Purging accounts (erasure) takes their ids out of every row; the rows stay.
    counts = {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in tables}  # noqa: S608
    gone = [uuid.UUID(other_op["user_id"]), uuid.UUID(alice["user_id"])]
    await db.execute("DELETE FROM users WHERE id = ANY($1::uuid[])", gone)
    assert {table: await db.fetchval(f"SELECT count(*) FROM {table}") for table in tables} == counts  # noqa: S608
    for table, column in (
        ("incidents", "created_by"),
        ("incident_entries", "author_id"),
        ("incident_notifications", "user_id"),
        ("operator_audit", "operator_id"),
        ("operator_audit", "target_user_id"),
    ):
        left = await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = ANY($1::uuid[])", gone)  # noqa: S608
        assert left == 0, (table, column)
    assert await db.fetchval("SELECT created_by FROM incidents") is None
    assert await db.fetchval("SELECT user_id FROM incident_notifications") is None


async def test_notifying_affected_users(
    api: LiveServer, database_url: str, settings: Settings, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    with api.client() as client:
        op, alice, bob, carol = operator(client, database_url), user(client), user(client), user(client)
        incident = create_incident(client, op)
        path = f"/v1/admin/incidents/{incident['incident_id']}/notifications"

        unknown = client.post(
            path, json={"user_ids": [alice["user_id"], str(uuid.uuid4())]}, headers=bearer(op)
        )
        assert unknown.status_code == 404
        assert len(messages_to(settings, alice["email"])) == 1  # her sign-up code only
        nowhere = f"/v1/admin/incidents/{uuid.uuid4()}/notifications"
        assert (
            client.post(nowhere, json={"user_ids": [alice["user_id"]]}, headers=bearer(op)).status_code == 404
        )

        told = client.post(path, json={"user_ids": [alice["user_id"], bob["user_id"]]}, headers=bearer(op))
        assert told.status_code == 200, told.text
        assert told.json()["notified"] == 2
        assert told.json()["already_notified"] == 0

        for who in (alice, bob):
            mail = wait_for_mail(settings, who["email"], count=2)[-1]  # after the sign-up code
            text = body(mail).replace("\r\n", "\n")
            assert text.strip() == NOTICE_BODY.strip()
            # No content: nothing of the incident and nothing about the recipient.
            for detail in (incident["title"], incident["scope"], incident["mitigation"], who["user_id"]):
                assert detail not in text
            assert incident["title"] not in str(mail["Subject"])
        assert len(messages_to(settings, carol["email"])) == 1

        # Those already told are not told twice.
        again = client.post(path, json={"user_ids": [alice["user_id"], carol["user_id"]]}, headers=bearer(op))
        assert again.json()["notified"] == 1
        assert again.json()["already_notified"] == 1
        wait_for_mail(settings, carol["email"], count=2)
        assert len(messages_to(settings, alice["email"])) == 2

        detail = client.get(f"/v1/admin/incidents/{incident['incident_id']}", headers=bearer(op)).json()
        assert detail["users_notified"] == 3
        notes = [e for e in detail["entries"] if e["kind"] == "notification"]
        assert [e["body"] for e in notes] == [
            "2 affected user(s) notified by email.",
            "1 affected user(s) notified by email.",
        ]

    rows = await db.fetch(
        "SELECT user_id, notified_at FROM incident_notifications WHERE incident_id = $1 ORDER BY id",
        uuid.UUID(incident["incident_id"]),
    )
    assert {str(r["user_id"]) for r in rows} == {alice["user_id"], bob["user_id"], carol["user_id"]}
    assert all(r["notified_at"] is not None for r in rows)


async def test_concurrent_notifications_tell_each_user_once(
    api: LiveServer, database_url: str, settings: Settings, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    """Several operators (or retries) notifying at once: each user is told once, and the answers
    add up to exactly the users told."""
    with api.client() as client:
        op = operator(client, database_url)
        people = [user(client) for _ in range(3)]
        incident = create_incident(client, op)
    path = f"/v1/admin/incidents/{incident['incident_id']}/notifications"
    wanted = {"user_ids": [p["user_id"] for p in people]}
    async with api.async_client() as aclient:
        answers = await asyncio.gather(
            *(aclient.post(path, json=wanted, headers=bearer(op)) for _ in range(8))
        )
    assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
    assert sum(a.json()["notified"] for a in answers) == 3
    rows = await db.fetchval(
        "SELECT count(*) FROM incident_notifications WHERE incident_id = $1",
        uuid.UUID(incident["incident_id"]),
    )
    assert rows == 3
    for who in people:
        wait_for_mail(settings, who["email"], count=2)  # the sign-up code, then the notice
    await asyncio.sleep(1)  # a second notice would be queued by now
    assert all(len(messages_to(settings, who["email"])) == 2 for who in people)


def test_the_audit_trail_has_one_row_per_operator_action(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        alice = user(client)
        op = operator(client, database_url)
        a, o = alice["user_id"], op["user_id"]
        auth = bearer(op)
        client.get("/v1/admin/users", headers=auth)
        client.get(f"/v1/admin/users/{a}", headers=auth)
        client.post(f"/v1/admin/users/{a}/sessions/revoke", headers=auth)
        client.post(f"/v1/admin/users/{a}/suspend", headers=auth)
        client.post(f"/v1/admin/users/{a}/reinstate", headers=auth)
        incident = create_incident(client, op)
        i = incident["incident_id"]
        client.post(f"/v1/admin/incidents/{i}/entries", json={"kind": "update", "body": "u"}, headers=auth)
        client.post(f"/v1/admin/incidents/{i}/notifications", json={"user_ids": [a]}, headers=auth)
        client.get("/v1/admin/incidents", headers=auth)
        client.get(f"/v1/admin/incidents/{i}", headers=auth)
        # Refused or failed requests are no actions and leave no row.
        client.get(f"/v1/admin/users/{uuid.uuid4()}", headers=auth)
        client.get("/v1/admin/users", headers=bearer(alice))

        trail = client.get("/v1/admin/audit", headers=auth)
        assert trail.status_code == 200, trail.text
        rows = [
            (e["operator_id"], e["action"], e["target_user_id"], e["incident_id"])
            for e in reversed(trail.json()["items"])
        ]
        assert rows == [
            (None, "role_granted", o, None),
            (o, "users_listed", None, None),
            (o, "user_viewed", a, None),
            (o, "user_sessions_revoked", a, None),
            (o, "user_suspended", a, None),
            (o, "user_reinstated", a, None),
            (o, "incident_created", None, i),
            (o, "incident_entry_added", None, i),
            (o, "incident_users_notified", None, i),
            (o, "incidents_listed", None, None),
            (o, "incident_viewed", None, i),
            (o, "audit_viewed", None, None),
        ]
        seqs = [e["seq"] for e in trail.json()["items"]]
        assert seqs == sorted(seqs, reverse=True)

        page = client.get("/v1/admin/audit?limit=2", headers=auth).json()
        assert [e["action"] for e in page["items"]] == ["audit_viewed", "audit_viewed"]
        rest = client.get(f"/v1/admin/audit?limit=200&cursor={page['next_cursor']}", headers=auth).json()
        assert rest["items"][0]["action"] == "incident_viewed"
        assert rest["next_cursor"] is None


def _property_names(node: Any, schemas: dict[str, Any], seen: set[str]) -> set[str]:
    """Every property name reachable from a schema, following $refs into the components."""
    names: set[str] = set()
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, list):
            stack.extend(current)
        elif isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str):
                name = ref.rsplit("/", 1)[-1]
                if name not in seen:
                    seen.add(name)
                    stack.append(schemas[name])
            properties = current.get("properties")
            if isinstance(properties, dict):
                names |= set(properties)
            stack.extend(value for key, value in current.items() if key != "$ref")
    return names


def test_no_operator_response_schema_can_carry_content_keys_or_ip_history(api: LiveServer) -> None:
    with api.client() as client:
        document = client.get("/v1/openapi.json").json()
        operations = admin_operations(client)
    schemas = document["components"]["schemas"]
    assert len(operations) >= 10
    names: set[str] = set()
    for _, _, operation in operations:
        for response in operation["responses"].values():
            for content in response.get("content", {}).values():
                names |= _property_names(content["schema"], schemas, set())
    # The walk reaches the models (not only the problem document)...
    assert {"email", "status", "active_sessions", "devices", "title", "entries", "action"} <= names
    # ...and none of them has a field for ciphertext, keys, credentials or IP addresses.
    leaking = sorted(name for name in names if FORBIDDEN_NAME.search(name))
    assert leaking == []
    # The pattern does catch what it is for.
    for bad in (
        "ciphertext",
        "identity_key",
        "ip",
        "last_ip",
        "password_hash",
        "refresh_token",
        "email_hash",
    ):
        assert FORBIDDEN_NAME.search(bad), bad


async def test_notices_while_the_mail_server_is_down_are_recorded_and_sent_when_it_is_back(
    make_server: ServerFactory, database_url: str, db: asyncpg.Connection[asyncpg.Record], tmp_path: Path
) -> None:
    helper = make_server(VEIL_AUTH_RATE="10000", VEIL_AUTH_BURST="10000")  # signs up through the sink
    with helper.client() as client:
        op, alice = operator(client, database_url), user(client)
    helper.stop()
    with MailServerOfItsOwn(tmp_path / "mail") as smtp:
        smtp.stop()
        server = make_server(SMTP_PORT=str(smtp.port), VEIL_MAIL_RETRY_FIRST="0.2", VEIL_MAIL_RETRY_MAX="0.4")
        with server.client() as client:
            incident = create_incident(client, op)
            path = f"/v1/admin/incidents/{incident['incident_id']}/notifications"
            told = client.post(path, json={"user_ids": [alice["user_id"]]}, headers=bearer(op))
            assert told.status_code == 200, told.text
            assert told.json()["notified"] == 1
            # Recorded with the notice queued, in one transaction: a retry tells nobody twice.
            again = client.post(path, json={"user_ids": [alice["user_id"]]}, headers=bearer(op))
            assert (again.json()["notified"], again.json()["already_notified"]) == (0, 1)
        assert await db.fetchval("SELECT count(*) FROM incident_notifications") == 1
        assert await db.fetchval("SELECT count(*) FROM mail_outbox WHERE recipient = $1", alice["email"]) == 1
        assert mailbox.messages_to(smtp.directory, alice["email"]) == []

        smtp.start()
        [notice] = mailbox.wait_for_mail(smtp.directory, alice["email"])
        assert body(notice).replace("\r\n", "\n").strip() == NOTICE_BODY.strip()
    assert await db.fetchval("SELECT count(*) FROM mail_outbox WHERE recipient = $1", alice["email"]) == 0
