"""Addressing databases on the test PostgreSQL server."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from veil.core.config import Settings


def server_url(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url.get_secret_value()


def with_database(url: str, name: str) -> str:
    """The same server, another database (works for socket and TCP URLs)."""
    base, _, query = url.partition("?")
    scheme_host, _, _ = base.rpartition("/")
    return f"{scheme_host}/{name}" + (f"?{query}" if query else "")


def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Rows of one statement, read as an attacker with the database would (outside the server)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())
