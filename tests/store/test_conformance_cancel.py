"""Conformance: request_cancel, retry and delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from jobdeck.errors import JobActive, JobConflict, JobNotFound
from jobdeck.model import MICROS, Job, JobError, OutcomeKind, Status, new_job_id, now_us
from jobdeck.store.base import CancelEffect, NewLogLine, Store, WorkerBatch
from store_checks import assert_between

JobFactory = Callable[..., Awaitable[Job]]
Finisher = Callable[..., Awaitable[Job | None]]

LONG_LEASE = 30.0


async def failed_job(start: JobFactory, finish: Finisher, **fields: object) -> Job:
    """A job that ran once and failed for good."""
    job = await start(max_attempts=1, **fields)
    failed = await finish(job, OutcomeKind.FAILED, error=JobError("ValueError", "boom", "tb"))
    assert failed is not None and failed.status is Status.FAILED
    return failed


async def assert_no_logs(store: Store, job_id: str) -> None:
    """The logs of a job that no longer exists: JobNotFound or no lines."""
    try:
        page = await store.logs(job_id, None, 100)
    except JobNotFound:
        return
    assert page.items == []


# --- request_cancel ---------------------------------------------------------------------------


async def test_cancel_a_queued_job_cancels_it_at_once(store: Store, add: JobFactory) -> None:
    """A queued job is cancelled at once: status cancelled, finished_at, new version."""
    queued = await add(queue="q1")
    before = now_us()
    job, effect = await store.request_cancel(queued.id)
    after = now_us()
    assert effect is CancelEffect.CANCELLED
    assert job.status is Status.CANCELLED
    assert_between(job.finished_at, before, after)
    assert job.version > queued.version
    assert await store.get(queued.id) == job
    assert await store.claim("w1", ["q1"], ["steps"], 1, LONG_LEASE) == []


async def test_cancel_a_running_job_asks_its_worker(store: Store, start: JobFactory) -> None:
    """A running job gets cancel_requested and stays running with its worker."""
    running = await start(worker="w1")
    job, effect = await store.request_cancel(running.id)
    assert effect is CancelEffect.REQUESTED
    assert job.status is Status.RUNNING
    assert job.cancel_requested is True
    assert (job.worker, job.finished_at) == ("w1", None)
    assert job.version > running.version
    assert await store.get(running.id) == job


async def test_cancel_a_running_job_twice_changes_nothing(store: Store, start: JobFactory) -> None:
    """A second cancel of a running job still answers REQUESTED and leaves the job as it was."""
    running = await start(worker="w1")
    first, _ = await store.request_cancel(running.id)
    again, effect = await store.request_cancel(running.id)
    assert effect is CancelEffect.REQUESTED
    assert again == first


@pytest.mark.parametrize("outcome", [OutcomeKind.SUCCEEDED, OutcomeKind.FAILED])
async def test_cancel_a_terminal_job_changes_nothing(
    store: Store, start: JobFactory, finish: Finisher, outcome: OutcomeKind
) -> None:
    """Cancelling a succeeded or failed job answers UNCHANGED and leaves it as it is."""
    job = await start(max_attempts=1)
    done = await finish(job, outcome, result=1, error=JobError("E", "m"))
    assert done is not None and done.is_terminal
    same, effect = await store.request_cancel(job.id)
    assert effect is CancelEffect.UNCHANGED
    assert same == done
    assert await store.get(job.id) == done


async def test_cancel_a_cancelled_job_changes_nothing(store: Store, add: JobFactory) -> None:
    """Cancelling twice: the second answers UNCHANGED, version unchanged."""
    queued = await add()
    first, _ = await store.request_cancel(queued.id)
    second, effect = await store.request_cancel(queued.id)
    assert effect is CancelEffect.UNCHANGED
    assert second == first


async def test_cancel_a_missing_job_raises(store: Store) -> None:
    """request_cancel of an unknown id raises JobNotFound."""
    with pytest.raises(JobNotFound):
        await store.request_cancel(new_job_id())


# --- retry --------------------------------------------------------------------------------------


async def test_retry_a_failed_job(store: Store, start: JobFactory, finish: Finisher) -> None:
    """A failed job goes back to the queue to run now, one more attempt allowed, history kept."""
    failed = await failed_job(start, finish, worker="w1")
    assert (failed.attempt, failed.max_attempts, len(failed.attempt_errors)) == (1, 1, 1)

    before = now_us()
    job = await store.retry(failed.id)
    after = now_us()
    assert job.status is Status.QUEUED
    assert_between(job.run_at, before, after)
    assert job.max_attempts == 2
    assert job.attempt_errors == failed.attempt_errors
    assert job.version > failed.version
    assert await store.get(failed.id) == job

    [claimed] = await store.claim("w2", [failed.queue], ["steps"], 1, LONG_LEASE)
    assert (claimed.id, claimed.attempt) == (failed.id, 2)


async def test_retry_a_cancelled_job(store: Store, add: JobFactory) -> None:
    """A cancelled job, due in an hour, retried: queued, due now, max_attempts kept when enough."""
    queued = await add(queue="q1", run_at=now_us() + 3600 * MICROS, max_attempts=3)
    cancelled, _ = await store.request_cancel(queued.id)
    before = now_us()
    job = await store.retry(queued.id)
    after = now_us()
    assert job.status is Status.QUEUED
    assert_between(job.run_at, before, after)
    assert (job.max_attempts, job.attempt, job.cancel_requested) == (3, 0, False)
    assert job.version > cancelled.version
    [claimed] = await store.claim("w1", ["q1"], ["steps"], 1, LONG_LEASE)
    assert claimed.id == queued.id


async def test_retry_a_job_cancelled_while_running(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """A job that ended cancelled after a cancel request runs again without the old request."""
    running = await start(max_attempts=1)
    await store.request_cancel(running.id)
    cancelled = await finish(running, OutcomeKind.CANCELLED)
    assert cancelled is not None and cancelled.status is Status.CANCELLED
    job = await store.retry(running.id)
    assert (job.status, job.cancel_requested, job.max_attempts) == (Status.QUEUED, False, 2)
    [claimed] = await store.claim("w2", [running.queue], ["steps"], 1, LONG_LEASE)
    assert (claimed.attempt, claimed.cancel_requested) == (2, False)


async def test_retry_refuses_active_and_succeeded_jobs(
    store: Store, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """retry of a queued, running or succeeded job raises JobConflict and changes nothing."""
    queued = await add()
    running = await start()
    succeeded = await finish(await start(), OutcomeKind.SUCCEEDED, result=1)
    assert succeeded is not None and succeeded.status is Status.SUCCEEDED
    for job in (queued, running, succeeded):
        with pytest.raises(JobConflict):
            await store.retry(job.id)
        assert await store.get(job.id) == job


async def test_retry_a_missing_job_raises(store: Store) -> None:
    """retry of an unknown id raises JobNotFound."""
    with pytest.raises(JobNotFound):
        await store.retry(new_job_id())


# --- delete ---------------------------------------------------------------------------------------


async def test_delete_a_terminal_job_and_its_logs(
    store: Store, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """Deleting a terminal job forgets it and its log lines (a new job of that id has none)."""
    job = await start(worker="w1")
    line = NewLogLine(job.id, now_us(), "info", "hello")
    await store.record(WorkerBatch("w1", logs=[line, line]), 1000)
    assert len((await store.logs(job.id, None, 100)).items) == 2
    await finish(job, OutcomeKind.SUCCEEDED)

    await store.delete(job.id)
    assert await store.get(job.id) is None
    assert await store.versions([job.id]) == {}
    await assert_no_logs(store, job.id)
    with pytest.raises(JobNotFound):
        await store.delete(job.id)
    await add(id=job.id)
    assert (await store.logs(job.id, None, 100)).items == []


async def test_delete_refuses_active_jobs(store: Store, add: JobFactory, start: JobFactory) -> None:
    """Deleting a queued or running job raises JobActive and keeps it."""
    for job in (await add(), await start()):
        with pytest.raises(JobActive):
            await store.delete(job.id)
        assert await store.get(job.id) == job


async def test_delete_a_missing_job_raises(store: Store) -> None:
    """delete of an unknown id raises JobNotFound."""
    with pytest.raises(JobNotFound):
        await store.delete(new_job_id())


async def test_deleted_id_can_be_used_again(store: Store, add: JobFactory) -> None:
    """After a delete the id is free: enqueueing it creates a new job, version 1."""
    job = await add()
    await store.request_cancel(job.id)
    await store.delete(job.id)
    again = await add(id=job.id, priority=4)
    assert (again.status, again.priority, again.version) == (Status.QUEUED, 4, 1)
