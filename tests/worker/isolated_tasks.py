"""Task functions the isolation tests register with ``isolation="process"``.

They live at the top level of a module of their own, since the child process imports them by
module and qualified name. Each writes its process id to ``pid_file`` (when given) as soon as
it starts, so that a test can tell when it runs and whether its process is gone.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from jobdeck.errors import JobInterrupted
from jobdeck.tasks import JobContext


class Kaput(Exception):
    """An error of the task's own."""


def note_pid(pid_file: str | None) -> None:
    """Write this process's id to ``pid_file`` in one step (readers never see half of it)."""
    if pid_file:
        partial = Path(f"{pid_file}.partial")
        partial.write_text(str(os.getpid()))
        partial.replace(pid_file)


def oblivious(pid_file: str, how: str = "sleep", seconds: float = 60) -> str:
    """Never checks: sleeps (``how="sleep"``) or spins (``how="busy"``) for ``seconds``."""
    note_pid(pid_file)
    deadline = time.monotonic() + seconds
    if how == "busy":
        while time.monotonic() < deadline:
            pass
    else:
        time.sleep(seconds)
    return "finished anyway"


def attentive(ctx: JobContext, pid_file: str) -> str:
    """Waits in ``ctx.sleep``; logs the interrupt it sees there, then stops."""
    note_pid(pid_file)
    try:
        ctx.sleep(60)
    except JobInterrupted as exc:
        ctx.log(f"interrupted: {type(exc).__name__}")
        raise
    return "woke"


async def dreamy(ctx: JobContext, pid_file: str, wake: bool = False) -> dict[str, int]:
    """Async: returns at once when ``wake``, else sleeps in asyncio.sleep(60) and logs that
    it was cancelled."""
    note_pid(pid_file)
    if not wake:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            ctx.log("cancelled in asyncio.sleep")
            raise
    return {"pid": os.getpid()}


def count(ctx: JobContext, items: int) -> dict[str, int]:
    """Reports progress and logs a line per item; returns its process id."""
    ctx.progress(0, total=items, message="starting")
    for item in range(1, items + 1):
        ctx.progress(item, message=f"item {item} of {items}")
        ctx.log(f"item {item} done", level="debug" if item % 2 else "info")
    print("a print does not disturb the worker")  # the child's stdout is not the protocol's
    return {"items": items, "pid": os.getpid()}


def explode(detail: str) -> None:
    """Raises an exception of its own type."""
    raise Kaput(f"cannot go on: {detail}")


def perish(ctx: JobContext, how: str) -> str:
    """Its first attempt's process dies without a word (``os._exit(3)`` or SIGKILL)."""
    if ctx.attempt == 1:
        if how == "exit":
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)
    return f"survived on attempt {ctx.attempt}"
