from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.databases import server_url, with_database
from veil.core.config import Settings
from veil.core.migrations import DEFAULT_DIRECTORY, MigrationError, apply_migrations, discover


@pytest.fixture
async def empty_database(settings: Settings) -> AsyncIterator[str]:
    name = f"veil_empty_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(server_url(settings))
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url(settings), name)
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrations_apply_from_empty_and_are_idempotent(empty_database: str) -> None:
    expected = [m.version for m in discover()]
    assert expected, "there is at least one migration"
    assert await apply_migrations(empty_database) == expected
    assert await apply_migrations(empty_database) == []

    conn = await asyncpg.connect(empty_database)
    try:
        recorded = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in recorded] == expected


async def test_concurrent_starts_apply_each_migration_once(empty_database: str) -> None:
    import asyncio

    results = await asyncio.gather(*(apply_migrations(empty_database) for _ in range(4)))
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in discover()]


async def test_an_edited_migration_is_refused(empty_database: str, tmp_path: Path) -> None:
    for source in DEFAULT_DIRECTORY.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    await apply_migrations(empty_database, tmp_path)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited afterwards\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await apply_migrations(empty_database, tmp_path)


async def test_a_failing_migration_leaves_nothing_behind(empty_database: str, tmp_path: Path) -> None:
    for source in DEFAULT_DIRECTORY.glob("*.sql"):
        (tmp_path / source.name).write_text(source.read_text())
    next_version = len(discover(tmp_path)) + 1
    (tmp_path / f"{next_version:04d}_broken.sql").write_text(
        "CREATE TABLE half_done (id int); SELECT no_such_function();"
    )
    with pytest.raises(asyncpg.PostgresError):
        await apply_migrations(empty_database, tmp_path)
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == next_version - 1
    finally:
        await conn.close()
