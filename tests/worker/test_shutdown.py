"""Worker: graceful stop lets running jobs finish within the grace period, hands the rest back."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jobdeck.deck import Deck
from jobdeck.model import Job, Status
from jobdeck.store.base import JobFilter
from jobdeck.tasks import JobContext
from jobdeck.worker import Worker

WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]


async def running_jobs(deck: Deck) -> list[Job]:
    page = await deck.store.list(JobFilter(statuses=(Status.RUNNING,)), 100, None)
    return page.items


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_stop_lets_a_running_job_finish_within_the_grace(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    asynchronous: bool,
) -> None:
    """With a grace longer than the job, stop waits for it and it ends succeeded."""
    started = threading.Event()

    if asynchronous:

        @deck.task(name="wrap_up")
        async def wrap_up_async() -> str:
            started.set()
            await asyncio.sleep(0.3)
            return "wrapped up"

    else:

        @deck.task(name="wrap_up")
        def wrap_up_sync(ctx: JobContext) -> str:
            started.set()
            ctx.sleep(0.3)
            return "wrapped up"

    job = await deck.enqueue("wrap_up")
    worker = make_worker(deck)
    await worker.start()
    await wait_for(started.is_set, what="job started")
    await worker.stop(grace_seconds=5)

    done = await deck.store.get(job.id)
    assert done is not None
    assert (done.status, done.result, done.attempt) == (Status.SUCCEEDED, "wrapped up", 1)
    assert await running_jobs(deck) == []


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_stop_hands_back_a_job_outlasting_the_grace(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    asynchronous: bool,
) -> None:
    """With a grace shorter than the job, stop hands it back: queued, attempt given back,
    nothing left running; the next worker runs it as attempt 1."""
    runs: list[int] = []

    if asynchronous:

        @deck.task(name="long_haul")
        async def long_haul_async(ctx: JobContext) -> str:
            runs.append(ctx.attempt)
            if len(runs) == 1:
                await asyncio.sleep(60)
            return "second run"

    else:

        @deck.task(name="long_haul")
        def long_haul_sync(ctx: JobContext) -> str:
            runs.append(ctx.attempt)
            if len(runs) == 1:
                ctx.sleep(60)
            return "second run"

    job = await deck.enqueue("long_haul")
    first = make_worker(deck, name="test:1:first")
    await first.start()
    await wait_for(lambda: runs, what="job started")
    stopping = time.monotonic()
    await first.stop(grace_seconds=0.1)
    assert time.monotonic() - stopping < 5

    back = await deck.store.get(job.id)
    assert back is not None
    assert back.status is Status.QUEUED
    assert back.attempt == 0
    assert (back.attempt_errors, back.error, back.finished_at) == ((), None, None)
    assert back.cancel_requested is False
    assert await running_jobs(deck) == []

    await make_worker(deck, name="test:1:second").run_until_idle(timeout=10)
    done = await deck.store.get(job.id)
    assert done is not None
    assert (done.status, done.result, done.attempt) == (Status.SUCCEEDED, "second run", 1)
    assert done.worker == "test:1:second"
    assert runs == [1, 1]


async def test_stopped_worker_claims_nothing_more(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """After stop returns, jobs enqueued stay queued: the stopped worker took nothing."""

    @deck.task
    async def noop() -> None:
        return None

    worker = make_worker(deck)
    first = await deck.enqueue("noop")
    await worker.start()
    await wait_status(deck.store, first.id, Status.SUCCEEDED)
    await worker.stop()
    later = await deck.enqueue("noop")
    probe = make_worker(deck, name="test:1:probe")
    await probe.run_until_idle(timeout=10)  # some live worker must find it still queued
    done = await deck.store.get(later.id)
    assert done is not None and done.worker == "test:1:probe"
