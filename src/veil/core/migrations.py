"""Schema migrations: one linear history of plain SQL files in `src/veil/migrations/`.

`NNNN_description.sql` files are applied in order, each in its own transaction together with its
row in `schema_migrations`, so a failed migration leaves nothing half-applied. An advisory lock
serialises processes that start at the same moment; applying is idempotent. An
applied file whose content later changes is refused: history is append-only.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import asyncpg

from veil.core.logging import get_logger

log = get_logger(__name__)

# Shipped inside the package (package data), so any installation can migrate its database.
DEFAULT_DIRECTORY = Path(__file__).resolve().parents[1] / "migrations"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same in every Veil process.
_LOCK_ID = 0x7E11_0001


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


class MigrationError(RuntimeError):
    pass


def discover(directory: Path = DEFAULT_DIRECTORY) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise MigrationError(f"unexpected file name in {directory}: {path.name}")
        migrations.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, found {versions}")
    return migrations


async def apply_migrations(dsn: str, directory: Path = DEFAULT_DIRECTORY) -> list[int]:
    """Bring the database up to date; return the versions applied by this call."""
    migrations = discover(directory)
    applied_now: list[int] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        for migration in migrations:
            async with conn.transaction():
                recorded = await conn.fetchval(
                    "SELECT checksum FROM schema_migrations WHERE version = $1", migration.version
                )
                if recorded is not None:
                    if recorded != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} changed after it"
                            " was applied; add a new migration instead"
                        )
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
                applied_now.append(migration.version)
                log.info("migration_applied", version=migration.version, name=migration.name)
    finally:
        await conn.close()  # also releases the session's advisory lock
    return applied_now


@dataclass(frozen=True)
class MigrationState:
    """One migration as the database knows it: `pending` (not applied yet), `applied`, `changed`
    (applied, but its file differs since: refused) or `unknown` (applied by a newer Veil)."""

    version: int
    name: str
    state: Literal["pending", "applied", "changed", "unknown"]
    applied_at: datetime | None


async def migration_status(dsn: str, directory: Path = DEFAULT_DIRECTORY) -> list[MigrationState]:
    """Every migration of `directory` and of the database, by version; changes nothing."""
    migrations = discover(directory)
    conn = await asyncpg.connect(dsn)
    try:
        rows = []
        if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            rows = await conn.fetch("SELECT version, name, checksum, applied_at FROM schema_migrations")
    finally:
        await conn.close()
    recorded = {row["version"]: row for row in rows}
    states = []
    for migration in migrations:
        row = recorded.pop(migration.version, None)
        if row is None:
            states.append(MigrationState(migration.version, migration.name, "pending", None))
        else:
            state: Literal["applied", "changed"] = (
                "applied" if row["checksum"] == migration.checksum else "changed"
            )
            states.append(MigrationState(migration.version, migration.name, state, row["applied_at"]))
    states += [MigrationState(v, row["name"], "unknown", row["applied_at"]) for v, row in recorded.items()]
    return sorted(states, key=lambda s: s.version)
