"""Conformance: one worker batch ending many runs in different ways, each as it would alone.

An adapter may write a batch's outcomes in one statement; every way a run ends must still
come out as it does for a single outcome (``test_conformance_record.py``), side by side.
"""

from __future__ import annotations

import math
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
from jobdeck.store.base import NewLogLine, ProgressUpdate, Store, WorkerBatch
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


async def test_ends_keep_every_result_error_and_last_progress_as_written(
    store: Store, start: JobFactory
) -> None:
    """Results of every JSON shape, error text with quotes and line breaks, and last progress
    numbers including an infinity come out of one batch exactly as the runs reported them."""
    results = [None, 0, 2.5, 'text with "quotes" and ünïcode', [1, [2, {"a": None}]], {"k": True}]
    runs = [await start(worker="w1") for _ in results]
    broken = await start(worker="w1", max_attempts=1)
    odd = JobError("KeyError", "'x'\nline two \\ \"quoted\"", 'Traceback\n  "here"')
    progress = [
        ProgressUpdate(run.id, n, math.inf, f"step {n} «done»") for n, run in enumerate(runs)
    ]

    await store.record(
        WorkerBatch(
            "w1",
            progress=[*progress, ProgressUpdate(broken.id, -1.5, None, None)],
            outcomes=[
                *(
                    Outcome(run.id, "w1", OutcomeKind.SUCCEEDED, result=result, attempt=1)
                    for run, result in zip(runs, results, strict=True)
                ),
                Outcome(broken.id, "w1", OutcomeKind.FAILED, error=odd, attempt=1),
            ],
        ),
        100,
    )

    for n, (run, result) in enumerate(zip(runs, results, strict=True)):
        job = await current(store, run.id)
        assert job.status is Status.SUCCEEDED
        assert job.result == result
        assert job.progress == Progress(n, math.inf, f"step {n} «done»")
    job = await current(store, broken.id)
    assert job.status is Status.FAILED
    assert job.error == odd
    assert job.progress == Progress(-1.5, None, None)


async def test_a_claim_writes_the_batch_it_carries_and_never_takes_back_a_run_it_requeued(
    store: Store, start: JobFactory, add: JobFactory
) -> None:
    """``claim(done=batch)``: the batch's runs end as ``record`` would end them, the claim
    takes the queued jobs, a run the batch queues again (retried, handed back) waits for the
    next claim, and the batch is marked recorded; with log lines or a hand-back in the batch
    as without."""
    for extra in ("nothing", "log lines", "hand-back"):
        queue = f"q-carry-{extra.replace(' ', '-')}"
        succeeded = await start(worker="w1", queue=queue)
        retried = await start(worker="w1", queue=queue, max_attempts=3)
        handed = await start(worker="w1", queue=queue)
        waiting = [await add(queue=queue) for _ in range(2)]
        outcomes = [
            Outcome(succeeded.id, "w1", OutcomeKind.SUCCEEDED, result={"n": 1}, attempt=1),
            Outcome(retried.id, "w1", OutcomeKind.FAILED, error=BOOM, retry_at=now_us(), attempt=1),
        ]
        logs = []
        if extra == "hand-back":
            outcomes.append(Outcome(handed.id, "w1", OutcomeKind.HANDED_BACK, attempt=1))
        if extra == "log lines":
            logs.append(NewLogLine(succeeded.id, now_us(), "info", "last words"))
        batch = WorkerBatch(
            "w1",
            progress=[ProgressUpdate(succeeded.id, 1, 1, "done")],
            logs=logs,
            outcomes=outcomes,
        )

        claimed = await store.claim("w1", [queue], ["steps"], 10, LONG_LEASE, done=batch)

        assert batch.recorded, extra
        assert {j.id for j in claimed} == {j.id for j in waiting}, extra
        assert all(j.status is Status.RUNNING and j.worker == "w1" for j in claimed)
        done = await current(store, succeeded.id)
        assert done.status is Status.SUCCEEDED and done.result == {"n": 1}, extra
        assert done.progress == Progress(1, 1, "done")
        assert (await current(store, retried.id)).status is Status.QUEUED, extra
        again = await store.claim("w2", [queue], ["steps"], 10, LONG_LEASE)
        back = {retried.id: 2} | ({handed.id: 1} if extra == "hand-back" else {})
        assert {j.id: j.attempt for j in again} == back, extra
