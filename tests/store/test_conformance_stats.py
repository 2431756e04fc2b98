"""Conformance: stats (exact, current counts; workers; finished last minute) and purge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from jobdeck.model import MICROS, Job, JobError, JobSpec, OutcomeKind, now_us
from jobdeck.store.base import NewLogLine, ProgressUpdate, Store, WorkerBatch
from store_checks import STATUSES, counts_from_listing

SpecFactory = Callable[..., JobSpec]
JobFactory = Callable[..., Awaitable[Job]]
Finisher = Callable[..., Awaitable[Job | None]]
Rescuer = Callable[..., Awaitable[dict[str, Job]]]

LONG_LEASE = 30.0
SHORT_LEASE = 0.2


def counts(**by_status: int) -> dict[str, int]:
    """All five status keys, zero unless given."""
    return {status: by_status.get(status, 0) for status in STATUSES}


async def assert_stats_match_listing(store: Store, step: str) -> None:
    """stats.queues agrees with the jobs as listed (a queue with no jobs may show all zeros)."""
    expected = await counts_from_listing(store)
    got = (await store.stats()).queues
    for queue, by_status in got.items():
        assert set(by_status) == set(STATUSES), f"{step}: keys of {queue}"
    shown = {q: dict(c) for q, c in got.items() if q in expected or any(c.values())}
    assert shown == expected, step


# --- stats -----------------------------------------------------------------------------------


async def test_stats_of_an_empty_store(store: Store) -> None:
    """A fresh store has no queues, no workers, nothing finished."""
    stats = await store.stats()
    assert (stats.queues, stats.workers, stats.finished_last_minute) == ({}, 0, 0)


async def test_stats_counts_every_status_per_queue(
    store: Store, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """Exact counts with all five keys for every queue that has jobs; finished_last_minute."""
    await start(queue="q1")
    await finish(await start(queue="q1"), OutcomeKind.SUCCEEDED, result=1)
    failed = await start(queue="q1", max_attempts=1)
    await finish(failed, OutcomeKind.FAILED, error=JobError("E", "m"))
    await store.request_cancel((await add(queue="q1")).id)
    await add(queue="q1")
    await add(queue="q1", priority=3)
    await add(queue="q2")
    await add(queue="q3", run_at=now_us() + 3600 * MICROS)

    stats = await store.stats()
    assert stats.queues == {
        "q1": counts(queued=2, running=1, succeeded=1, failed=1, cancelled=1),
        "q2": counts(queued=1),
        "q3": counts(queued=1),
    }
    assert stats.finished_last_minute == 3


async def test_stats_follow_every_change(
    store: Store,
    make_spec: SpecFactory,
    add: JobFactory,
    finish: Finisher,
    rescue: Rescuer,
) -> None:
    """After each kind of change, stats are current and agree with a full listing."""
    check = assert_stats_match_listing
    for _ in range(4):
        await add(queue="a")
    b = [await add(queue="b") for _ in range(2)]
    await check(store, "enqueue")

    one, two = await store.claim("w1", ["a"], ["steps"], 2, LONG_LEASE)
    await check(store, "claim")
    await store.record(
        WorkerBatch(
            "w1",
            progress=[ProgressUpdate(one.id, 1, 2, None)],
            logs=[NewLogLine(one.id, now_us(), "info", "x")],
        ),
        100,
    )
    await check(store, "progress")
    await finish(one, OutcomeKind.SUCCEEDED)
    await check(store, "succeeded")
    await finish(two, OutcomeKind.FAILED, error=JobError("E", "m"), retry_at=now_us())
    await check(store, "failed, retried later")

    await store.request_cancel(b[0].id)
    await check(store, "cancel queued")
    [running_b] = await store.claim("w2", ["b"], ["steps"], 1, SHORT_LEASE)
    await store.request_cancel(running_b.id)
    await check(store, "cancel requested")
    await rescue(running_b.id)
    await check(store, "rescued into cancelled")

    short = await store.claim("w3", ["a"], ["steps"], 1, SHORT_LEASE)
    assert short
    await rescue(short[0].id)
    await check(store, "rescued into queued")

    await store.retry(b[0].id)
    await check(store, "retry")
    await store.delete(running_b.id)
    await check(store, "delete")
    await store.enqueue([make_spec(id=one.id, queue="c")], replace_terminal=True)
    await check(store, "replace terminal into another queue")

    [back] = await store.claim("w4", ["a"], ["steps"], 1, LONG_LEASE)
    await finish(back, OutcomeKind.HANDED_BACK)
    await check(store, "handed back")

    for job in await store.claim("w5", ["a", "b", "c"], ["steps"], 100, LONG_LEASE):
        await finish(job, OutcomeKind.CANCELLED)
    await check(store, "all cancelled")
    listed = await counts_from_listing(store)
    assert sum(c["cancelled"] for c in listed.values()) == 5
    assert await store.purge(now_us() + MICROS, 1000) == 5
    await check(store, "purge")


async def test_stats_count_workers_by_heartbeat(store: Store) -> None:
    """Each worker that heartbeats counts once; an unregistered worker no longer counts."""
    assert (await store.stats()).workers == 0
    await store.heartbeat("host:1:0", [], LONG_LEASE)
    await store.heartbeat("host:2:0", [], LONG_LEASE)
    await store.heartbeat("host:1:0", [], LONG_LEASE)
    assert (await store.stats()).workers == 2
    await store.unregister_worker("host:1:0")
    assert (await store.stats()).workers == 1
    await store.unregister_worker("host:2:0")
    assert (await store.stats()).workers == 0


# --- purge ----------------------------------------------------------------------------------------


async def test_purge_deletes_old_terminal_jobs_in_batches(
    store: Store, add: JobFactory, start: JobFactory, finish: Finisher
) -> None:
    """purge removes only terminal jobs finished before the cutoff, at most batch_size a call.

    Their log lines go too: a new job of a purged id starts with none.
    """
    old: list[Job] = []
    for kind in (OutcomeKind.SUCCEEDED, OutcomeKind.FAILED, OutcomeKind.CANCELLED):
        job = await start(worker="w1", max_attempts=1)
        await store.record(WorkerBatch("w1", logs=[NewLogLine(job.id, now_us(), "info", "x")]), 100)
        ended = await finish(job, kind, error=JobError("E", "m"))
        assert ended is not None and ended.is_terminal and ended.finished_at is not None
        old.append(ended)
    cutoff = max(job.finished_at or 0 for job in old) + 1

    recent, _ = await store.request_cancel((await add()).id)
    assert recent.finished_at is not None and recent.finished_at >= cutoff
    queued = await add()
    running = await start()

    assert await store.purge(cutoff, 2) == 2
    assert await store.purge(cutoff, 2) == 1
    assert await store.purge(cutoff, 2) == 0
    for job in old:
        assert await store.get(job.id) is None
    for job in (recent, queued, running):
        assert await store.get(job.id) == job
    for job in old:
        await add(id=job.id)
        assert (await store.logs(job.id, None, 100)).items == [], "logs outlived a purge"


async def test_purge_never_deletes_active_jobs(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """A job that finished once but was retried (or is running again) survives any cutoff."""
    job = await start(max_attempts=1)
    await finish(job, OutcomeKind.FAILED, error=JobError("E", "m"))
    retried = await store.retry(job.id)
    assert await store.purge(now_us() + 3600 * MICROS, 100) == 0
    assert await store.get(job.id) == retried
    [running] = await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE)
    assert await store.purge(now_us() + 3600 * MICROS, 100) == 0
    assert await store.get(job.id) == running
