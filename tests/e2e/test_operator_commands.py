"""The `veil` command's operator and setup subcommands, run as an administrator runs them (a
subprocess with the database's address) against a live server: users, sessions, incidents, keys,
configuration and migrations. Every failure is one `veil:` line per problem and exit status 1."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ServerFactory
from tests.support.databases import server_url, with_database
from tests.support.mail import body, wait_for_mail
from tests.support.server import LiveServer
from tests.support.users import PASSWORD, bearer, login, new_email, register
from tests.support.ws import next_frame, registered, ws_connect
from veil.core.config import Settings
from veil.operator.service import NOTICE_BODY

Pair = dict[str, Any]


def veil(*args: str, database_url: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`veil ARGS...` with nothing of this process's Veil configuration, only `env`."""
    ours = ("VEIL_", "S3_", "DATABASE_", "SMTP_", "MAIL_")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    environment.update({"VEIL_ENV": "test", **env})
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "veil", "--env-file", "/dev/null", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def problems(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The problem lines of a failed command (status 1), each one `veil: ...`, nothing else."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert lines and all(line.startswith("veil: ") for line in lines), done.stderr
    return [line.removeprefix("veil: ") for line in lines]


def user(client: Any) -> Pair:
    email = register(client)
    return {**login(client, email), "email": email}


def refreshes(client: Any, pair: Pair) -> bool:
    return bool(
        client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code == 200
    )


def can_sign_in(client: Any, email: str) -> bool:
    response = client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    return bool(response.status_code == 200)


async def test_users_find_suspend_unsuspend_and_revoke_sessions(api: LiveServer, database_url: str) -> None:
    with api.client() as client:
        alice, bob = user(client), user(client)
        second = login(client, alice["email"])

        found = json.loads(
            ok(veil("users", "find", alice["email"].upper(), "--json", database_url=database_url))
        )
        assert (found["user_id"], found["email"], found["status"]) == (
            alice["user_id"],
            alice["email"],
            "active",
        )
        assert found["active_sessions"] == 2
        readable = ok(veil("users", "find", alice["email"], database_url=database_url))
        assert alice["user_id"] in readable and "2 active" in readable

        unknown = new_email()
        assert problems(veil("users", "find", unknown, database_url=database_url)) == [
            f"no account with the email {unknown}"
        ]
        assert problems(veil("users", "suspend", "not an address", database_url=database_url)) == [
            "not a valid email address: not an address"
        ]
        assert problems(veil("users", "suspend", str(uuid.uuid4()), database_url=database_url)) == [
            "No such user."
        ]

    async with ws_connect(api, alice) as ws:
        await registered(ws)
        ok(veil("users", "suspend", alice["email"], database_url=database_url))
        # Her live socket closes as on a revocation, and none of her tokens works any more.
        with pytest.raises(ConnectionClosed) as closed:
            await next_frame(ws, timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    with api.client() as client:
        for pair in (alice, second):
            assert client.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 401
        assert not refreshes(client, alice)
        assert not can_sign_in(client, alice["email"])
        assert client.get("/v1/auth/sessions", headers=bearer(bob)).status_code == 200

        ok(veil("users", "unsuspend", alice["user_id"], database_url=database_url))
        assert can_sign_in(client, alice["email"])

        # Revoking sessions ends bob's access and refresh tokens, and does not suspend him.
        ok(veil("sessions", "revoke", bob["email"], database_url=database_url))
        assert client.get("/v1/auth/sessions", headers=bearer(bob)).status_code == 401
        assert not refreshes(client, bob)
        assert can_sign_in(client, bob["email"])

    audit = await _audit(database_url)
    # Done by the command line: no operator id; a lookup by email is a view of that account.
    assert ("user_suspended", alice["user_id"]) in audit
    assert ("user_reinstated", alice["user_id"]) in audit
    assert ("user_sessions_revoked", bob["user_id"]) in audit


async def _audit(database_url: str) -> list[tuple[str, str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT operator_id, action, target_user_id FROM operator_audit ORDER BY id")
    finally:
        await conn.close()
    assert all(row["operator_id"] is None for row in rows)
    return [(row["action"], str(row["target_user_id"])) for row in rows]


def test_incident_commands(api: LiveServer, settings: Settings, database_url: str) -> None:
    with api.client() as client:
        alice = user(client)
    refused = veil(
        "incidents", "open", "--title", " ", "--scope", "s", "--mitigation", "m", database_url=database_url
    )
    assert [line.split(":")[0] for line in problems(refused)] == ["--title"]

    opened = veil(
        "incidents",
        "open",
        "--title",
        "Backup exposed",
        "--scope",
        "Emails of some users; no message content.",
        "--mitigation",
        "Bucket made private.",
        "--detected-at",
        "2026-12-01T10:00:00+00:00",
        database_url=database_url,
    )
    incident_id = ok(opened).strip()
    assert uuid.UUID(incident_id)
    ok(
        veil(
            "incidents",
            "note",
            incident_id,
            "Keys rotated.",
            "--kind",
            "mitigation",
            database_url=database_url,
        )
    )
    ok(veil("incidents", "notify", incident_id, alice["email"], database_url=database_url))
    # The server's mail worker sends the notice the command queued.
    assert NOTICE_BODY.split("\n")[0] in body(wait_for_mail(settings, alice["email"])[-1])

    listed = json.loads(ok(veil("incidents", "list", "--json", database_url=database_url)))
    assert [item["incident_id"] for item in listed["items"]] == [incident_id]
    assert incident_id in ok(veil("incidents", "list", database_url=database_url))
    shown = json.loads(ok(veil("incidents", "show", incident_id, "--json", database_url=database_url)))
    assert shown["detected_at"] == "2026-12-01T10:00:00.000Z"
    assert shown["created_by"] is None
    assert [(e["kind"], e["body"]) for e in shown["entries"]] == [
        ("mitigation", "Keys rotated."),
        ("notification", "1 affected user(s) notified by email."),
    ]
    assert shown["users_notified"] == 1
    assert "Keys rotated." in ok(veil("incidents", "show", incident_id, database_url=database_url))
    assert problems(veil("incidents", "show", str(uuid.uuid4()), database_url=database_url)) == [
        "No such incident."
    ]
    assert problems(veil("incidents", "show", "7", database_url=database_url)) == ["not an incident id: 7"]


def test_config_check_and_every_command_print_one_line_per_problem() -> None:
    bad = {"VEIL_PORT": "eighty", "VEIL_LOG_LEVEL": "loud"}
    for command in (("config", "check"), ("serve", "all"), ("users", "find", "a@example.org")):
        done = veil(*command, **bad)
        assert "Traceback" not in done.stderr
        found = problems(done)
        assert len(found) == 2, found
        assert found[0].startswith("VEIL_PORT: ") and found[1].startswith("VEIL_LOG_LEVEL: ")
    production = problems(veil("config", "check", VEIL_ENV="production"))
    assert "DATABASE_URL is required (VEIL_ENV=production)" in production
    assert ok(veil("config", "check")).strip() == "configuration OK (test)"
    assert ok(veil("--version")).startswith("veil ")
    assert veil("users").returncode == 2  # usage


def test_generated_keys_are_what_the_server_starts_with(make_server: ServerFactory, tmp_path: Path) -> None:
    keys = tmp_path / "secrets"
    variables = dict(line.split("=", 1) for line in ok(veil("keys", "generate", str(keys))).splitlines())
    assert set(variables) == {"VEIL_JWT_KEYS_FILE", "VEIL_TRANSPARENCY_KEYS_FILE"}
    for path in variables.values():
        assert Path(path).stat().st_mode & 0o777 == 0o600
    before = {name: Path(path).read_text() for name, path in variables.items()}
    # Never over an existing key file, unless asked to rotate.
    assert len(problems(veil("keys", "generate", str(keys)))) == 2
    assert {name: Path(path).read_text() for name, path in variables.items()} == before
    assert ok(veil("config", "check", **variables)).strip() == "configuration OK (test)"

    server = make_server(**variables)
    with server.client() as client:
        pair = user(client)
        assert client.get("/v1/auth/sessions", headers=bearer(pair)).status_code == 200
        kid = json.loads(before["VEIL_JWT_KEYS_FILE"])["active"]
        assert kid in {key["kid"] for key in client.get("/v1/auth/jwks").json()["keys"]}

    ok(veil("keys", "generate", str(keys), "--rotate", "--only", "log"))
    assert Path(variables["VEIL_JWT_KEYS_FILE"]).read_text() == before["VEIL_JWT_KEYS_FILE"]
    rotated = json.loads(Path(variables["VEIL_TRANSPARENCY_KEYS_FILE"]).read_text())
    assert len(rotated["keys"]) == 2
    Path(variables["VEIL_JWT_KEYS_FILE"]).write_text("{}")
    assert problems(veil("config", "check", **variables)) == [
        f"VEIL_JWT_KEYS_FILE: {variables['VEIL_JWT_KEYS_FILE']} is not a token key file"
    ]


@pytest.fixture
def empty_database(settings: Settings) -> Iterator[str]:
    """A database with no schema at all, dropped afterwards."""
    name = f"veil_test_empty_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(server_url(settings))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server_url(settings), name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_migrate_status_dry_run_and_up(empty_database: str) -> None:
    fresh = veil("migrate", "status", database_url=empty_database)
    assert fresh.returncode == 1
    lines = fresh.stdout.splitlines()
    assert lines and all(line.startswith("pending ") for line in lines)
    assert "0001_" in lines[0]

    dry = ok(veil("migrate", "up", "--dry-run", database_url=empty_database))
    assert [line.split()[-1] for line in dry.splitlines()] == [line.split()[1] for line in lines]
    assert veil("migrate", "status", database_url=empty_database).stdout == fresh.stdout  # nothing applied

    ok(veil("migrate", "up", database_url=empty_database))
    done = veil("migrate", "status", database_url=empty_database)
    assert done.returncode == 0, done.stderr
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [
        ["applied", line.split()[1]] for line in lines
    ]
    # `veil migrate` alone still applies, and has nothing left to do.
    assert "0 migration(s) applied" in veil("migrate", database_url=empty_database).stderr
