"""Fixtures of the storage conformance suite.

Every test in ``test_conformance_*.py`` runs once per backend of :data:`backends.BACKENDS`
(through the ``fresh_database`` fixture of ``tests/conftest.py``) and speaks only the
:class:`~jobdeck.store.base.Store` protocol. Adding an adapter is one entry there.

A test that needs something not every backend offers declares it with
``@pytest.mark.requires_capability("name")`` (see :data:`backends.CAPABILITIES`); it is
skipped on a backend whose adapter does not declare that capability. Tests never skip by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from backends import Database
from jobdeck.model import Job, JobError, JobSpec, Outcome, OutcomeKind, new_job_id, now_us
from jobdeck.settings import Settings
from jobdeck.store import open_store
from jobdeck.store.base import Store, WorkerBatch

#: Settings of every store under test: short intervals so that waiting tests stay fast.
TEST_SETTINGS = Settings(lease_seconds=0.5, poll_seconds=0.01, cancel_check_seconds=0.05)

#: A lease that outlives any test.
LONG_LEASE = 30.0


@pytest.fixture
def database(fresh_database: Database) -> Database:
    """A fresh, empty database of each backend in turn."""
    return fresh_database


@asynccontextmanager
async def opened_store(database: Database) -> AsyncIterator[Store]:
    """A store object on ``database`` (``open_store`` picks the adapter from the URL), opened
    for the block and closed after it."""
    store = open_store(database.configure(TEST_SETTINGS))
    adapter = database.backend.store_class()
    assert isinstance(store, adapter), f"open_store gave {type(store)}, not {adapter}"
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def store_on() -> Callable[[Database], AbstractAsyncContextManager[Store]]:
    """``async with store_on(database) as store:`` another store object, opened for the block
    (a store of another process, or of the same process after a restart)."""
    return opened_store


@pytest.fixture
async def store(database: Database) -> AsyncIterator[Store]:
    """An opened store on a fresh database."""
    async with opened_store(database) as opened:
        yield opened


@pytest.fixture
async def peer(database: Database, store: Store) -> AsyncIterator[Store]:
    """A second store object on the same database as ``store`` (another process, in effect)."""
    async with opened_store(database) as opened:
        yield opened


# --- helpers bound to the store under test ------------------------------------------------


@pytest.fixture
def add(store: Store, make_spec: Callable[..., JobSpec]) -> Callable[..., Awaitable[Job]]:
    """``await add(**spec_fields)``: enqueue one new job and return it."""

    async def add(**overrides: Any) -> Job:
        [entry] = await store.enqueue([make_spec(**overrides)])
        assert entry.created
        return entry.job

    return add


@pytest.fixture
def start(store: Store, add: Callable[..., Awaitable[Job]]) -> Callable[..., Awaitable[Job]]:
    """``await start(worker="w1", lease_seconds=..., **spec_fields)``: a job claimed by ``worker``.

    The job goes to a queue of its own unless a queue is given, so that nothing else is
    claimed in its place.
    """

    async def start(worker: str = "w1", lease_seconds: float = LONG_LEASE, **overrides: Any) -> Job:
        overrides.setdefault("queue", f"q-{new_job_id()}")
        job = await add(**overrides)
        claimed = await store.claim(worker, [job.queue], [job.kind], 1, lease_seconds)
        assert [c.id for c in claimed] == [job.id]
        return claimed[0]

    return start


@pytest.fixture
def finish(store: Store) -> Callable[..., Awaitable[Job | None]]:
    """``await finish(job, OutcomeKind.X, worker=..., ...)``: record one outcome, return the job.

    The worker defaults to the one that holds the job.
    """

    async def finish(
        job: Job,
        kind: OutcomeKind,
        *,
        worker: str | None = None,
        result: Any = None,
        error: JobError | None = None,
        retry_at: int | None = None,
    ) -> Job | None:
        owner = worker or job.worker
        assert owner is not None
        outcome = Outcome(job.id, owner, kind, result, error, retry_at, now_us())
        await store.record(WorkerBatch(owner, outcomes=[outcome]), 1000)
        return await store.get(job.id)

    return finish


@pytest.fixture
def rescue(
    store: Store, eventually: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[dict[str, Job]]]:
    """``await rescue(*job_ids)``: call ``rescue_expired`` until all those jobs were rescued.

    Returns every job rescued meanwhile, by id (so a test can check what was not rescued).
    """

    async def rescue(*job_ids: str, timeout: float = 5.0) -> dict[str, Job]:
        found: dict[str, Job] = {}

        async def check() -> bool:
            for job in await store.rescue_expired():
                assert job.id not in found, f"{job.id} rescued twice"
                found[job.id] = job
            return set(job_ids) <= found.keys()

        await eventually(check, timeout=timeout, what=f"rescue of {job_ids}")
        return found

    return rescue
