"""Small asyncio helpers shared by the worker and the stores."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

#: How long to wait for a cancelled task before cancelling it again.
RECANCEL_SECONDS = 0.1


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it is done.

    The cancellation is repeated until it takes: on Python 3.11, code waiting inside
    ``asyncio.wait_for`` (a connection pool's ``getconn``, for one) can swallow a single
    cancel, and a task that swallowed it would otherwise be waited on for ever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def wait_any(*events: asyncio.Event, timeout: float) -> None:
    """Wait until one of ``events`` is set or ``timeout`` seconds pass."""
    if any(e.is_set() for e in events):
        return
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
