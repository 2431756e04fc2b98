"""Worker: retention. A worker purges finished jobs older than ``JOBDECK_RETENTION_SECONDS`` on
its own, often enough for a short retention, and never an active job; no retention, however
long, and no failing purge stops it from renewing its leases."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from backends import Database
from db_direct import backdate
from jobdeck.deck import Deck
from jobdeck.model import MICROS, Job, Outcome, OutcomeKind, Status, now_us
from jobdeck.retention import PURGE_BATCH
from jobdeck.store.base import Store, WorkerBatch
from jobdeck.worker import Worker
from worker.stores import StoreView

DeckFactory = Callable[..., Awaitable[Deck]]
WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]

YEAR = 365 * 86_400 * MICROS
#: A job longer than the test lease (0.6 s): it succeeds on attempt 1 only if the worker
#: renews its lease all along.
LONGER_THAN_A_LEASE = {"n_steps": 4, "step_seconds": 0.4}
#: A job that runs for the whole test.
ENDLESS = {"n_steps": 1000, "step_seconds": 0.1}


async def age(database: Database, jobs: list[Job], years: int, *columns: str) -> None:
    """Move the given timestamps of ``jobs`` back by ``years``."""
    at = now_us() - years * YEAR
    changed = await asyncio.to_thread(backdate, database, [j.id for j in jobs], at, *columns)
    assert changed == len(jobs)


async def old_cancelled_job(deck: Deck, database: Database) -> Job:
    """A job cancelled while queued, ten years ago."""
    job, _ = await deck.store.request_cancel((await deck.enqueue("steps")).id)
    await age(database, [job], 10, "finished_at")
    return job


def purge_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Messages of the purge failures the worker logged."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "jobdeck.worker" and "purge failed" in r.getMessage()
    ]


@pytest.mark.parametrize("retention", [0.0, 1.0])
async def test_a_worker_purges_old_finished_jobs_and_leaves_active_ones(
    make_deck: DeckFactory,
    make_worker: WorkerFactory,
    fresh_database: Database,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    retention: float,
) -> None:
    """With a retention of a second (or none), a running worker purges a job that finished
    while it ran within a few seconds, not a minute later, and the jobs that were old when it
    started; a running job and a queued job created years ago, with an old run_at, stay."""
    deck = await make_deck(retention_seconds=retention)
    store = deck.store
    old = await old_cancelled_job(deck, fresh_database)
    waiting = await deck.enqueue("steps", queue="elsewhere")  # a queue no worker serves
    await age(fresh_database, [waiting], 3, "created_at", "run_at", "updated_at")
    await make_worker(deck, concurrency=2).start()
    running = await deck.enqueue("steps", ENDLESS)
    await wait_status(store, running.id, Status.RUNNING)
    await age(fresh_database, [running], 3, "created_at", "run_at")

    quick = await deck.enqueue("steps", {"n_steps": 1, "step_seconds": 0})

    async def purged(job_id: str) -> bool:
        return await store.get(job_id) is None

    await wait_for(lambda: purged(quick.id), timeout=20, what="the finished job purged")
    assert await purged(old.id)
    running_now = await store.get(running.id)
    assert running_now is not None and running_now.status is Status.RUNNING
    waiting_now = await store.get(waiting.id)
    assert waiting_now is not None and waiting_now.status is Status.QUEUED


async def test_a_huge_retention_purges_nothing_and_the_worker_stays_healthy(
    make_deck: DeckFactory,
    make_worker: WorkerFactory,
    fresh_database: Database,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A retention of 1e18 seconds (beyond any date a database holds) keeps even a job that
    finished ten years ago, and the worker keeps heartbeating: a job longer than its lease
    succeeds on attempt 1; no purge fails."""
    caplog.set_level(logging.ERROR, logger="jobdeck.worker")
    deck = await make_deck(retention_seconds=1e18)
    store = deck.store
    old = await old_cancelled_job(deck, fresh_database)
    await make_worker(deck).start()

    job = await deck.enqueue("steps", LONGER_THAN_A_LEASE)
    done = await wait_status(store, job.id, timeout=15)
    assert (done.status, done.attempt, done.attempt_errors) == (Status.SUCCEEDED, 1, ())

    async def alive() -> bool:
        return (await store.stats()).workers == 1

    await wait_for(alive, what="the worker heartbeating")
    assert await store.get(old.id) is not None
    assert await store.get(job.id) == done
    assert purge_errors(caplog) == []


class CountedPurge(StoreView):
    """The store as one worker sees it, its purges counted in ``calls`` and done by
    :meth:`purged`."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.calls = 0

    async def purge(self, finished_before: int, batch_size: int) -> int:
        self.calls += 1
        return await self.purged(finished_before, batch_size)

    async def purged(self, finished_before: int, batch_size: int) -> int:
        return await self._store.purge(finished_before, batch_size)


class BrokenPurge(CountedPurge):
    """Every purge fails with an error nobody planned for."""

    async def purged(self, finished_before: int, batch_size: int) -> int:
        raise RuntimeError("purge broken on purpose (test)")


async def test_a_failing_purge_does_not_stop_lease_renewal(
    make_deck: DeckFactory,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A purge that raises is logged and tried again later; the lease loop it runs in goes
    on, so a job longer than its lease still succeeds on attempt 1."""
    caplog.set_level(logging.ERROR, logger="jobdeck.worker")
    deck = await make_deck(retention_seconds=0)
    broken = BrokenPurge(deck.store)
    await make_worker(deck, store=broken).start()

    job = await deck.enqueue("steps", LONGER_THAN_A_LEASE)
    done = await wait_status(deck.store, job.id, timeout=15)

    assert (done.status, done.attempt, done.attempt_errors) == (Status.SUCCEEDED, 1, ())
    assert broken.calls >= 2
    assert purge_errors(caplog)


async def old_backlog(deck: Deck, database: Database, n: int) -> list[Job]:
    """``n`` jobs that succeeded a year ago, in a queue no worker serves."""
    specs = [deck.build_spec("steps", queue="backlog") for _ in range(n)]
    await deck.store.enqueue(specs)
    claimed = await deck.store.claim("old-host:1:1", ["backlog"], ["steps"], n, 3600)
    outcomes = [
        Outcome(j.id, "old-host:1:1", OutcomeKind.SUCCEEDED, None, None, None, now_us())
        for j in claimed
    ]
    await deck.store.record(WorkerBatch("old-host:1:1", outcomes=outcomes), 100)
    await age(database, claimed, 1, "finished_at")
    return claimed


class SlowPurge(CountedPurge):
    """A database where each purge takes a while."""

    DELAY_SECONDS = 0.3

    async def purged(self, finished_before: int, batch_size: int) -> int:
        await asyncio.sleep(self.DELAY_SECONDS)
        return await super().purged(finished_before, batch_size)


async def test_a_backlog_goes_one_batch_at_a_time_between_lease_renewals(
    make_deck: DeckFactory,
    make_worker: WorkerFactory,
    fresh_database: Database,
    wait_for: WaitFor,
    wait_status: WaitStatus,
) -> None:
    """Many batches of old jobs (on a slow database) are purged one batch per round of the
    lease loop, not all in one go: leases are renewed in between, so a job longer than its
    lease, running meanwhile, succeeds on attempt 1; and the backlog is gone within seconds,
    without waiting a purge interval (a minute here) between batches."""
    lease = 1.5
    deck = await make_deck(lease_seconds=lease, retention_seconds=3600)
    backlog = await old_backlog(deck, fresh_database, 8 * PURGE_BATCH + 1)
    job = await deck.enqueue("steps", {"n_steps": 5, "step_seconds": lease / 2})
    slow = SlowPurge(deck.store)
    await make_worker(deck, store=slow).start()

    done = await wait_status(deck.store, job.id, timeout=30)
    assert (done.status, done.attempt, done.attempt_errors) == (Status.SUCCEEDED, 1, ())

    async def backlog_gone() -> bool:
        return not any((await deck.store.stats()).queues.get("backlog", {}).values())

    await wait_for(backlog_gone, timeout=30, what="the backlog purged")
    assert slow.calls >= 9
    assert await deck.store.get(backlog[-1].id) is None
    assert await deck.store.get(job.id) == done
