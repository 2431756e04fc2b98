"""Conformance: the change hub — job subscriptions, work and cancel signals, across stores."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from jobdeck.model import Job, JobError, JobSpec, OutcomeKind, now_us
from jobdeck.store.base import NewLogLine, ProgressUpdate, Store, WorkerBatch

SpecFactory = Callable[..., JobSpec]
JobFactory = Callable[..., Awaitable[Job]]
Finisher = Callable[..., Awaitable[Job | None]]

LONG_LEASE = 30.0
#: A store publishes its own changes before the call that made them returns.
AT_ONCE = 0.0
#: Pushed notifications from another store object arrive within this.
PUSH_WAKE = 1.0
#: Changes made by another store object arrive by polling: allow several poll intervals.
REMOTE_WAKE = 3.0


async def is_set(event: asyncio.Event, timeout: float) -> bool:
    """Whether ``event`` is set within ``timeout`` seconds."""
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


async def test_subscription_wakes_on_every_change(
    store: Store, make_spec: SpecFactory, finish: Finisher
) -> None:
    """A subscriber to a job is woken, before the call returns, by each change made to it."""
    spec = make_spec(queue="q-hub", max_attempts=2)
    with store.hub.subscribe(spec.id) as sub:
        await store.enqueue([spec])
        assert await sub.wait(AT_ONCE), "enqueue"
        [job] = await store.claim("w1", ["q-hub"], ["steps"], 1, LONG_LEASE)
        assert await sub.wait(AT_ONCE), "claim"
        await store.record(WorkerBatch("w1", progress=[ProgressUpdate(job.id, 1, 3, "")]), 100)
        assert await sub.wait(AT_ONCE), "progress"
        await finish(job, OutcomeKind.FAILED, error=JobError("E", "m"), retry_at=now_us())
        assert await sub.wait(AT_ONCE), "failed and requeued"
        [job] = await store.claim("w1", ["q-hub"], ["steps"], 1, LONG_LEASE)
        assert await sub.wait(AT_ONCE), "claimed again"
        await store.request_cancel(job.id)
        assert await sub.wait(AT_ONCE), "cancel requested"
        await finish(job, OutcomeKind.CANCELLED)
        assert await sub.wait(AT_ONCE), "cancelled"
        await store.retry(job.id)
        assert await sub.wait(AT_ONCE), "retry"
        await store.request_cancel(job.id)
        assert await sub.wait(AT_ONCE), "cancel queued"


async def test_enqueue_signals_work(store: Store, make_spec: SpecFactory) -> None:
    """Enqueueing sets hub.work_available before it returns."""
    store.hub.work_available.clear()
    await store.enqueue([make_spec()])
    assert store.hub.work_available.is_set()


async def test_retry_signals_work(store: Store, add: JobFactory) -> None:
    """Retrying a job makes it runnable and sets hub.work_available before it returns."""
    job = await add()
    await store.request_cancel(job.id)
    store.hub.work_available.clear()
    await store.retry(job.id)
    assert store.hub.work_available.is_set()


async def test_cancel_of_a_running_job_signals_cancel(store: Store, start: JobFactory) -> None:
    """Asking a running job to stop sets hub.cancel_requested before it returns."""
    job = await start()
    store.hub.cancel_requested.clear()
    await store.request_cancel(job.id)
    assert store.hub.cancel_requested.is_set()


async def test_changes_by_another_store_wake_subscribers(
    store: Store, peer: Store, start: JobFactory
) -> None:
    """A change made through one store object wakes subscribers of another on the same database.

    Subscribers follow the long-poll pattern: subscribe, read the job, then wait; a change
    made right after that read must wake them, however soon it comes. Ten rounds, in both
    directions, so that a wake-up lost to timing shows.
    """
    for round_ in range(10):
        writer, watcher = (store, peer) if round_ % 2 == 0 else (peer, store)
        job = await start(worker="w1")
        with watcher.hub.subscribe(job.id) as sub:
            assert await watcher.get(job.id) == job
            await writer.request_cancel(job.id)
            assert await sub.wait(REMOTE_WAKE), f"round {round_}: cancel request made elsewhere"
            line = NewLogLine(job.id, now_us(), "info", "x")
            progress = ProgressUpdate(job.id, 1, 2, None)
            await writer.record(WorkerBatch("w1", progress=[progress], logs=[line]), 100)
            assert await sub.wait(REMOTE_WAKE), f"round {round_}: progress made elsewhere"
            seen = await watcher.get(job.id)
            assert seen is not None and seen.cancel_requested and seen.progress.current == 1


@pytest.mark.requires_capability("push_notifications")
async def test_another_stores_changes_signal_work_and_cancel(
    store: Store, peer: Store, make_spec: SpecFactory, start: JobFactory
) -> None:
    """With push notifications, enqueue and cancel elsewhere set this hub's events at once."""
    job = await start()
    peer.hub.work_available.clear()
    peer.hub.cancel_requested.clear()
    await store.enqueue([make_spec()])
    assert await is_set(peer.hub.work_available, PUSH_WAKE)
    await store.request_cancel(job.id)
    assert await is_set(peer.hub.cancel_requested, PUSH_WAKE)
