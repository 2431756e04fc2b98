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
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _ledgered(ctx: JobContext, stops: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Write the run's start in the ledger, and at its end how it ended: ``returned``,
    ``raised``, or ``interrupted:<reason>`` when one of ``stops`` ended it."""
    ledger = writer()
    run = ledger.start(ctx.job_id, ctx.attempt, time.time())
    ending = "raised"
    try:
        yield
        ending = "returned"
    except stops:
        reason = ctx.interrupt_reason
        ending = f"interrupted:{reason.__name__ if reason is not None else 'unknown'}"
        raise
    finally:
        ledger.end(run, ending, time.time())


def _slices(ctx: JobContext, seconds: float) -> Iterator[float]:
    """The sleeps of ``seconds`` of work, none longer than :data:`SLICE_SECONDS`; the
    progress is reported after each, when the caller asks for the next."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        yield min(SLICE_SECONDS, left)
        ctx.progress(seconds - max(0.0, deadline - time.monotonic()), total=seconds)


@task(name="soak_async")
async def soak_async(ctx: JobContext, outcome: Outcome, seconds: Seconds, value: int) -> Any:
    """Work ``seconds`` (asyncio sleeps), then end as ``outcome`` says; logged in the ledger."""
    with _ledgered(ctx, (JobInterrupted, asyncio.CancelledError)):
        for pause in _slices(ctx, seconds):
            await ctx.asleep(pause)
        return _end(outcome, value)


@task(name="soak_sync")
def soak_sync(ctx: JobContext, outcome: Outcome, seconds: Seconds, value: int) -> Any:
    """Work ``seconds`` (``ctx.sleep``), then end as ``outcome`` says; logged in the ledger."""
    with _ledgered(ctx, (JobInterrupted,)):
        for pause in _slices(ctx, seconds):
            ctx.sleep(pause)
        return _end(outcome, value)
