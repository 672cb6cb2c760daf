"""How a subcommand reaches the database: the configured one, or in development the database of the
running `make run` system; one connection, opened for the command and closed after it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from veil.commands.output import fail
from veil.core.clock import SystemClock
from veil.core.config import Settings
from veil.core.db import Database
from veil.core.metrics import Metrics
from veil.core.problems import BackendUnavailable, Problem
from veil.operator.service import OperatorService

T = TypeVar("T")


def database_url(settings: Settings) -> str:
    if settings.database_url is None:
        fail("DATABASE_URL is not set")
    return settings.database_url.get_secret_value()


def operator_database_url(settings: Settings) -> str:
    """DATABASE_URL, or in development the database of the running `make run` system."""
    if settings.database_url is not None or settings.is_production:
        return database_url(settings)
    from veil.devstack.postgres import EmbeddedPostgres
    from veil.devstack.stack import DATABASE_NAME

    postgres = EmbeddedPostgres(settings.data_dir / "postgres")
    if postgres.pid is None:
        fail("no database: start the system with `make run`, or set DATABASE_URL")
    return postgres.url(DATABASE_NAME)


@asynccontextmanager
async def operator_database(settings: Settings) -> AsyncIterator[Database]:
    """A one-connection pool on the operator's database (see `operator_database_url`)."""
    db = Database(
        operator_database_url(settings), max_size=1, timeout=settings.db_timeout_seconds, metrics=Metrics()
    )
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def run_on_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """`work` on the operator's database; an unreachable database or a refused action (a problem
    from a service: not found, conflict, invalid input) becomes one line and exit status 1."""

    async def run() -> T:
        async with operator_database(settings) as db:
            return await work(db)

    try:
        return asyncio.run(run())
    except BackendUnavailable:
        fail("the database is unavailable")
    except Problem as problem:
        fail(*_problem_lines(problem))


def run_operator(settings: Settings, work: Callable[[OperatorService], Awaitable[T]]) -> T:
    """`work` with the operator service of /v1/admin, acting as the command line."""
    return run_on_database(settings, lambda db: work(OperatorService(db, SystemClock(), sessions=None)))


def _problem_lines(problem: Problem) -> list[str]:
    if problem.errors:
        return [f"{'.'.join(str(p) for p in e.loc)}: {e.msg}" for e in problem.errors]
    return [problem.detail]
