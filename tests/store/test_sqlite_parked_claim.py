"""SQLite only: claims parked with the store by idle workers (``park_claim``).

A parked claim runs on the writer thread right after a commit of this process that makes
jobs runnable, and the callers of that commit are answered once the claim has read its jobs:
an embedded worker picks a submitted job up one commit after it is stored, with no turn of
the event loop in between.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from jobdeck.errors import StoreUnavailable
from jobdeck.model import Job, JobSpec, Status, new_job_id, now_us
from jobdeck.settings import Settings
from jobdeck.store.base import ParkedClaim
from jobdeck.store.sqlite import SQLiteStore
from jobdeck.tasks import builtin_registry
from jobdeck.worker import Worker

LEASE = 30.0


def spec() -> JobSpec:
    return JobSpec(kind="steps", params={"n_steps": 0}, id=new_job_id())


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(str(tmp_path / "parked.db"), Settings())
    await opened.open()
    yield opened
    await opened.close()


def park(store: SQLiteStore) -> ParkedClaim:
    parked = store.park_claim("w1", ["default"], ["steps"], 5, LEASE)
    assert parked is not None
    return parked


async def test_a_parked_claim_takes_new_jobs_before_their_caller_resumes(
    store: SQLiteStore,
) -> None:
    """An enqueue of two jobs runs the parked claim at once: by the time the enqueue
    returns, the claim has started (too late to withdraw) and leased both jobs, which start
    no later than that moment."""
    parked = park(store)
    assert store.parked_claims == 1
    specs = [spec(), spec()]
    await store.enqueue(specs)
    returned_at = now_us()
    assert not parked.withdraw()
    jobs, _ = await asyncio.wait_for(parked.result(), 5)
    assert [job.id for job in jobs] == [s.id for s in specs]
    for job in jobs:
        assert job.status is Status.RUNNING and job.worker == "w1"
        assert job.started_at is not None and job.started_at <= returned_at
        assert await store.get(job.id) == job
    assert store.parked_claims == 0


async def test_a_withdrawn_claim_never_runs(store: SQLiteStore) -> None:
    parked = park(store)
    assert parked.withdraw()
    queued = spec()
    await store.enqueue([queued])
    job = await store.get(queued.id)
    assert job is not None and job.status is Status.QUEUED
    assert store.parked_claims == 0


async def test_only_writes_that_make_jobs_runnable_run_parked_claims(store: SQLiteStore) -> None:
    """Enqueueing a job that exists already and asking a running job to stop leave the
    parked claim waiting; a retry, which queues a job again, runs it."""
    existing, dropped = spec(), spec()
    await store.enqueue([existing, dropped])
    await store.request_cancel(dropped.id)
    (held,) = await store.claim("w0", ["default"], ["steps"], 1, LEASE)
    parked = park(store)
    (again,) = await store.enqueue([existing])
    assert not again.created
    await store.request_cancel(held.id)
    assert store.parked_claims == 1
    await store.retry(dropped.id)
    jobs, _ = await asyncio.wait_for(parked.result(), 5)
    assert [job.id for job in jobs] == [dropped.id]


async def test_closing_the_store_fails_its_parked_claims(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "closing.db"), Settings())
    await store.open()
    parked = park(store)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await parked.result()


async def test_an_idle_worker_picks_jobs_up_through_its_parked_claim(tmp_path: Path) -> None:
    """An idle worker on SQLite waits with a claim parked: each job submitted has started by
    the time its enqueue returns (the worker polls only every 5 s here)."""
    settings = Settings(poll_seconds=5.0, embedded_worker=False)
    store = SQLiteStore(str(tmp_path / "worker.db"), settings)
    await store.open()
    worker = Worker(store, builtin_registry(), settings, name="w1", concurrency=2)
    await worker.start()
    try:
        for _ in range(3):
            await until(lambda: store.parked_claims == 1)
            submitted = spec()
            await store.enqueue([submitted])
            returned_at = now_us()
            job = await until(functools.partial(finished, store, submitted.id))
            assert job.status is Status.SUCCEEDED
            assert job.started_at is not None and job.started_at <= returned_at
    finally:
        await worker.stop()
        await store.close()


async def finished(store: SQLiteStore, job_id: str) -> Job | None:
    job = await store.get(job_id)
    return job if job is not None and job.is_terminal else None


async def until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``check`` (a value or an awaitable) until it is truthy, or fail at the deadline."""
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(0.005)
