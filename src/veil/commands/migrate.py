"""`veil migrate` (= `veil migrate up`), `veil migrate up --dry-run` and `veil migrate status`: the
database schema against the migrations shipped in this package."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg

from veil.commands.database import operator_database_url
from veil.commands.environment import configuration
from veil.commands.output import Subcommands, fail, note
from veil.core.logging import get_logger
from veil.core.migrations import MigrationError, MigrationState, apply_migrations, migration_status

log = get_logger("veil.commands.migrate")
T = TypeVar("T")


def _on_database(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except MigrationError as exc:
        fail(str(exc))
    except (OSError, asyncpg.PostgresError) as exc:
        fail(f"the database is unavailable ({type(exc).__name__})")


def _label(migration: MigrationState) -> str:
    return f"{migration.version:04d}_{migration.name}"


def _problems(states: list[MigrationState]) -> list[str]:
    return [
        f"{_label(m)} changed after it was applied"
        if m.state == "changed"
        else f"{_label(m)} is unknown to this Veil"
        for m in states
        if m.state in ("changed", "unknown")
    ]


def status(args: argparse.Namespace) -> int:
    """Every migration, applied (when) or pending; exit 1 unless the schema is up to date."""
    dsn = operator_database_url(configuration(args))
    states = _on_database(migration_status(dsn))
    for migration in states:
        when = f"  {migration.applied_at:%Y-%m-%d %H:%M:%S}Z" if migration.applied_at else ""
        print(f"{migration.state:<8} {_label(migration)}{when}")
    problems = _problems(states)
    if problems:
        fail(*problems)
    pending = [m for m in states if m.state == "pending"]
    if pending:
        note(f"{len(pending)} migration(s) pending: run `veil migrate up`")
        return 1
    note("the database is up to date")
    return 0


def up(args: argparse.Namespace) -> int:
    """Apply the pending migrations (or with --dry-run, name them and change nothing)."""
    dsn = operator_database_url(configuration(args))
    if getattr(args, "dry_run", False):
        states = _on_database(migration_status(dsn))
        problems = _problems(states)
        if problems:
            fail(*problems)
        pending = [m for m in states if m.state == "pending"]
        for migration in pending:
            print(f"would apply {_label(migration)}")
        note(f"{len(pending)} migration(s) would be applied; nothing was changed")
        return 0
    applied = _on_database(apply_migrations(dsn))
    log.info("migrations_done", applied=applied)
    note(f"{len(applied)} migration(s) applied; the database is up to date")
    return 0


def add_parser(commands: Subcommands) -> None:
    migrate = commands.add_parser("migrate", help="apply database migrations (or: status, up --dry-run)")
    migrate.set_defaults(handler=up)
    actions = migrate.add_subparsers(dest="action")
    actions.add_parser(
        "status", help="applied and pending migrations; exit 1 if any is pending"
    ).set_defaults(handler=status)
    upper = actions.add_parser("up", help="apply the pending migrations")
    upper.add_argument("--dry-run", action="store_true", help="name what would be applied, change nothing")
    upper.set_defaults(handler=up)
