"""Worker: failures are retried with backoff while attempts remain; timeouts count as failures."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jobdeck.deck import Deck
from jobdeck.model import MICROS, Job, Status, now_us
from jobdeck.tasks import JobContext
from jobdeck.worker import Worker

WorkerFactory = Callable[..., Worker]
DeckFactory = Callable[..., Awaitable[Deck]]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]

RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
#: The lease of the timeout tests: far longer than their 0.1 s timeouts, so that a loaded
#: machine's late start of a run cannot lose its lease before the timeout stops it.
TIMEOUT_TEST_LEASE = 3.0


async def test_task_failing_twice_then_succeeding(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """Two failures then a success: succeeded on attempt 3, both failures in attempt_errors."""
    attempts: list[int] = []

    @deck.task
    def flaky(ctx: JobContext) -> dict[str, int]:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError(f"flake {ctx.attempt}")
        return {"attempt": ctx.attempt}

    job = await deck.enqueue("flaky")
    assert job.max_attempts == 3
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id)

    assert done.status is Status.SUCCEEDED
    assert done.result == {"attempt": 3}
    assert done.attempt == 3
    assert attempts == [1, 2, 3]
    assert [(e.attempt, e.type, e.message) for e in done.attempt_errors] == [
        (1, "ValueError", "flake 1"),
        (2, "ValueError", "flake 2"),
    ]
    assert done.attempt_errors[0].at <= done.attempt_errors[1].at
    shown = done.to_dict()["attempt_errors"]
    assert all(RFC3339.fullmatch(e["at"]) for e in shown)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_task_always_failing_ends_failed(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus, asynchronous: bool
) -> None:
    """A task that always raises, max_attempts=2: failed after 2 runs, with the error's type,
    message and traceback, and one attempt_error per run."""
    runs: list[int] = []

    def explode(attempt: int) -> None:
        runs.append(attempt)
        raise KeyError(f"missing thing {attempt}")

    if asynchronous:

        @deck.task(name="doomed")
        async def doomed_async(ctx: JobContext) -> None:
            explode(ctx.attempt)

    else:

        @deck.task(name="doomed")
        def doomed_sync(ctx: JobContext) -> None:
            explode(ctx.attempt)

    job = await deck.enqueue("doomed", max_attempts=2)
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id)

    assert done.status is Status.FAILED
    assert (done.attempt, done.max_attempts) == (2, 2)
    assert runs == [1, 2]
    assert done.error is not None
    assert done.error.type == "KeyError"
    assert "missing thing 2" in done.error.message
    assert done.error.traceback is not None
    assert "Traceback" in done.error.traceback
    assert "explode" in done.error.traceback
    assert "KeyError" in done.error.traceback
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [(1, "KeyError"), (2, "KeyError")]
    assert done.finished_at is not None
    assert done.result is None


async def test_retry_waits_for_the_backoff(
    make_deck: DeckFactory,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
) -> None:
    """The retry of a failure is scheduled at least base × 0.5 after it, and not run before."""
    base = 0.4
    deck = await make_deck(backoff_base_seconds=base, backoff_max_seconds=10)
    failed_at: list[int] = []
    started_at: list[int] = []

    @deck.task
    def once_bitten(ctx: JobContext) -> str:
        started_at.append(now_us())
        if ctx.attempt == 1:
            failed_at.append(now_us())
            raise RuntimeError("first time fails")
        return "second time works"

    job = await deck.enqueue("once_bitten")
    await make_worker(deck).start()

    async def between_attempts() -> Job | None:
        seen = await deck.store.get(job.id)
        return seen if seen is not None and seen.attempt_errors else None

    waiting = await wait_for(between_attempts, what="first failure recorded")
    if waiting.status is Status.QUEUED:  # seen before the retry ran: scheduled in the future
        assert waiting.attempt == 1
        assert waiting.run_at >= failed_at[0] + int(base * 0.5 * MICROS)
    done = await wait_status(deck.store, job.id, timeout=10)

    assert done.status is Status.SUCCEEDED
    assert done.attempt == 2
    assert len(started_at) == 2
    assert started_at[1] - failed_at[0] >= int(base * 0.5 * MICROS)
    assert done.started_at is not None
    assert done.started_at >= failed_at[0] + int(base * 0.5 * MICROS)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_job_timeout_fails_after_retries(
    make_deck: DeckFactory, make_worker: WorkerFactory, wait_status: WaitStatus, asynchronous: bool
) -> None:
    """A job running past its own timeout is stopped and counts as a failure: with
    max_attempts=2 it ends failed with TimeoutError after two timed-out runs."""
    deck = await make_deck(lease_seconds=TIMEOUT_TEST_LEASE)
    runs: list[int] = []

    if asynchronous:

        @deck.task(name="dawdle")
        async def dawdle_async(ctx: JobContext) -> str:
            runs.append(ctx.attempt)
            await asyncio.sleep(60)
            return "woke"

    else:

        @deck.task(name="dawdle")
        def dawdle_sync(ctx: JobContext) -> str:
            runs.append(ctx.attempt)
            ctx.sleep(60)
            return "woke"

    job = await deck.enqueue("dawdle", timeout=0.1, max_attempts=2)
    assert job.timeout == 0.1
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=5)

    assert done.status is Status.FAILED
    assert runs == [1, 2]
    assert done.error is not None and done.error.type == "TimeoutError"
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [
        (1, "TimeoutError"),
        (2, "TimeoutError"),
    ]
    assert done.started_at is not None and done.finished_at is not None
    assert done.finished_at - done.started_at < 3 * MICROS


async def test_sync_job_returning_after_its_timeout_fails(
    make_deck: DeckFactory, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """A sync task that does not stop at its timeout and returns afterwards still counts as
    timed out: each attempt fails with TimeoutError, the result is dropped, never succeeded."""
    deck = await make_deck(lease_seconds=TIMEOUT_TEST_LEASE)
    runs: list[int] = []

    @deck.task
    def belated(ctx: JobContext) -> str:
        runs.append(ctx.attempt)
        deadline = time.monotonic() + 10
        while not ctx.interrupted and time.monotonic() < deadline:
            time.sleep(0.002)  # busy with its work; returns once the timeout has passed
        return "late"

    job = await deck.enqueue("belated", timeout=0.1, max_attempts=2)
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=5)

    assert done.status is Status.FAILED
    assert runs == [1, 2]
    assert done.result is None
    assert done.error is not None and done.error.type == "TimeoutError"
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [
        (1, "TimeoutError"),
        (2, "TimeoutError"),
    ]


async def test_kind_timeout_applies_to_its_jobs(
    make_deck: DeckFactory, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """@deck.task(timeout=...) gives the kind's jobs that timeout; they fail with TimeoutError."""
    deck = await make_deck(lease_seconds=TIMEOUT_TEST_LEASE)

    @deck.task(timeout=0.1, max_attempts=1)
    async def sluggish() -> str:
        await asyncio.sleep(60)
        return "woke"

    job = await deck.enqueue("sluggish")
    assert (job.timeout, job.max_attempts) == (0.1, 1)
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=5)

    assert done.status is Status.FAILED
    assert done.error is not None and done.error.type == "TimeoutError"
    assert [e.type for e in done.attempt_errors] == ["TimeoutError"]


async def test_job_within_its_timeout_succeeds(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """A timeout longer than the run changes nothing: the job succeeds on attempt 1."""

    @deck.task
    async def brisk() -> str:
        await asyncio.sleep(0.05)
        return "in time"

    job = await deck.enqueue("brisk", timeout=5)
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id)

    assert done.status is Status.SUCCEEDED
    assert (done.result, done.attempt, done.attempt_errors) == ("in time", 1, ())
