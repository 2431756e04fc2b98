"""Task kinds of the fault tests, loaded by the processes with ``JOBDECK_TASKS=fault_tasks``.

The test modules put this directory on the processes' ``PYTHONPATH`` (see
:func:`faults.load.task_env`); pytest itself never needs to import it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from jobdeck import JobContext, task


@task(name="flaky", max_attempts=1000)
async def flaky(
    ctx: JobContext, fail_times: Annotated[int, Field(ge=0, le=1000)] = 0
) -> dict[str, int]:
    """Fail at once on the first ``fail_times`` attempts, then succeed: a job that moves
    between ``running`` and ``queued`` as fast as the worker retries it."""
    if ctx.attempt <= fail_times:
        raise RuntimeError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


@task(name="chatty")
async def chatty(
    ctx: JobContext,
    n_steps: Annotated[int, Field(ge=0, le=10_000)] = 10,
    step_seconds: Annotated[float, Field(ge=0, le=10)] = 0.01,
) -> dict[str, int]:
    """``n_steps`` steps, each one a progress update and two log lines: writes for every
    flush of the worker."""
    ctx.progress(0, total=n_steps)
    for step in range(1, n_steps + 1):
        await ctx.asleep(step_seconds)
        ctx.progress(step, message=f"step {step}")
        ctx.log(f"step {step} of {n_steps}")
        ctx.log(f"still going after step {step}", level="debug")
    return {"steps": n_steps}


@task(name="nap")
def nap(
    ctx: JobContext,
    seconds: Annotated[float, Field(ge=0, le=60)] = 1.0,
    steps: Annotated[int, Field(ge=1, le=1000)] = 10,
) -> dict[str, float]:
    """A sync task (it runs in a thread): ``steps`` naps adding up to ``seconds``, with
    progress after each; it stops at the next nap once the run must stop."""
    ctx.progress(0, total=steps)
    for step in range(1, steps + 1):
        ctx.sleep(seconds / steps)
        ctx.progress(step)
    return {"seconds": seconds}
