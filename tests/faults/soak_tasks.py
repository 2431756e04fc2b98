"""Task kinds of the soak, loaded by its processes with ``JOBDECK_TASKS=faults.soak_tasks``.

``soak_async`` (an async task, cancelled outright when it must stop) and ``soak_sync`` (a
cooperative sync task in the worker's threads, stopping at its next ``ctx.sleep``) do the
same thing: work for ``seconds`` in slices, reporting progress, then end as ``outcome`` says:

- ``succeed``: return ``{"value": value}``;
- ``raise``: raise :class:`SoakError`;
- ``time_out`` and ``cancel``: nothing of their own; they run far longer than their timeout,
  or until the driver cancels them, and would return ``{"value": value}`` if never stopped.

Every run writes its start and its end to the ledger (:mod:`faults.soak_ledger`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from pydantic import Field

from jobdeck import JobContext, task
from jobdeck.errors import JobInterrupted

from .soak_ledger import writer

Outcome = Literal["succeed", "raise", "time_out", "cancel"]
Seconds = Annotated[float, Field(ge=0, le=3600)]
#: Longest sleep between two progress reports.
SLICE_SECONDS = 0.1


class SoakError(Exception):
    """What a ``raise`` job raises."""


def _end(outcome: str, value: int) -> dict[str, Any]:
    if outcome == "raise":
        raise SoakError(f"soak job asked to raise (value {value})")
    return {"value": value}


def _stopped(ctx: JobContext) -> str:
    reason = ctx.interrupt_reason
    return f"interrupted:{reason.__name__ if reason is not None else 'unknown'}"


@task(name="soak_async")
async def soak_async(ctx: JobContext, outcome: Outcome, seconds: Seconds, value: int) -> Any:
    """Work ``seconds`` (asyncio sleeps), then end as ``outcome`` says; logged in the ledger."""
    ledger = writer()
    run = ledger.start(ctx.job_id, ctx.attempt, time.time())
    ending = "raised"
    try:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await ctx.asleep(min(SLICE_SECONDS, left))
            ctx.progress(seconds - max(0.0, deadline - time.monotonic()), total=seconds)
        result = _end(outcome, value)
        ending = "returned"
        return result
    except (JobInterrupted, asyncio.CancelledError):
        ending = _stopped(ctx)
        raise
    finally:
        ledger.end(run, ending, time.time())


@task(name="soak_sync")
def soak_sync(ctx: JobContext, outcome: Outcome, seconds: Seconds, value: int) -> Any:
    """Work ``seconds`` (``ctx.sleep``), then end as ``outcome`` says; logged in the ledger."""
    ledger = writer()
    run = ledger.start(ctx.job_id, ctx.attempt, time.time())
    ending = "raised"
    try:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ctx.sleep(min(SLICE_SECONDS, left))
            ctx.progress(seconds - max(0.0, deadline - time.monotonic()), total=seconds)
        result = _end(outcome, value)
        ending = "returned"
        return result
    except JobInterrupted:
        ending = _stopped(ctx)
        raise
    finally:
        ledger.end(run, ending, time.time())
