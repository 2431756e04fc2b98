"""Task kinds of the latency benchmark, loaded in every process with
``JOBDECK_TASKS=latency_tasks`` (``bench/`` on ``PYTHONPATH``).

``sync_steps`` is the built-in ``steps`` as a plain function: it runs in the worker's thread
pool and stops at ``ctx.sleep``, which wakes at once when the job is cancelled.
"""

from __future__ import annotations

import jobdeck
from jobdeck import JobContext


@jobdeck.task(name="sync_steps")
def sync_steps(ctx: JobContext, n_steps: int = 10, step_seconds: float = 1.0) -> dict[str, int]:
    """``n_steps`` steps of ``step_seconds`` each, with progress, in a thread."""
    ctx.progress(0, total=n_steps)
    for step in range(1, n_steps + 1):
        ctx.sleep(step_seconds)
        ctx.progress(step)
    return {"steps": n_steps}
