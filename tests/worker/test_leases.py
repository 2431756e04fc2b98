"""Worker: leases and heartbeats; rescue of jobs whose worker died; fencing of a lost lease."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jobdeck.deck import Deck
from jobdeck.model import MICROS, Job, Status, now_us
from jobdeck.store.base import CancelEffect, Store
from jobdeck.tasks import JobContext
from jobdeck.worker import Worker
from worker.stores import Partition

WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]
Gate = Callable[[], threading.Event]

DEAD = "dead-host:4242:1"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_heartbeats_keep_a_long_job_from_being_rescued(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus, asynchronous: bool
) -> None:
    """A job running 3× its lease keeps it by heartbeat, even with another worker rescuing:
    it runs once and succeeds on attempt 1."""
    runs: list[int] = []
    duration = 3 * deck.settings.lease_seconds

    if asynchronous:

        @deck.task(name="marathon")
        async def marathon_async(ctx: JobContext) -> str:
            runs.append(ctx.attempt)
            await asyncio.sleep(duration)
            return "finished"

    else:

        @deck.task(name="marathon")
        def marathon_sync(ctx: JobContext) -> str:
            runs.append(ctx.attempt)
            time.sleep(duration)  # never touches ctx: heartbeats do not depend on the task
            return "finished"

    job = await deck.enqueue("marathon")
    runner = make_worker(deck, name="test:1:runner")
    await runner.start()
    await wait_status(deck.store, job.id, Status.RUNNING)
    await make_worker(deck, name="test:1:rescuer").start()
    done = await wait_status(deck.store, job.id, timeout=duration + 5)

    assert done.status is Status.SUCCEEDED
    assert (done.attempt, done.attempt_errors, done.result) == (1, (), "finished")
    assert done.worker == "test:1:runner"
    assert runs == [1]


async def claim_as_dead_worker(deck: Deck, job: Job) -> Job:
    """Claim ``job`` through the store for a worker that then dies (never heartbeats)."""
    claimed = await deck.store.claim(DEAD, [job.queue], [job.kind], 1, deck.settings.lease_seconds)
    assert [c.id for c in claimed] == [job.id]
    assert claimed[0].lease_expires_at is not None
    return claimed[0]


async def test_job_of_a_dead_worker_runs_again_after_its_lease(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """A job whose worker died is taken by a live worker once the lease expired: attempt 2,
    succeeded, the lost run recorded as WorkerLost."""
    runs: list[tuple[int, int]] = []

    @deck.task
    def orphan(ctx: JobContext) -> str:
        runs.append((ctx.attempt, now_us()))
        return "adopted"

    job = await deck.enqueue("orphan")
    claimed = await claim_as_dead_worker(deck, job)
    live = make_worker(deck, name="test:1:live")
    await live.start()
    done = await wait_status(deck.store, job.id, timeout=5)

    assert done.status is Status.SUCCEEDED
    assert (done.attempt, done.result, done.worker) == (2, "adopted", "test:1:live")
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [(1, "WorkerLost")]
    assert [attempt for attempt, _ in runs] == [2]
    assert claimed.lease_expires_at is not None
    assert runs[0][1] >= claimed.lease_expires_at  # not taken before the lease ran out


async def test_job_of_a_dead_worker_without_attempts_left_fails_worker_lost(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """With max_attempts=1 the job of a dead worker fails with WorkerLost and is not run."""
    runs: list[int] = []

    @deck.task
    def orphan(ctx: JobContext) -> None:
        runs.append(ctx.attempt)

    job = await deck.enqueue("orphan", max_attempts=1)
    await claim_as_dead_worker(deck, job)
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=5)

    assert done.status is Status.FAILED
    assert done.error is not None and done.error.type == "WorkerLost"
    assert DEAD in done.error.message
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [(1, "WorkerLost")]
    assert done.attempt == 1
    assert done.finished_at is not None
    assert runs == []


async def test_job_of_a_dead_worker_with_cancel_requested_ends_cancelled(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """A job whose worker died after cancel was requested ends cancelled, and is not run."""
    runs: list[int] = []

    @deck.task
    def orphan(ctx: JobContext) -> None:
        runs.append(ctx.attempt)

    job = await deck.enqueue("orphan", max_attempts=3)
    await claim_as_dead_worker(deck, job)
    _, effect = await deck.store.request_cancel(job.id)
    assert effect is CancelEffect.REQUESTED
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=5)

    assert done.status is Status.CANCELLED
    assert done.finished_at is not None
    assert runs == []


async def test_worker_that_cannot_renew_abandons_its_run_before_the_lease_expires(
    deck: Deck, make_worker: WorkerFactory, wait_for: WaitFor, wait_status: WaitStatus
) -> None:
    """A worker cut off from the store stops its async run before its lease runs out, so the
    worker that rescues the job never runs it at the same time; the new run's outcome stands."""
    started = asyncio.Event()
    stopped_at: list[int] = []
    second_started_at: list[int] = []

    @deck.task
    async def contested(ctx: JobContext) -> dict[str, int]:
        if ctx.attempt == 1:
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                stopped_at.append(now_us())
                raise
        second_started_at.append(now_us())
        return {"attempt": ctx.attempt}

    job = await deck.enqueue("contested")
    partition = Partition(deck.store)
    cut_off = make_worker(deck, name="test:1:cut-off", store=partition)  # type: ignore[arg-type]
    await cut_off.start()
    await asyncio.wait_for(started.wait(), 5)
    await wait_for(lambda: partition.last_renewal_start is not None, what="a lease renewal")
    await make_worker(deck, name="test:1:rescuer").start()
    partition.cut = True

    done = await wait_status(deck.store, job.id, timeout=5)
    await wait_for(lambda: not cut_off.runs, what="cut-off worker to drop the run")
    partition.cut = False

    assert done.status is Status.SUCCEEDED
    assert (done.result, done.attempt, done.worker) == ({"attempt": 2}, 2, "test:1:rescuer")
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [(1, "WorkerLost")]
    assert len(stopped_at) == 1 and len(second_started_at) == 1
    assert stopped_at[0] < second_started_at[0], "the job ran twice at once"
    assert partition.last_renewal_start is not None
    lease_end = partition.last_renewal_start + int(deck.settings.lease_seconds * MICROS)
    assert stopped_at[0] < lease_end, (
        f"run abandoned {(stopped_at[0] - lease_end) / 1000:.1f} ms after its lease expired"
    )


async def test_stale_run_finishing_late_writes_nothing_over_the_new_owner(
    deck: Deck,
    make_worker: WorkerFactory,
    gate: Gate,
    wait_for: WaitFor,
    wait_status: WaitStatus,
) -> None:
    """A sync run whose lease was taken over returns after the new owner finished the job:
    its result is not written; the job keeps the new owner's outcome and version."""
    release = gate()
    started = threading.Event()

    @deck.task
    def contested(ctx: JobContext) -> dict[str, int]:
        if ctx.attempt == 1:
            started.set()
            release.wait(10)  # deaf to its context: finishes only when released
        return {"attempt": ctx.attempt}

    job = await deck.enqueue("contested")
    partition = Partition(deck.store)
    cut_off = make_worker(deck, name="test:1:cut-off", store=partition)  # type: ignore[arg-type]
    await cut_off.start()
    await wait_for(started.is_set, what="first run started")
    await make_worker(deck, name="test:1:rescuer").start()
    partition.cut = True

    done = await wait_status(deck.store, job.id, timeout=5)
    assert done.status is Status.SUCCEEDED
    assert (done.result, done.attempt, done.worker) == ({"attempt": 2}, 2, "test:1:rescuer")

    partition.cut = False
    release.set()
    await wait_for(lambda: not cut_off.runs, what="stale run to return")
    await cut_off.stop(grace_seconds=0)  # writes out whatever it still holds

    after = await deck.store.get(job.id)
    assert after == done


class LateClaims(Partition):
    """A store whose claims reach the worker late (a slow commit, a long round trip): the
    lease starts when the store takes the claim, the worker hears of it ``delay`` seconds
    later; right after a claim the worker is cut off, before it renews anything."""

    def __init__(self, store: Store, delay: float) -> None:
        super().__init__(store)
        self.delay = delay
        self.leases: list[int] = []

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        jobs = await super().claim(*args, **kwargs)
        if jobs:
            self.leases += [job.lease_expires_at for job in jobs if job.lease_expires_at]
            self.cut = True
            await asyncio.sleep(self.delay)
        return jobs


async def test_fence_counts_the_lease_from_before_the_claim_not_from_its_answer(
    deck: Deck, make_worker: WorkerFactory, wait_for: WaitFor
) -> None:
    """A claim that answers half a lease late, and no renewal after it: the run is still
    abandoned before the lease the claim granted runs out (the fence's clock starts when the
    claim was sent, as the lease's did, not when the answer came)."""
    stopped_at: list[int] = []

    @deck.task
    async def late(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stopped_at.append(now_us())
            raise

    await deck.enqueue("late")
    store = LateClaims(deck.store, delay=deck.settings.lease_seconds / 2)
    worker = make_worker(deck, name="test:1:late", store=store)  # type: ignore[arg-type]
    await worker.start()
    await wait_for(lambda: stopped_at, timeout=5, what="the run abandoned")
    store.cut = False

    assert len(store.leases) == 1
    assert stopped_at[0] < store.leases[0], (
        f"run abandoned {(stopped_at[0] - store.leases[0]) / 1000:.1f} ms after its lease expired"
    )
