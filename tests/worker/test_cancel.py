"""Worker: cancelling running jobs, async and sync; a cancelled job never succeeds nor retries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jobdeck.deck import Deck
from jobdeck.errors import JobCancelled, JobInterrupted
from jobdeck.model import Job, Status
from jobdeck.store.base import CancelEffect
from jobdeck.tasks import JobContext
from jobdeck.worker import Worker

WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]
Gate = Callable[[], threading.Event]

#: How soon a cancelled job must end once cancel was requested (checks run every 0.05 s).
PROMPT = 2.0


async def cancel_running(deck: Deck, job_id: str) -> float:
    """Request cancel of a running job; return the monotonic time of the request."""
    at = time.monotonic()
    job, effect = await deck.store.request_cancel(job_id)
    assert effect is CancelEffect.REQUESTED
    assert job.cancel_requested is True
    return at


async def test_async_job_that_never_checks_is_cancelled(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """A running async job blocked in asyncio.sleep(60) is cancelled and ends cancelled."""
    started = asyncio.Event()
    interrupted: list[str] = []

    @deck.task
    async def nap() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.append("cancelled")
            raise
        return "woke"

    job = await deck.enqueue("nap")
    await make_worker(deck).start()
    await asyncio.wait_for(started.wait(), 5)
    asked = await cancel_running(deck, job.id)
    done = await wait_status(deck.store, job.id, timeout=PROMPT)

    assert time.monotonic() - asked < PROMPT
    assert done.status is Status.CANCELLED
    assert (done.result, done.error, done.attempt) == (None, None, 1)
    assert done.finished_at is not None
    assert interrupted == ["cancelled"]


@pytest.mark.parametrize("how", ["checkpoint", "sleep", "progress"])
async def test_sync_job_stops_at_its_next_check(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    how: str,
) -> None:
    """A sync job stops at its next ctx.checkpoint / ctx.sleep / ctx.progress with
    JobCancelled and ends cancelled, never succeeded."""
    started = threading.Event()
    stopped: list[type[BaseException]] = []

    @deck.task
    def diligent(ctx: JobContext, how: str) -> str:
        started.set()
        deadline = time.monotonic() + 10
        step = 0
        try:
            while time.monotonic() < deadline:
                step += 1
                if how == "checkpoint":
                    ctx.checkpoint()
                    time.sleep(0.002)
                elif how == "sleep":
                    ctx.sleep(30)
                else:
                    ctx.progress(step)
                    time.sleep(0.002)
        except JobInterrupted as exc:
            stopped.append(type(exc))
            raise
        return "finished"

    job = await deck.enqueue("diligent", {"how": how})
    await make_worker(deck).start()
    await wait_for(started.is_set, what="task started")
    asked = await cancel_running(deck, job.id)
    done = await wait_status(deck.store, job.id, timeout=PROMPT)

    assert time.monotonic() - asked < PROMPT
    assert done.status is Status.CANCELLED
    assert done.result is None
    assert stopped == [JobCancelled]


async def test_sync_job_returning_after_cancel_ends_cancelled(
    deck: Deck, make_worker: WorkerFactory, wait_for: WaitFor, wait_status: WaitStatus
) -> None:
    """A sync job that sees ctx.cancelled and returns normally ends cancelled, without result."""
    started = threading.Event()

    @deck.task
    def polite(ctx: JobContext) -> str:
        started.set()
        deadline = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.002)
        return "returned anyway"

    job = await deck.enqueue("polite")
    await make_worker(deck).start()
    await wait_for(started.is_set, what="task started")
    await cancel_running(deck, job.id)
    done = await wait_status(deck.store, job.id, timeout=PROMPT)

    assert done.status is Status.CANCELLED
    assert done.result is None


async def test_sync_job_returning_right_after_the_request_ends_cancelled(
    deck: Deck,
    make_worker: WorkerFactory,
    gate: Gate,
    wait_for: WaitFor,
    wait_status: WaitStatus,
) -> None:
    """A job that returns just after cancel was requested (before its worker may have noticed)
    ends cancelled: the request beats the success."""
    release = gate()
    started = threading.Event()

    @deck.task
    def unaware() -> str:
        started.set()
        release.wait(10)
        return "done"

    job = await deck.enqueue("unaware")
    await make_worker(deck).start()
    await wait_for(started.is_set, what="task started")
    await cancel_running(deck, job.id)
    release.set()
    done = await wait_status(deck.store, job.id, timeout=PROMPT)

    assert done.status is Status.CANCELLED
    assert done.result is None


async def test_async_job_swallowing_the_cancellation_ends_cancelled(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """An async job that catches CancelledError and returns a value still ends cancelled."""
    started = asyncio.Event()

    @deck.task
    async def swallow() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "swallowed"
        return "woke"

    job = await deck.enqueue("swallow")
    await make_worker(deck).start()
    await asyncio.wait_for(started.wait(), 5)
    await cancel_running(deck, job.id)
    done = await wait_status(deck.store, job.id, timeout=PROMPT)

    assert done.status is Status.CANCELLED
    assert done.result is None


@pytest.mark.parametrize("ending", ["interrupted", "raises"])
async def test_cancelled_job_is_never_retried(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    ending: str,
) -> None:
    """A cancelled job with attempts left is not run again, even when the task answers the
    cancellation by raising an ordinary exception."""
    runs: list[int] = []

    @deck.task
    def reluctant(ctx: JobContext, ending: str) -> None:
        runs.append(ctx.attempt)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if ending == "interrupted":
                ctx.sleep(30)
            elif ctx.cancelled:
                raise RuntimeError("cleaning up after cancel failed")
            time.sleep(0.002)

    job = await deck.enqueue("reluctant", {"ending": ending}, max_attempts=3)
    worker = make_worker(deck)
    await worker.start()
    await wait_for(lambda: runs, what="task started")
    await cancel_running(deck, job.id)
    done = await wait_status(deck.store, job.id, timeout=PROMPT)
    await worker.stop()

    assert done.status is Status.CANCELLED
    assert done.attempt == 1
    after = await deck.store.get(job.id)
    assert after is not None and after.status is Status.CANCELLED and after.attempt == 1
    assert runs == [1]
