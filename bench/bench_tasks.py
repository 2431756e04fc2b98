"""Task kinds of the benchmarks, loaded in every process with ``JOBDECK_TASKS=bench_tasks``
(``bench/`` on ``PYTHONPATH``). The no-op of the drain and pickup figures is the built-in
``steps`` with ``n_steps=0``.

- ``sync_steps``: the built-in ``steps`` as a plain function; it runs in the worker's thread
  pool and stops at ``ctx.sleep``, which wakes at once when the job is cancelled.
- ``progress_sync`` / ``progress_async``: ``ctx.progress`` in a hot loop, timed by the task
  itself beside an empty loop and a loop calling a no-op function (the baselines).
- ``ticker``: progress every ``interval`` seconds, the message holding the wall-clock time of
  the call, until cancelled (the event fan-out measures change-to-delivery with it).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Annotated, Any

from pydantic import Field

import jobdeck
from jobdeck import JobContext

Calls = Annotated[int, Field(ge=1, le=100_000_000)]


@jobdeck.task(name="sync_steps")
def sync_steps(ctx: JobContext, n_steps: int = 10, step_seconds: float = 1.0) -> dict[str, int]:
    """``n_steps`` steps of ``step_seconds`` each, with progress, in a thread."""
    ctx.progress(0, total=n_steps)
    for step in range(1, n_steps + 1):
        ctx.sleep(step_seconds)
        ctx.progress(step)
    return {"steps": n_steps}


def _noop(_: int) -> None:
    """What the baseline loop calls."""


def progress_loops(ctx: JobContext, calls: int) -> dict[str, Any]:
    """Nanoseconds of ``calls`` rounds of: nothing, a no-op call, ``ctx.progress(i)``."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(calls):
        pass
    empty = clock() - start
    start = clock()
    for i in range(calls):
        _noop(i)
    noop = clock() - start
    ctx.progress(0, total=calls)
    start = clock()
    for i in range(calls):
        ctx.progress(i)
    progress = clock() - start
    return {"calls": calls, "empty_ns": empty, "noop_call_ns": noop, "progress_ns": progress}


@jobdeck.task(name="progress_sync", max_attempts=1)
def progress_sync(ctx: JobContext, calls: Calls = 1_000_000) -> dict[str, Any]:
    """``ctx.progress`` ``calls`` times in a worker thread."""
    return progress_loops(ctx, calls)


@jobdeck.task(name="progress_async", max_attempts=1)
async def progress_async(ctx: JobContext, calls: Calls = 1_000_000) -> dict[str, Any]:
    """``ctx.progress`` ``calls`` times on the worker's event loop."""
    return progress_loops(ctx, calls)


@jobdeck.task(name="ticker", max_attempts=1)
async def ticker(
    ctx: JobContext,
    ticks: Annotated[int, Field(ge=1)] = 3600,
    interval: Annotated[float, Field(gt=0, le=60)] = 1.0,
) -> dict[str, int]:
    """Progress every ``interval`` seconds (after a random phase), message = ``time.time()``."""
    await asyncio.sleep(random.uniform(0, interval))
    for tick in range(1, ticks + 1):
        ctx.progress(tick, total=ticks, message=f"{time.time():.6f}")
        await ctx.asleep(interval)
    return {"ticks": ticks}
