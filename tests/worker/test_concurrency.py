"""Worker: bounded concurrency, where tasks run (event loop or threads), many workers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from jobdeck import worker as worker_module
from jobdeck.deck import Deck
from jobdeck.model import Job, Status
from jobdeck.store.base import JobFilter, Store
from jobdeck.tasks import JobContext
from jobdeck.worker import Worker
from worker.stores import ClaimsOnly

WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]
Gate = Callable[[], threading.Event]


class Gauge:
    """Counts tasks running at once, from any thread, and remembers the most seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.done = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1
            self.done += 1


async def test_async_jobs_never_exceed_concurrency(deck: Deck, make_worker: WorkerFactory) -> None:
    """With concurrency=3, ten async jobs that block a while never run more than 3 at once."""
    gauge = Gauge()

    @deck.task
    async def hold(ctx: JobContext) -> None:
        gauge.enter()
        try:
            await asyncio.sleep(0.05)
        finally:
            gauge.leave()

    jobs = [await deck.enqueue("hold") for _ in range(10)]
    worker = make_worker(deck, concurrency=3)
    await worker.run_until_idle(timeout=20)

    assert gauge.done == 10
    assert gauge.most == 3
    for job in jobs:
        stored = await deck.store.get(job.id)
        assert stored is not None and stored.status is Status.SUCCEEDED


async def test_sync_jobs_never_exceed_concurrency(deck: Deck, make_worker: WorkerFactory) -> None:
    """With concurrency=3, ten blocking sync jobs never run (nor are held) more than 3 at once."""
    gauge = Gauge()
    held: list[int] = []
    worker = make_worker(deck, concurrency=3)

    @deck.task
    def block() -> None:
        gauge.enter()
        try:
            held.append(len(worker.runs))  # jobs this worker has claimed and not finished
            time.sleep(0.05)
        finally:
            gauge.leave()

    for _ in range(10):
        await deck.enqueue("block")
    await worker.run_until_idle(timeout=20)

    assert gauge.done == 10
    assert gauge.most == 3
    assert max(held) <= 3


async def test_sync_task_runs_in_a_thread_and_does_not_block_the_loop(
    deck: Deck,
    make_worker: WorkerFactory,
    gate: Gate,
    wait_status: WaitStatus,
) -> None:
    """A sync task runs off the event-loop thread; while it blocks, async jobs still finish."""
    loop_thread = threading.get_ident()
    threads: list[int] = []
    release = gate()

    @deck.task
    def blocking() -> str:
        threads.append(threading.get_ident())
        release.wait(10)
        return "released"

    @deck.task
    async def quick() -> str:
        return "quick"

    slow = await deck.enqueue("blocking")
    worker = make_worker(deck, concurrency=2)
    await worker.start()
    await wait_status(deck.store, slow.id, Status.RUNNING)
    fast = await deck.enqueue("quick")
    done = await wait_status(deck.store, fast.id, Status.SUCCEEDED)
    assert done.result == "quick"
    assert not release.is_set()

    release.set()
    finished = await wait_status(deck.store, slow.id, Status.SUCCEEDED)
    assert finished.result == "released"
    assert len(threads) == 1
    assert threads[0] != loop_thread


async def test_async_task_runs_as_an_asyncio_task_on_the_loop(
    deck: Deck, make_worker: WorkerFactory
) -> None:
    """An async task runs as its own asyncio task, on the event-loop thread."""
    loop_thread = threading.get_ident()
    outer = asyncio.current_task()
    seen: list[tuple[int, asyncio.Task[object] | None]] = []

    @deck.task
    async def where() -> None:
        seen.append((threading.get_ident(), asyncio.current_task()))

    await deck.enqueue("where")
    await make_worker(deck).run_until_idle(timeout=10)

    [(thread, task)] = seen
    assert thread == loop_thread
    assert task is not None and task is not outer


async def test_two_workers_drain_200_jobs_each_run_once(
    deck: Deck, make_worker: WorkerFactory, wait_for: WaitFor
) -> None:
    """Two workers on one store run 200 jobs between them, each job exactly once."""
    runs: Counter[str] = Counter()

    @deck.task
    async def count(ctx: JobContext) -> None:
        runs[ctx.job_id] += 1
        await asyncio.sleep(0.002)

    specs = [deck.build_spec("count") for _ in range(200)]
    await deck.enqueue_many(specs)
    first = make_worker(deck, name="test:1:a", concurrency=4)
    second = make_worker(deck, name="test:1:b", concurrency=4)
    await asyncio.gather(first.run_until_idle(timeout=30), second.run_until_idle(timeout=30))

    assert set(runs) == {s.id for s in specs}
    assert set(runs.values()) == {1}
    page = await deck.store.list(JobFilter(), 1000, None)
    assert len(page.items) == 200
    assert {j.status for j in page.items} == {Status.SUCCEEDED}
    assert {j.attempt for j in page.items} == {1}
    assert {j.worker for j in page.items} == {"test:1:a", "test:1:b"}


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_jobs_beyond_the_free_slots_stay_queued(
    deck: Deck,
    make_worker: WorkerFactory,
    gate: Gate,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    concurrency: int,
) -> None:
    """While every slot is busy, exactly ``concurrency`` jobs are running in the store and
    the rest stay queued; they run once slots free."""
    release = gate()

    @deck.task
    def parked() -> None:
        release.wait(10)

    jobs = [await deck.enqueue("parked") for _ in range(concurrency + 3)]
    worker = make_worker(deck, concurrency=concurrency)
    await worker.start()

    async def count(status: Status) -> int:
        page = await deck.store.list(JobFilter(statuses=(status,)), 100, None)
        return len(page.items)

    await wait_for(lambda: len(worker.runs) == concurrency, what="every slot busy")
    assert await count(Status.RUNNING) == concurrency
    assert await count(Status.QUEUED) == 3
    release.set()
    for job in jobs:
        await wait_status(deck.store, job.id, Status.SUCCEEDED)


# --- claiming ahead --------------------------------------------------------------------------


async def test_short_runs_are_claimed_ahead_and_never_exceed_concurrency(
    deck: Deck, make_worker: WorkerFactory
) -> None:
    """While runs are short, the worker holds more jobs than it has slots (claimed ahead,
    waiting), yet never runs more than ``concurrency`` at once."""
    gauge = Gauge()
    held: list[int] = []
    worker = make_worker(deck, concurrency=2)

    @deck.task
    async def quick() -> None:
        gauge.enter()
        held.append(len(worker.runs))
        gauge.leave()

    await deck.enqueue_many([deck.build_spec("quick") for _ in range(40)])
    await worker.run_until_idle(timeout=20)

    assert gauge.done == 40
    assert gauge.most <= 2
    assert max(held) > 2, "no job was ever claimed ahead of a free slot"


class ClaimWatch(ClaimsOnly):
    """Records, at each claim of ``worker``, how many jobs it held and how many it asked."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.worker: Worker | None = None
        #: (jobs held, limit asked) per claim.
        self.claims: list[tuple[int, int]] = []

    async def claim(
        self, worker: str, queues: Any, kinds: Any, limit: int, *args: Any, **kwargs: Any
    ) -> list[Job]:
        assert self.worker is not None
        self.claims.append((len(self.worker.runs), limit))
        return await self._store.claim(worker, queues, kinds, limit, *args, **kwargs)


async def test_the_next_claim_goes_out_while_jobs_claimed_ahead_still_wait(
    deck: Deck, make_worker: WorkerFactory
) -> None:
    """Claiming ahead, the worker claims again before the jobs it holds have all started
    (so that the claim's round trip overlaps their runs), yet never holds more than
    ``concurrency`` × (1 + CLAIM_AHEAD_FACTOR) jobs nor runs more than ``concurrency``."""
    gauge = Gauge()
    watch = ClaimWatch(deck.store)
    worker = make_worker(deck, concurrency=2, store=watch)
    watch.worker = worker

    @deck.task
    async def quick() -> None:
        gauge.enter()
        gauge.leave()

    await deck.enqueue_many([deck.build_spec("quick") for _ in range(300)])
    await worker.run_until_idle(timeout=30)

    assert gauge.done == 300
    assert gauge.most <= 2
    most = 2 * (1 + worker_module.CLAIM_AHEAD_FACTOR)
    assert all(held + limit <= most for held, limit in watch.claims), watch.claims
    assert max(held for held, _ in watch.claims) > 2, "no claim while jobs claimed ahead waited"


class SlowClaims(ClaimsOnly):
    """Claims that take a while, as over a slow network; counts those under way at once."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.under_way = 0
        self.most_at_once = 0

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        self.under_way += 1
        self.most_at_once = max(self.most_at_once, self.under_way)
        try:
            await asyncio.sleep(0.01)
            return await self._store.claim(*args, **kwargs)
        finally:
            self.under_way -= 1


@pytest.mark.parametrize("runs", ["short", "long"])
async def test_claiming_ahead_keeps_two_claims_under_way_and_long_runs_one(
    deck: Deck, make_worker: WorkerFactory, runs: str
) -> None:
    """While runs are short, a second claim goes out while the first waits for the
    database (CLAIMS_AT_ONCE); with long runs, one claim at a time."""
    slow = SlowClaims(deck.store)
    worker = make_worker(deck, concurrency=2, store=slow)
    count = 200 if runs == "short" else 6

    @deck.task
    async def job() -> None:
        if runs == "long":
            await asyncio.sleep(worker_module.CLAIM_AHEAD_RUN_SECONDS * 2)

    await deck.enqueue_many([deck.build_spec("job") for _ in range(count)])
    await worker.run_until_idle(timeout=30)

    page = await deck.store.list(JobFilter(statuses=(Status.SUCCEEDED,)), count + 1, None)
    assert len(page.items) == count
    expected = worker_module.CLAIMS_AT_ONCE if runs == "short" else 1
    assert slow.most_at_once == expected


class AloneClaims(ClaimsOnly):
    """Records the asyncio task of each claim ``worker`` makes with no other under way."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.worker: Worker | None = None
        self.tasks: list[asyncio.Task[Any] | None] = []

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        assert self.worker is not None
        if self.worker._under_way == 1:  # this claim only
            self.tasks.append(asyncio.current_task())
        return await self._store.claim(*args, **kwargs)


async def test_an_idle_worker_polls_with_one_claimer(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claims with no other under way (every claim of an idle worker) all come from one
    claimer: the others only claim beside it, so idle polling is not multiplied."""
    monkeypatch.setattr(worker_module, "SAFETY_POLL_SECONDS", 0.02)
    watch = AloneClaims(deck.store)
    worker = make_worker(deck, concurrency=2, store=watch)
    watch.worker = worker

    @deck.task
    async def quick() -> None:
        pass

    specs = [deck.build_spec("quick") for _ in range(30)]
    await deck.enqueue_many(specs)
    await worker.start()
    for spec in specs:
        await wait_status(deck.store, spec.id, Status.SUCCEEDED)
    idle_from = len(watch.tasks)
    await wait_for(lambda: len(watch.tasks) >= idle_from + 10, what="ten idle polls")

    assert len(set(watch.tasks)) == 1


async def test_long_runs_are_not_claimed_ahead(deck: Deck, make_worker: WorkerFactory) -> None:
    """Runs longer than CLAIM_AHEAD_RUN_SECONDS: the worker holds no more than its slots."""
    held: list[int] = []
    worker = make_worker(deck, concurrency=2)

    @deck.task
    async def slow() -> None:
        held.append(len(worker.runs))
        await asyncio.sleep(worker_module.CLAIM_AHEAD_RUN_SECONDS * 2)

    await deck.enqueue_many([deck.build_spec("slow") for _ in range(8)])
    await worker.run_until_idle(timeout=20)

    assert len(held) == 8
    assert max(held) <= 2


class AheadSetup:
    """A worker with one slot, taught that runs are short, whose slot a blocking job then
    holds while a second job was claimed ahead and waits."""

    def __init__(
        self, deck: Deck, worker: Worker, blocker: Job, behind: Job, ran: list[str]
    ) -> None:
        self.deck = deck
        self.worker = worker
        self.blocker = blocker
        self.behind = behind
        #: Ids of the quick jobs that ran.
        self.ran = ran


@pytest.fixture
async def ahead(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
) -> AsyncIterator[AheadSetup]:
    release = asyncio.Event()
    ran: list[str] = []

    @deck.task
    async def quick(ctx: JobContext) -> None:
        ran.append(ctx.job_id)

    @deck.task
    async def blocking() -> None:
        await release.wait()

    worker = make_worker(deck, concurrency=1)
    await worker.start()
    first = await deck.enqueue("quick")
    await wait_status(deck.store, first.id, Status.SUCCEEDED)
    blocker = await deck.enqueue("blocking")
    await wait_status(deck.store, blocker.id, Status.RUNNING)
    behind = await deck.enqueue("quick")
    await wait_for(lambda: behind.id in worker.runs, what="the second job claimed ahead")
    yield AheadSetup(deck, worker, blocker, behind, ran)
    release.set()


async def test_a_job_claimed_ahead_that_waits_too_long_goes_to_another_worker(
    ahead: AheadSetup,
    make_worker: WorkerFactory,
    wait_status: WaitStatus,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job that found no free slot within CLAIM_AHEAD_WAIT_SECONDS is handed back, its
    attempt given back, and an idle worker runs it while the first is still busy."""
    monkeypatch.setattr(worker_module, "CLAIM_AHEAD_WAIT_SECONDS", 0.2)
    other = make_worker(ahead.deck, name="idle-worker", concurrency=1)
    await other.start()

    done = await wait_status(ahead.deck.store, ahead.behind.id, Status.SUCCEEDED)

    assert done.worker == "idle-worker"
    assert done.attempt == 1
    blocker = await ahead.deck.store.get(ahead.blocker.id)
    assert blocker is not None and blocker.status is Status.RUNNING


async def test_cancelling_a_job_claimed_ahead_ends_it_without_running_it(
    ahead: AheadSetup, wait_status: WaitStatus
) -> None:
    """A cancel reaches a job waiting for a slot: it ends cancelled and never runs."""
    await ahead.deck.store.request_cancel(ahead.behind.id)

    await wait_status(ahead.deck.store, ahead.behind.id, Status.CANCELLED)

    assert ahead.behind.id not in ahead.ran
    blocker = await ahead.deck.store.get(ahead.blocker.id)
    assert blocker is not None and blocker.status is Status.RUNNING


async def test_stopping_hands_back_jobs_claimed_ahead(ahead: AheadSetup) -> None:
    """At shutdown a job waiting for a slot goes back to the queue with its attempt given
    back, without having run."""
    await ahead.worker.stop(grace_seconds=0)

    behind = await ahead.deck.store.get(ahead.behind.id)
    assert behind is not None
    assert behind.status is Status.QUEUED
    assert behind.attempt == 0
    assert ahead.behind.id not in ahead.ran
