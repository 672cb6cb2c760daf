"""A1/L1: planted passwords and tokens never reach a log line or the database; hashes are Argon2id
with the recorded cost and are upgraded when the cost is raised."""

from __future__ import annotations

import asyncpg
from argon2 import PasswordHasher

from tests.conftest import ServerFactory
from tests.support.pgdump import dump
from tests.support.users import bearer, login, new_email, register

PASSWORD_CANARY = "canary password 8c1f5e"


async def test_no_password_or_token_in_logs_or_database(
    make_server: ServerFactory, database_url: str
) -> None:
    server = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000", VEIL_LOG_LEVEL="debug")
    with server.client() as client:
        email = register(client, password=PASSWORD_CANARY)
        pair = login(client, email, PASSWORD_CANARY)
        rotated = client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).json()
        client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})  # reuse
        client.post("/v1/auth/login", json={"email": email, "password": PASSWORD_CANARY + "x"})
        client.post("/v1/auth/login", json={"email": new_email(), "password": PASSWORD_CANARY})
        client.post("/v1/auth/register", json={"email": "bad", "password": PASSWORD_CANARY, "x": 1})
        client.get("/v1/auth/sessions", headers=bearer(rotated))
        client.post("/v1/auth/logout", headers=bearer(rotated))
    secrets = [
        PASSWORD_CANARY,
        pair["access_token"],
        pair["refresh_token"],
        rotated["access_token"],
        rotated["refresh_token"],
        pair["access_token"].split(".")[2],  # a signature alone
    ]
    logs = server.logs()
    database = dump(database_url)
    for secret in secrets:
        assert secret not in logs
        assert secret not in database
    assert '"kind":"login_failed"' in logs

    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
        token_hashes = await conn.fetch("SELECT token_hash FROM refresh_tokens")
    finally:
        await conn.close()
    assert stored.startswith("$argon2id$v=19$m=65536,t=1,p=2$")
    assert all(len(row["token_hash"]) == 32 for row in token_hashes)


async def test_hash_is_upgraded_on_login_when_the_cost_is_raised(
    make_server: ServerFactory, database_url: str
) -> None:
    first = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000")
    with first.client() as client:
        email = register(client)
    first.stop()

    stronger = make_server(VEIL_AUTH_RATE="1000", VEIL_AUTH_BURST="1000", VEIL_ARGON2_TIME_COST="2")
    with stronger.client() as client:
        login(client, email)
        login(client, email)  # the upgraded hash verifies
    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval("SELECT password_hash FROM users WHERE email = $1", email)
    finally:
        await conn.close()
    assert "m=65536,t=2,p=2" in stored
    assert not PasswordHasher(time_cost=2, memory_cost=65536, parallelism=2).check_needs_rehash(stored)
