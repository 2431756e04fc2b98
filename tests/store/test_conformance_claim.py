"""Conformance: claim, leases, heartbeats, cancel requests and the rescue of expired leases."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from backends import Database
from jobdeck.model import MICROS, Job, JobSpec, OutcomeKind, Progress, Status, now_us
from jobdeck.store.base import ProgressUpdate, Store, WorkerBatch
from store_checks import assert_between, current

SpecFactory = Callable[..., JobSpec]
JobFactory = Callable[..., Awaitable[Job]]
Finisher = Callable[..., Awaitable[Job | None]]
Rescuer = Callable[..., Awaitable[dict[str, Job]]]
StoreOn = Callable[[Database], AbstractAsyncContextManager[Store]]

SHORT_LEASE = 0.2
LONG_LEASE = 30.0


# --- claim ----------------------------------------------------------------------------------


async def test_claim_leases_a_queued_job(store: Store, add: JobFactory) -> None:
    """claim makes the job running for the worker: attempt 1, started_at, lease, new version."""
    queued = await add(queue="q1")
    before = now_us()
    [job] = await store.claim("host:1:0", ["q1"], ["steps"], 5, 10.0)
    after = now_us()

    assert job.id == queued.id
    assert job.status is Status.RUNNING
    assert job.worker == "host:1:0"
    assert job.attempt == 1
    assert job.version > queued.version
    assert_between(job.started_at, before, after)
    assert_between(job.lease_expires_at, before + 10 * MICROS, after + 10 * MICROS)
    assert (job.finished_at, job.cancel_requested) == (None, False)
    assert await store.get(job.id) == job


async def test_claim_respects_queues_and_kinds(store: Store, add: JobFactory) -> None:
    """Only jobs of the asked queues and kinds are claimed."""
    wanted = await add(queue="q1", kind="k1")
    await add(queue="q1", kind="k2")
    await add(queue="q2", kind="k1")
    claimed = await store.claim("w1", ["q1"], ["k1"], 10, LONG_LEASE)
    assert [j.id for j in claimed] == [wanted.id]
    both = await store.claim("w1", ["q1", "q2"], ["k1", "k2"], 10, LONG_LEASE)
    assert len(both) == 2
    assert await store.claim("w1", ["q1", "q2", "q3"], ["k1", "k2"], 10, LONG_LEASE) == []


async def test_claim_skips_jobs_not_due(store: Store, add: JobFactory) -> None:
    """A job whose run_at lies in the future is not claimable; one in the past is."""
    await add(queue="q1", run_at=now_us() + 60 * MICROS)
    due = await add(queue="q1", run_at=now_us() - 1)
    claimed = await store.claim("w1", ["q1"], ["steps"], 10, LONG_LEASE)
    assert [j.id for j in claimed] == [due.id]
    assert await store.claim("w1", ["q1"], ["steps"], 10, LONG_LEASE) == []


async def test_claim_order_is_priority_then_run_at(store: Store, add: JobFactory) -> None:
    """Higher priority first; among equal priorities the older run_at first.

    Creation order differs from run_at order both ways, so ordering by id cannot pass.
    """
    now = now_us()
    a = await add(queue="q1", priority=0, run_at=now - 30 * MICROS)
    b = await add(queue="q1", priority=0, run_at=now - 60 * MICROS)
    c = await add(queue="q1", priority=0, run_at=now - 10 * MICROS)
    d = await add(queue="q1", priority=-1, run_at=now - 100 * MICROS)
    e = await add(queue="q1", priority=5, run_at=now - 20 * MICROS)
    f = await add(queue="q1", priority=5, run_at=now - 40 * MICROS)
    g = await add(queue="q1", priority=5, run_at=now - 5 * MICROS)
    order = []
    for _ in range(7):
        [job] = await store.claim("w1", ["q1"], ["steps"], 1, LONG_LEASE)
        order.append(job.id)
    assert order == [f.id, e.id, g.id, b.id, a.id, c.id, d.id]


async def test_claim_takes_the_best_jobs_up_to_limit(store: Store, add: JobFactory) -> None:
    """A claim of n takes the n best runnable jobs, never more."""
    jobs = [await add(queue="q1", priority=p) for p in range(5)]
    first = await store.claim("w1", ["q1"], ["steps"], 2, LONG_LEASE)
    assert {j.id for j in first} == {jobs[4].id, jobs[3].id}
    rest = await store.claim("w2", ["q1"], ["steps"], 10, LONG_LEASE)
    assert {j.id for j in rest} == {j.id for j in jobs[:3]}
    assert all(j.worker == "w2" and j.status is Status.RUNNING for j in rest)
    assert await store.claim("w3", ["q1"], ["steps"], 10, LONG_LEASE) == []


async def test_store_objects_claiming_at_once_never_share_a_job(
    database: Database, store: Store, store_on: StoreOn, make_spec: SpecFactory
) -> None:
    """Four store objects on one database (four processes, in effect) claim 1-7 jobs at a
    time, all at once, until 300 jobs are gone: each job is claimed exactly once."""
    specs = [make_spec(queue="race") for _ in range(300)]
    await store.enqueue(specs)

    async def drain(claimer: Store, worker: str) -> list[str]:
        claimed: list[str] = []
        size = 1
        while jobs := await claimer.claim(worker, ["race"], ["steps"], size, LONG_LEASE):
            claimed.extend(job.id for job in jobs)
            assert all(job.worker == worker for job in jobs)
            size = size % 7 + 1
        return claimed

    async with store_on(database) as b, store_on(database) as c, store_on(database) as d:
        claims = await asyncio.gather(
            drain(store, "w0"), drain(b, "w1"), drain(c, "w2"), drain(d, "w3")
        )
    counts = Counter(job_id for claimed in claims for job_id in claimed)
    assert {job_id: n for job_id, n in counts.items() if n > 1} == {}
    assert set(counts) == {spec.id for spec in specs}
    owners = {job_id: f"w{n}" for n, claimed in enumerate(claims) for job_id in claimed}
    for job_id, worker in owners.items():
        assert (await current(store, job_id)).worker == worker


async def test_leased_job_is_not_claimed_again(store: Store, start: JobFactory) -> None:
    """While its lease lives a running job is neither claimed by another worker nor rescued."""
    job = await start(worker="w1", lease_seconds=LONG_LEASE)
    assert await store.claim("w2", [job.queue], ["steps"], 10, LONG_LEASE) == []
    assert await store.claim("w1", [job.queue], ["steps"], 10, LONG_LEASE) == []
    assert await store.rescue_expired() == []
    assert await store.get(job.id) == job


# --- heartbeat and cancel requests ------------------------------------------------------------


async def test_heartbeat_renews_only_the_workers_own_running_jobs(
    store: Store, start: JobFactory, add: JobFactory, rescue: Rescuer
) -> None:
    """Leases renewed by heartbeat survive; another worker's job or a queued one is not renewed."""
    mine = await start(worker="w1", lease_seconds=SHORT_LEASE)
    unbeaten = await start(worker="w1", lease_seconds=SHORT_LEASE)
    theirs = await start(worker="w2", lease_seconds=SHORT_LEASE)
    queued = await add()

    before = now_us()
    beat = await store.heartbeat("w1", [mine.id, theirs.id, queued.id, "missing"], LONG_LEASE)
    assert beat.renewed == frozenset({mine.id})
    assert beat.cancel_requested == frozenset()
    renewed = await current(store, mine.id)
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at >= before + (LONG_LEASE - 1) * MICROS

    rescued = await rescue(unbeaten.id, theirs.id)
    assert mine.id not in rescued
    still = await current(store, mine.id)
    assert (still.status, still.worker) == (Status.RUNNING, "w1")
    assert (await current(store, queued.id)).status is Status.QUEUED


async def test_heartbeat_after_rescue_renews_nothing(
    store: Store, start: JobFactory, rescue: Rescuer
) -> None:
    """A worker whose lease expired and was rescued cannot renew it by a late heartbeat."""
    job = await start(worker="w1", lease_seconds=SHORT_LEASE)
    await rescue(job.id)
    beat = await store.heartbeat("w1", [job.id], LONG_LEASE)
    assert beat.renewed == frozenset()
    assert (await current(store, job.id)).status is Status.QUEUED


async def test_heartbeat_reports_cancel_requests(store: Store, start: JobFactory) -> None:
    """A heartbeat renews a job asked to stop and reports it in cancel_requested."""
    asked = await start(worker="w1")
    other = await start(worker="w1")
    await store.request_cancel(asked.id)
    beat = await store.heartbeat("w1", [asked.id, other.id], LONG_LEASE)
    assert beat.renewed == frozenset({asked.id, other.id})
    assert beat.cancel_requested == frozenset({asked.id})


async def test_cancel_requests_lists_the_workers_jobs_asked_to_stop(
    store: Store, start: JobFactory
) -> None:
    """cancel_requests answers which of the worker's own running jobs were asked to stop."""
    a = await start(worker="w1")
    b = await start(worker="w1")
    c = await start(worker="w2")
    assert await store.cancel_requests("w1", [a.id, b.id]) == frozenset()
    await store.request_cancel(a.id)
    await store.request_cancel(c.id)
    assert await store.cancel_requests("w1", [a.id, b.id, c.id, "missing"]) == frozenset({a.id})
    assert await store.cancel_requests("w2", [c.id]) == frozenset({c.id})
    assert await store.cancel_requests("w1", []) == frozenset()


# --- rescue of expired leases ----------------------------------------------------------------


async def test_rescue_requeues_a_job_with_attempts_left(
    store: Store, start: JobFactory, rescue: Rescuer
) -> None:
    """An expired lease puts the job back in the queue at once, attempt kept; next claim is 2."""
    job = await start(worker="w1", lease_seconds=SHORT_LEASE, max_attempts=3)
    rescued = (await rescue(job.id))[job.id]
    assert rescued.status is Status.QUEUED
    assert rescued.attempt == 1
    assert rescued.version > job.version
    assert await store.get(job.id) == rescued

    [again] = await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE)
    assert (again.id, again.attempt, again.worker) == (job.id, 2, "w2")


async def test_rescue_fails_the_last_attempt_with_worker_lost(
    store: Store, start: JobFactory, rescue: Rescuer
) -> None:
    """An expired lease on the last attempt fails the job with error type WorkerLost."""
    before = now_us()
    job = await start(worker="w1", lease_seconds=SHORT_LEASE, max_attempts=1)
    rescued = (await rescue(job.id))[job.id]
    after = now_us()
    assert rescued.status is Status.FAILED
    assert rescued.error is not None
    assert rescued.error.type == "WorkerLost"
    assert_between(rescued.finished_at, before, after)
    assert rescued.version > job.version
    assert await store.get(job.id) == rescued
    assert await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE) == []


async def test_rescue_cancels_a_job_asked_to_stop(
    store: Store, start: JobFactory, rescue: Rescuer
) -> None:
    """An expired lease on a job with cancel_requested ends it cancelled, not queued."""
    job = await start(worker="w1", lease_seconds=SHORT_LEASE, max_attempts=3)
    await store.request_cancel(job.id)
    rescued = (await rescue(job.id))[job.id]
    assert rescued.status is Status.CANCELLED
    assert rescued.finished_at is not None
    assert await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE) == []


async def test_old_worker_cannot_touch_a_rescued_job(
    store: Store, start: JobFactory, finish: Finisher, rescue: Rescuer
) -> None:
    """After a rescue the old worker's outcomes and progress change nothing; the new owner's do."""
    job = await start(worker="w1", lease_seconds=SHORT_LEASE)
    rescued = (await rescue(job.id))[job.id]

    late = await finish(rescued, OutcomeKind.SUCCEEDED, worker="w1", result="late")
    assert late == rescued

    [again] = await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE)
    for kind in OutcomeKind:
        assert await finish(again, kind, worker="w1", result="late") == again
    await store.record(WorkerBatch("w1", progress=[ProgressUpdate(job.id, 5, 10, "late")]), 1000)
    assert await store.get(job.id) == again

    done = await finish(again, OutcomeKind.SUCCEEDED, worker="w2", result="mine")
    assert done is not None
    assert (done.status, done.result, done.worker) == (Status.SUCCEEDED, "mine", "w2")
    assert done.progress == Progress()
