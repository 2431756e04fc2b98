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


class Flag:
    """A flag coroutines wait on, like :class:`asyncio.Event`, that :func:`wait_any` can
    wait on together with others at the cost of one future: no task per flag, so that a
    set wakes the waiter in one turn of the event loop. Not thread-safe: set it from the
    loop (``loop.call_soon_threadsafe(flag.set)`` from elsewhere)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return self._set

    def set(self) -> None:
        """Set the flag and wake everyone waiting on it."""
        if self._set:
            return
        self._set = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        """Unset the flag; waiters from now on wait for the next :meth:`set`."""
        self._set = False

    async def wait(self) -> None:
        """Wait until the flag is set (at once when it is)."""
        if not self._set:
            await _wait_on((self,), None)


async def wait_any(*flags: Flag, timeout: float) -> None:
    """Wait until one of ``flags`` is set or ``timeout`` seconds pass."""
    if any(flag._set for flag in flags):
        return
    await _wait_on(flags, timeout)


async def _wait_on(flags: tuple[Flag, ...], timeout: float | None) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    timer = None
    if timeout is not None:
        timer = loop.call_later(timeout, _wake, waiter)
    for flag in flags:
        flag._waiters.append(waiter)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        for flag in flags:
            flag._waiters.remove(waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
