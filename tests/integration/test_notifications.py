"""The process's one LISTEN connection (core/listener.py), shared by every subscriber."""

from __future__ import annotations

import asyncpg

from tests.support.waiting import until
from veil.core.listener import APPLICATION_NAME, Notifications


async def _listeners(db: asyncpg.Connection[asyncpg.Record]) -> list[int]:
    rows = await db.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
        APPLICATION_NAME,
    )
    return [row["pid"] for row in rows]


async def test_every_subscriber_shares_one_connection_and_hears_only_its_channels(
    database_url: str, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    shared = Notifications(database_url)
    heard: dict[str, list[str]] = {"a": [], "b": []}
    ups: list[str] = []
    await shared.subscribe(["alpha"], lambda _c, p: heard["a"].append(p), on_up=lambda: ups.append("a"))
    shared.start()
    try:
        await until(lambda: ups == ["a"], "the first subscriber was told the connection is up")
        # A subscriber that comes later listens on the same connection, and is told at once.
        await shared.subscribe(
            ["beta", "alpha"], lambda c, p: heard["b"].append(f"{c}:{p}"), on_up=lambda: ups.append("b")
        )
        assert ups == ["a", "b"]
        assert len(await _listeners(db)) == 1
        await db.execute("SELECT pg_notify('alpha', '1'), pg_notify('beta', '2'), pg_notify('gamma', '3')")
        await until(lambda: len(heard["b"]) == 2, "both channels reached the second subscriber")
        assert heard == {"a": ["1"], "b": ["alpha:1", "beta:2"]}
    finally:
        await shared.close()


async def test_a_lost_connection_is_reported_down_then_up_and_listens_again(
    database_url: str, db: asyncpg.Connection[asyncpg.Record]
) -> None:
    shared = Notifications(database_url)
    events: list[str] = []
    heard: list[str] = []
    await shared.subscribe(
        ["alpha"],
        lambda _c, p: heard.append(p),
        on_up=lambda: events.append("up"),
        on_down=lambda: events.append("down"),
    )
    shared.start()
    try:
        await until(lambda: events == ["up"], "up")
        [pid] = await _listeners(db)
        await db.execute("SELECT pg_terminate_backend($1)", pid)
        await until(lambda: events == ["up", "down", "up"], "down, then up again")
        await db.execute("SELECT pg_notify('alpha', 'after')")
        await until(lambda: heard == ["after"], "the new connection listens on the channel again")
    finally:
        await shared.close()
