"""A background task a service runs for the life of its process (maintenance rounds, export builds).

`step()` does one unit of work and says whether it found any: while it does, the next step follows
at once; otherwise the worker sleeps `idle_seconds` or until `wake()`. A dependency being down is
logged and retried later; any other error is logged with its traceback and does not end the task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from veil.core.logging import get_logger
from veil.core.problems import BackendUnavailable

log = get_logger(__name__)


class Worker:
    def __init__(self, name: str, step: Callable[[], Awaitable[bool]], idle_seconds: float) -> None:
        self._name = name
        self._step = step
        self._idle = idle_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self, *, idle_first: bool = False) -> None:
        self._task = asyncio.create_task(self._run(idle_first), name=self._name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, idle_first: bool) -> None:
        busy = not idle_first
        while True:
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle)
                self._wake.clear()
            try:
                busy = await self._step()
            except BackendUnavailable as exc:
                log.warning("worker_deferred", worker=self._name, reason=str(exc))
                busy = False
            except Exception:
                log.exception("worker_failed", worker=self._name)
                busy = False
