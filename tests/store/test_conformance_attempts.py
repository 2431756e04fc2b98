"""An outcome names the attempt it ends: a late outcome of an earlier attempt changes nothing,
even when the same worker holds the job again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from jobdeck.model import Job, JobError, Outcome, OutcomeKind, Status, now_us
from jobdeck.store.base import Store, WorkerBatch
from store_checks import current

JobFactory = Callable[..., Awaitable[Job]]


async def record(store: Store, job: Job, kind: OutcomeKind, attempt: int, **values: object) -> None:
    outcome = Outcome(job.id, "w1", kind, finished_at=now_us(), attempt=attempt, **values)  # type: ignore[arg-type]
    await store.record(WorkerBatch("w1", outcomes=[outcome]), 1000)


async def reclaimed(store: Store, start: JobFactory) -> Job:
    """A job that failed its first attempt under w1 and is now running attempt 2 under w1."""
    first = await start(worker="w1", max_attempts=3)
    await record(store, first, OutcomeKind.FAILED, 1, error=JobError("E", "m"), retry_at=0)
    [second] = await store.claim("w1", [first.queue], [first.kind], 1, 30)
    assert (second.id, second.attempt) == (first.id, 2)
    return second


@pytest.mark.parametrize(
    "kind", [OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.HANDED_BACK]
)
async def test_a_late_outcome_of_an_earlier_attempt_changes_nothing(
    store: Store, start: JobFactory, kind: OutcomeKind
) -> None:
    """Attempt 1's outcome, written while attempt 2 runs, leaves attempt 2 running."""
    running = await reclaimed(store, start)
    await record(store, running, kind, 1, result=1, error=JobError("E", "late"), retry_at=0)
    after = await current(store, running.id)
    assert after.status is Status.RUNNING
    assert after.attempt == 2
    assert after.version == running.version


async def test_the_outcome_of_the_current_attempt_applies(store: Store, start: JobFactory) -> None:
    """The same outcome naming attempt 2 ends the job."""
    running = await reclaimed(store, start)
    await record(store, running, OutcomeKind.SUCCEEDED, 2, result={"ok": True})
    after = await current(store, running.id)
    assert after.status is Status.SUCCEEDED
    assert after.result == {"ok": True}
