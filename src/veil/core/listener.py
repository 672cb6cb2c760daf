"""A PostgreSQL LISTEN connection that keeps itself alive.

Notifications are only delivered while the connection is up, so users are told when it comes up
(`on_up`: assume anything may have happened meanwhile) and when it goes down (`on_down`: stop
trusting what notifications would have invalidated). A silent network loss is detected by a probe
every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import asyncpg

from veil.core.logging import get_logger

log = get_logger(__name__)

Notify = Callable[[str, str], None]


class PgListener:
    def __init__(
        self,
        dsn: str,
        channels: Sequence[str],
        on_notify: Notify,
        *,
        on_up: Callable[[], None] = lambda: None,
        on_down: Callable[[], None] = lambda: None,
        name: str = "listener",
    ) -> None:
        self._dsn = dsn
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_up = on_up
        self._on_down = on_down
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        self._on_notify(channel, str(payload))

    async def _run_forever(self) -> None:
        while True:
            conn: asyncpg.Connection[asyncpg.Record] | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._dsn, timeout=5)
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                for channel in self._channels:
                    await conn.add_listener(channel, self._deliver)
                self._on_up()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: report it as down, then reconnect
                log.warning("listener_lost", listener=self._name, error=type(exc).__name__)
            finally:
                self._on_down()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(1)
