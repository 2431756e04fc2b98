"""Conformance: retention. ``purge`` forgets terminal jobs finished before a cutoff, a batch at
a time, oldest first, with their log lines; it never touches a queued or running job, however
old; stats stay exact.

Jobs are made old by moving their timestamps back in the database (``db_direct.backdate``),
never by waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from backends import Database
from db_direct import TIME_COLUMNS, backdate, log_rows
from jobdeck.model import MICROS, Job, JobError, OutcomeKind, Status, now_us
from jobdeck.store.base import JobFilter, NewLogLine, Store, WorkerBatch
from store_checks import counts_from_listing, current

JobFactory = Callable[..., Awaitable[Job]]
Finisher = Callable[..., Awaitable[Job | None]]

DAY = 86_400 * MICROS


async def age(database: Database, jobs: list[Job], at: int, *columns: str) -> None:
    """Move the given timestamps of ``jobs`` back to ``at``."""
    changed = await asyncio.to_thread(backdate, database, [j.id for j in jobs], at, *columns)
    assert changed == len(jobs)


async def log_lines(store: Store, job: Job, n: int = 3) -> None:
    """Record ``n`` log lines for a job its worker holds."""
    assert job.worker is not None
    lines = [NewLogLine(job.id, now_us(), "info", f"line {i}") for i in range(n)]
    await store.record(WorkerBatch(job.worker, logs=lines), 100)


async def finished_jobs(
    store: Store, add: JobFactory, start: JobFactory, finish: Finisher, **spec: str
) -> list[Job]:
    """One job of each way to end: succeeded, failed, cancelled while running, cancelled
    while queued; each but the last with log lines. ``spec`` fields (e.g. ``queue``; one
    with no queued job in it) apply to all four."""
    ended: list[Job] = []
    for kind in (OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.CANCELLED):
        job = await start(max_attempts=1, **spec)
        await log_lines(store, job)
        done = await finish(job, kind, error=JobError("E", "m"))
        assert done is not None and done.is_terminal, done
        ended.append(done)
    cancelled, _ = await store.request_cancel((await add(**spec)).id)
    ended.append(cancelled)
    assert all(job.finished_at is not None for job in ended)
    return ended


async def active_jobs(
    store: Store, add: JobFactory, start: JobFactory, finish: Finisher
) -> list[Job]:
    """Queued and running jobs of every sort: runnable, delayed, retried after failing,
    running with log lines."""
    retried = await start(max_attempts=1)
    await finish(retried, OutcomeKind.FAILED, error=JobError("E", "m"))
    await store.retry(retried.id)
    running = await start()
    await log_lines(store, running)
    jobs = [await add(), await add(run_at=now_us() + DAY), retried, running]
    return [await current(store, job.id) for job in jobs]


async def test_purge_removes_terminal_jobs_finished_before_the_cutoff_and_only_those(
    store: Store, database: Database, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """Succeeded, failed and cancelled jobs finished before the cutoff go; one finished at
    the cutoff or after it stays, and so do active jobs."""
    now = now_us()
    cutoff = now - 7 * DAY
    old = await finished_jobs(store, add, start, finish)
    await age(database, old, now - 10 * DAY, "finished_at")
    at_cutoff = await finished_jobs(store, add, start, finish)
    await age(database, at_cutoff, cutoff, "finished_at")
    just_after = await finished_jobs(store, add, start, finish)
    await age(database, just_after, cutoff + 1, "finished_at")
    recent = await finished_jobs(store, add, start, finish)
    active = await active_jobs(store, add, start, finish)
    kept = [await current(store, j.id) for j in [*at_cutoff, *just_after, *recent, *active]]

    assert await store.purge(cutoff, 1000) == len(old)

    for job in old:
        assert await store.get(job.id) is None, f"{job.status.value} job not purged"
    for job in kept:
        assert await store.get(job.id) == job, f"{job.status.value} job changed by purge"
    assert await store.purge(cutoff, 1000) == 0


async def test_purge_goes_in_batches_oldest_first(
    store: Store, database: Database, start: JobFactory, finish: Finisher
) -> None:
    """Each call deletes at most ``batch_size`` jobs, the earliest finished first, and
    returns how many it deleted; the last call returns fewer than the batch."""
    now = now_us()
    jobs = []
    for _ in range(5):
        job = await finish(await start(), OutcomeKind.SUCCEEDED, result=1)
        assert job is not None
        jobs.append(job)
    for days, job in zip([9, 12, 8, 11, 10], jobs, strict=True):
        await age(database, [job], now - days * DAY, "finished_at")
    by_age = [jobs[1], jobs[3], jobs[4], jobs[0], jobs[2]]  # oldest first

    gone: list[Job] = []
    for expected in (2, 2, 1, 0):
        assert await store.purge(now - DAY, 2) == expected
        gone += by_age[len(gone) : len(gone) + expected]
        remaining = [job for job in jobs if await store.get(job.id) is not None]
        assert remaining == [job for job in jobs if job not in gone]


async def test_purge_never_touches_active_jobs_however_old(
    store: Store, database: Database, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """Queued and running jobs survive any cutoff, with every timestamp years in the past
    (a queued job whose run_at is old, a running job created long ago), even with a stale
    ``finished_at``: purge goes by status, not by age alone. Their log lines stay too."""
    active = await active_jobs(store, add, start, finish)
    long_ago = now_us() - 3 * 365 * DAY
    timestamps = sorted(TIME_COLUMNS - {"finished_at", "lease_expires_at"})
    await age(database, active, long_ago, *timestamps)
    before = [await current(store, job.id) for job in active]
    lines = await asyncio.to_thread(log_rows, database, [job.id for job in active])
    assert lines == 3

    assert await store.purge(now_us() + DAY, 1000) == 0
    await age(database, active, long_ago, "finished_at")
    assert await store.purge(now_us() + DAY, 1000) == 0

    for job in before:
        survivor = await current(store, job.id)
        assert replace(survivor, finished_at=job.finished_at) == job, "changed by purge"
    assert await asyncio.to_thread(log_rows, database, [job.id for job in active]) == lines


async def test_purge_removes_the_log_lines_of_purged_jobs(
    store: Store, database: Database, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """No log line outlives its purged job (a new job of the same id starts with none);
    the lines of jobs that stay are untouched."""
    old = await finished_jobs(store, add, start, finish)
    kept = await finished_jobs(store, add, start, finish)
    await age(database, old, now_us() - 10 * DAY, "finished_at")
    old_ids, kept_ids = [j.id for j in old], [j.id for j in kept]
    assert await asyncio.to_thread(log_rows, database, old_ids) == 9

    assert await store.purge(now_us() - DAY, 1000) == len(old)

    assert await asyncio.to_thread(log_rows, database, old_ids) == 0
    assert await asyncio.to_thread(log_rows, database, kept_ids) == 9
    for job in old:
        await add(id=job.id)
        assert (await store.logs(job.id, None, 100)).items == [], "logs outlived a purge"


async def assert_stats_exact(store: Store, step: str) -> None:
    """stats agree with the jobs as listed: the counts of every queue with jobs, and no
    leftover count for a queue whose jobs are all gone."""
    stats = await store.stats()
    shown = {q: c for q, c in stats.queues.items() if any(c.values())}
    assert shown == await counts_from_listing(store), step
    since = now_us() - 60 * MICROS
    recent = 0
    for status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED):
        page = await store.list(JobFilter(statuses=(status,)), 1000, None)
        recent += sum(1 for j in page.items if (j.finished_at or 0) >= since)
    assert stats.finished_last_minute == recent, step


async def test_stats_stay_exact_across_purges(
    store: Store, database: Database, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """After each purge (and after the adapter's upkeep), stats count exactly the jobs that
    remain; a queue whose jobs were all purged has no counts left."""
    jobs = []
    for queue in ("q1", "q1", "q2"):
        jobs += await finished_jobs(store, add, start, finish, queue=queue)
        for job in jobs[-4:]:
            await age(database, [job], now_us() - 10 * DAY, "finished_at")
    only_old = await finish(await start(queue="gone"), OutcomeKind.SUCCEEDED, result=1)
    assert only_old is not None
    await age(database, [only_old], now_us() - 10 * DAY, "finished_at")
    await finished_jobs(store, add, start, finish, queue="q2")
    await active_jobs(store, add, start, finish)
    await add(queue="q1")
    await assert_stats_exact(store, "before")
    assert "gone" in (await store.stats()).queues

    assert await store.purge(now_us() - DAY, 5) == 5
    await assert_stats_exact(store, "first batch")
    assert await store.purge(now_us() - DAY, 1000) == 8
    await assert_stats_exact(store, "the rest of the old jobs")
    await store.maintain()
    await assert_stats_exact(store, "after upkeep")
    assert not any((await store.stats()).queues.get("gone", {}).values())

    assert await store.purge(now_us() + DAY, 1000) == 4
    await assert_stats_exact(store, "every finished job")
    assert (await store.stats()).finished_last_minute == 0
    await store.maintain()
    await assert_stats_exact(store, "after upkeep, again")


async def test_purge_at_the_epoch_purges_nothing(
    store: Store, database: Database, start: JobFactory, finish: Finisher
) -> None:
    """A cutoff of 0 (what an endless retention comes to) deletes nothing, even a job
    stamped as finished at the epoch itself."""
    job = await finish(await start(), OutcomeKind.SUCCEEDED, result=1)
    assert job is not None
    await age(database, [job], 0, "finished_at")
    assert await store.purge(0, 1000) == 0
    assert await store.get(job.id) is not None
    assert await store.purge(1, 1000) == 1
