"""One PostgreSQL LISTEN connection per process, shared by everything that waits for a NOTIFY.

PostgreSQL wakes every listening connection of a database on every NOTIFY, whatever its channel,
and each one then reads the queue to find out whether anything is for it. With one connection per
interested part (session revocations, the realtime hub, mail, exports) a process cost four wakeups
per message sent: a fifth of the database's CPU in the send benchmark of issue 19. So the parts
`subscribe` here instead, and the process keeps one connection listening on the union of their
channels.

Notifications are only delivered while the connection is up, so subscribers are told when it comes
up (`on_up`: assume anything may have happened meanwhile) and when it goes down (`on_down`: stop
trusting what notifications would have invalidated). A silent network loss is detected by a probe
every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from veil.core.logging import get_logger

log = get_logger(__name__)

Notify = Callable[[str, str], None]
# How the connection shows in pg_stat_activity.
APPLICATION_NAME = "veil-notifications"


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class _Subscriber:
    channels: tuple[str, ...]
    on_notify: Notify
    on_up: Callable[[], None]
    on_down: Callable[[], None]


class Notifications:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._subscribers: list[_Subscriber] = []
        self._by_channel: dict[str, list[Notify]] = {}
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None  # while up
        self._changing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="notifications")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def subscribe(
        self,
        channels: Sequence[str],
        on_notify: Notify,
        *,
        on_up: Callable[[], None] = _nothing,
        on_down: Callable[[], None] = _nothing,
    ) -> None:
        """Deliver these channels' notifications to `on_notify` from now on. `on_up` is called at
        once if the connection is up (and listening on them), else when it comes up."""
        subscriber = _Subscriber(tuple(channels), on_notify, on_up, on_down)
        async with self._changing:
            self._subscribers.append(subscriber)
            new = [channel for channel in subscriber.channels if channel not in self._by_channel]
            for channel in subscriber.channels:
                self._by_channel.setdefault(channel, []).append(on_notify)
            conn = self._conn
            if conn is None:
                return
            try:
                for channel in new:
                    await conn.add_listener(channel, self._deliver)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The connection is failing: the loop notices, reconnects and listens on all.
                log.warning("listener_subscribe_failed", error=type(exc).__name__)
                return
        subscriber.on_up()

    def _deliver(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        for on_notify in self._by_channel.get(channel, ()):
            on_notify(channel, str(payload))

    async def _run_forever(self) -> None:
        while True:
            conn: asyncpg.Connection[asyncpg.Record] | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self._dsn, timeout=5, server_settings={"application_name": APPLICATION_NAME}
                )
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                async with self._changing:
                    for channel in self._by_channel:
                        await conn.add_listener(channel, self._deliver)
                    self._conn = conn
                    subscribers = list(self._subscribers)
                for subscriber in subscribers:
                    subscriber.on_up()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=5)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: report it as down, then reconnect
                log.warning("listener_lost", error=type(exc).__name__)
            finally:
                self._conn = None
                for subscriber in self._subscribers:
                    subscriber.on_down()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(1)
