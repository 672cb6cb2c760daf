"""Waiting for something another task, process or server does, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str, seconds: float = 5.0) -> None:
    """Poll `condition` (a function, or a coroutine function) every 10 ms until it holds; fail
    with `what` (the thing that should have happened) after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)
