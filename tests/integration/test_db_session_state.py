"""The pool hands connections back without asyncpg's reset query (core/db.py, `_keep_session`):
one round trip less per request. That is only safe while nothing leaves session state on a pooled
connection, so this file checks both what the pool still guarantees and that the code base keeps to
transaction-scoped state."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from veil.core.db import Database
from veil.core.metrics import Metrics

SOURCE = Path(__file__).resolve().parents[2] / "src" / "veil"
# The two modules that take session state, each on a connection of its own (not the pool's).
OWN_CONNECTIONS = {SOURCE / "core" / "listener.py", SOURCE / "core" / "migrations.py"}
SESSION_STATE = (
    re.compile(
        r"pg_(try_)?advisory_lock(_shared)?\("
    ),  # session-level locks (xact ones end with the transaction)
    re.compile(r"""["']\s*SET\s+(?!LOCAL\b)(SESSION\s+)?[A-Za-z_.]+\s*(=|TO\b)""", re.IGNORECASE),
    re.compile(r"set_config\([^)]*,\s*false\s*\)", re.IGNORECASE),
    re.compile(r"""["']\s*(LISTEN|DECLARE)\b""", re.IGNORECASE),  # DECLARE ... WITH HOLD outlives a commit
    re.compile(r"\.add_listener\("),
    re.compile(r"\bPREPARE\s+\w+\s+AS\b", re.IGNORECASE),
)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, max_size=1, timeout=5, metrics=Metrics())  # one connection: reused
    await db.open()
    try:
        yield db
    finally:
        await db.close()


async def test_a_reused_connection_carries_nothing_from_the_last_unit_of_work(database: Database) -> None:
    async with database.transaction("first") as conn:
        await conn.execute("SET LOCAL statement_timeout = 1234")
        await conn.execute("SELECT pg_advisory_xact_lock(42)")
        first_backend = await conn.fetchval("SELECT pg_backend_pid()")

    async def fail_half_way() -> None:
        async with database.transaction("abandoned") as conn:
            await conn.execute("SET LOCAL statement_timeout = 4321")
            raise RuntimeError("the unit of work fails half way")

    with pytest.raises(RuntimeError):
        await fail_half_way()

    async with database.connection() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == first_backend  # the same session
        assert not conn.is_in_transaction()  # the abandoned transaction was rolled back
        assert await conn.fetchval("SHOW statement_timeout") != "4321ms"
        assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0


def test_no_code_leaves_session_state_on_a_pooled_connection() -> None:
    offenders = [
        f"{path.relative_to(SOURCE)}:{number}: {line.strip()}"
        for path in sorted(SOURCE.rglob("*.py"))
        if path not in OWN_CONNECTIONS and "client" not in path.relative_to(SOURCE).parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if any(pattern.search(line) for pattern in SESSION_STATE)
    ]
    assert not offenders, (
        "session state on a pooled connection survives into the next request now that the pool does "
        f"not reset connections (core/db.py): take a connection of your own for it: {offenders}"
    )


def test_the_watch_would_see_session_state() -> None:
    for line in (
        'await conn.execute("SELECT pg_advisory_lock($1)", key)',
        'await conn.execute("SET statement_timeout = 0")',
        "await conn.execute('set search_path TO other')",
        "await conn.fetchval(\"SELECT set_config('app.user', $1, false)\", user)",
        'await conn.execute("LISTEN channel")',
        "await conn.add_listener(channel, callback)",
    ):
        assert any(pattern.search(line) for pattern in SESSION_STATE), line
    for harmless in (
        'await conn.execute("SET LOCAL statement_timeout = 0")',
        'await conn.execute("UPDATE sessions SET revoked_at = $1")',
        'await conn.fetchval("SELECT pg_advisory_xact_lock($1)", key)',
    ):
        assert not any(pattern.search(harmless) for pattern in SESSION_STATE), harmless
