"""PostgreSQL access: one asyncpg pool per process and named transactions.

Every unit of work runs in `db.transaction("name")`: it commits when the block ends normally and
rolls back otherwise; its name shows up in the metrics. Connection loss, a restarting server and
timeouts all surface as `BackendUnavailable`, so a caller never waits longer than
`db_timeout_seconds` and never sees a driver exception.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg

from veil.core.logging import get_logger
from veil.core.metrics import Metrics
from veil.core.problems import BackendUnavailable

log = get_logger(__name__)

Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"

# Errors that mean "the database is not there right now" rather than "this query is wrong".
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


async def _keep_session(_conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """What the pool runs when a connection comes back, instead of asyncpg's default reset query
    (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`): nothing, which saves one round
    trip per request (about a tenth of the server's CPU per send in the profile of issue 19).

    asyncpg still rolls back a transaction left open and drops listener callbacks before calling
    this. What the default query clears is session state that Veil never leaves on a pooled
    connection: advisory locks are transaction-scoped (`pg_advisory_xact_lock`), settings are `SET
    LOCAL`, cursors live inside transactions, and LISTEN and the migrations' session lock use
    connections of their own (core/listener.py, core/migrations.py). Code that needs session state
    must take its own connection too; tests/integration/test_db_session_state.py keeps watch."""


class Database:
    """A lazily connecting pool. Opening never fails because the server is down; using it does."""

    def __init__(self, dsn: str, *, max_size: int, timeout: float, metrics: Metrics):
        self._dsn = dsn
        self._max_size = max_size
        self._timeout = timeout
        self._metrics = metrics
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def open(self) -> None:
        self._pool = asyncpg.create_pool(
            self._dsn,
            min_size=0,  # connect on demand: the process starts (and reports not-ready) without PG
            max_size=self._max_size,
            timeout=self._timeout,
            command_timeout=self._timeout,
            max_inactive_connection_lifetime=60,
            reset=_keep_session,
        )
        await self._pool
        self._metrics.watch_db_pool(self._max_size, self._pool_usage)
        try:
            await self.ping()
        except BackendUnavailable:
            log.warning("database_unreachable_at_start")

    async def close(self) -> None:
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self._timeout)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None

    def _pool_usage(self) -> tuple[int, int]:
        """(open, lent out) connections: read at scrape time, no I/O."""
        if self._pool is None:
            return 0, 0
        size = self._pool.get_size()
        return size, size - self._pool.get_idle_size()

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("Database.open() was not called")
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection without a transaction (for reads that need no atomicity)."""
        try:
            async with self.pool.acquire(timeout=self._timeout) as conn:
                yield conn
        except _UNAVAILABLE_ERRORS as exc:
            raise BackendUnavailable("database unavailable") from exc

    @asynccontextmanager
    async def transaction(self, name: str, *, isolation: str = "read_committed") -> AsyncIterator[Connection]:
        """Run a named unit of work: commit on normal exit, roll back on any exception."""
        started = time.perf_counter()
        outcome = "rollback"
        try:
            async with (
                self.pool.acquire(timeout=self._timeout) as conn,
                conn.transaction(
                    isolation=isolation  # type: ignore[arg-type]
                ),
            ):
                yield conn
                outcome = "commit"
        except _UNAVAILABLE_ERRORS as exc:
            outcome = "unavailable"
            raise BackendUnavailable("database unavailable") from exc
        finally:
            self._metrics.db_transactions.labels(name, outcome).observe(time.perf_counter() - started)

    async def ping(self) -> None:
        """Raise BackendUnavailable unless a round trip succeeds within the timeout."""
        try:
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1", timeout=self._timeout)
        except _UNAVAILABLE_ERRORS as exc:
            raise BackendUnavailable("database unavailable") from exc
