"""Conformance: one worker batch ending many runs in different ways, each as it would alone.

An adapter may write a batch's outcomes in one statement; every way a run ends must still
come out as it does for a single outcome (``test_conformance_record.py``), side by side.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from jobdeck.model import (
    MICROS,
    Job,
    JobError,
    Outcome,
    OutcomeKind,
    Progress,
    Status,
    now_us,
)
from jobdeck.store.base import ProgressUpdate, Store, WorkerBatch
from store_checks import assert_between, current

JobFactory = Callable[..., Awaitable[Job]]

BOOM = JobError("ValueError", "boom", "Traceback (most recent call last): ...")
LONG_LEASE = 30.0


async def test_one_batch_ends_each_run_as_alone(
    store: Store, start: JobFactory, add: JobFactory
) -> None:
    """Retried and final failures, a cancel request beating success, a stale attempt, the last
    progress carried, a hand-back, a cancel and another worker's job, all in one batch."""
    retried = await start(worker="w1", max_attempts=3)
    last_try = await start(worker="w1", max_attempts=1)
    stopped = await start(worker="w1", max_attempts=3)
    stale = await start(worker="w1")
    carried = await start(worker="w1")
    failed_carried = await start(worker="w1", max_attempts=3)
    handed = await start(worker="w1")
    cancelled = await start(worker="w1")
    foreign = await start(worker="w2")
    queued = await add()
    await store.request_cancel(stopped.id)
    stopped = await current(store, stopped.id)
    await store.request_cancel(cancelled.id)

    retry_at = now_us() + 3600 * MICROS
    before = now_us()

    def ended(job: Job, kind: OutcomeKind, **values: object) -> Outcome:
        values.setdefault("attempt", job.attempt)
        return Outcome(job.id, "w1", kind, finished_at=now_us(), **values)  # type: ignore[arg-type]

    batch = WorkerBatch(
        "w1",
        progress=[
            ProgressUpdate(carried.id, 5, 5, "all done"),  # ints beside floats
            ProgressUpdate(failed_carried.id, 2.5, None, "half"),
        ],
        outcomes=[
            ended(retried, OutcomeKind.FAILED, error=BOOM, retry_at=retry_at),
            ended(last_try, OutcomeKind.FAILED, error=BOOM, retry_at=retry_at),
            ended(stopped, OutcomeKind.SUCCEEDED, result="r"),
            ended(stale, OutcomeKind.SUCCEEDED, result="late", attempt=stale.attempt + 1),
            ended(carried, OutcomeKind.SUCCEEDED, result={"n": [1, "x"]}),
            ended(failed_carried, OutcomeKind.FAILED, error=BOOM),
            ended(handed, OutcomeKind.HANDED_BACK),
            ended(cancelled, OutcomeKind.CANCELLED),
            ended(foreign, OutcomeKind.SUCCEEDED, result=1),
            ended(queued, OutcomeKind.SUCCEEDED, result=1, attempt=None),
        ],
    )
    await store.record(batch, 100)
    after = now_us()

    job = await current(store, retried.id)
    assert (job.status, job.run_at, job.finished_at, job.error) == (
        Status.QUEUED,
        retry_at,
        None,
        BOOM,
    )
    assert [(e.attempt, e.type, e.message) for e in job.attempt_errors] == [
        (1, "ValueError", "boom")
    ]
    assert_between(job.attempt_errors[0].at, before, after)
    assert job.version > retried.version

    job = await current(store, last_try.id)
    assert (job.status, job.error, job.run_at) == (Status.FAILED, BOOM, last_try.run_at)
    assert_between(job.finished_at, before, after)
    assert [e.attempt for e in job.attempt_errors] == [1]

    job = await current(store, stopped.id)
    assert (job.status, job.result, job.error) == (Status.CANCELLED, None, None)
    assert_between(job.finished_at, before, after)

    assert await current(store, stale.id) == stale

    job = await current(store, carried.id)
    assert (job.status, job.result, job.progress) == (
        Status.SUCCEEDED,
        {"n": [1, "x"]},
        Progress(5, 5, "all done"),
    )
    assert job.lease_expires_at is None

    job = await current(store, failed_carried.id)
    assert (job.status, job.error, job.progress) == (
        Status.FAILED,
        BOOM,
        Progress(2.5, None, "half"),
    )

    job = await current(store, handed.id)
    assert (job.status, job.attempt, job.finished_at) == (Status.QUEUED, 0, None)

    job = await current(store, cancelled.id)
    assert job.status is Status.CANCELLED
    assert_between(job.finished_at, before, after)

    assert await current(store, foreign.id) == foreign
    assert await current(store, queued.id) == queued


async def test_progress_of_several_running_jobs_mixing_ints_and_floats(
    store: Store, start: JobFactory
) -> None:
    """One batch saves the progress of many running jobs, whole numbers beside fractions."""
    whole = await start(worker="w1")
    fraction = await start(worker="w1")

    await store.record(
        WorkerBatch(
            "w1",
            progress=[
                ProgressUpdate(whole.id, 3, 10, None),
                ProgressUpdate(fraction.id, 1.5, None, "half way"),
            ],
        ),
        100,
    )

    assert (await current(store, whole.id)).progress == Progress(3, 10, None)
    assert (await current(store, fraction.id)).progress == Progress(1.5, None, "half way")
