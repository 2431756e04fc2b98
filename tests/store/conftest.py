"""Fixtures of the storage conformance suite.

Every test in ``test_conformance_*.py`` runs once per backend in :data:`BACKENDS` and speaks
only the :class:`~jobdeck.store.base.Store` protocol. Adding an adapter is one entry there.

A test that needs something not every backend offers declares it with
``@pytest.mark.requires_capability("name")``; the ``database`` fixture skips it on a backend
that does not list that capability. Tests never skip by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from jobdeck.model import Job, JobError, JobSpec, Outcome, OutcomeKind, new_job_id, now_us
from jobdeck.settings import Settings
from jobdeck.store.base import Store, WorkerBatch

#: Settings of every store under test: short intervals so that waiting tests stay fast.
TEST_SETTINGS = Settings(lease_seconds=0.5, poll_seconds=0.01, cancel_check_seconds=0.05)

#: A lease that outlives any test.
LONG_LEASE = 30.0

#: ``push_notifications``: changes made through one store object reach another store object on
#: the same database at once (``hub.work_available``, ``hub.cancel_requested``), not only by
#: polling. PostgreSQL has it (LISTEN/NOTIFY); SQLite across connections does not.
CAPABILITIES = frozenset({"push_notifications"})


@dataclass(frozen=True)
class Backend:
    """One storage adapter: how to get a fresh empty database and a store object on it."""

    name: str
    capabilities: frozenset[str]
    #: ``fresh_database(tmp_path, settings)`` enters a fresh empty database and yields the
    #: settings that point at it.
    fresh_database: Callable[[Path, Settings], AbstractContextManager[Settings]]
    #: ``make_store(settings)``: a store object on that database, not yet opened.
    make_store: Callable[[Settings], Store]
    #: Why this backend cannot run here (e.g. no server configured), or None.
    unavailable: Callable[[], str | None] = lambda: None


@contextmanager
def _sqlite_database(tmp_path: Path, settings: Settings) -> Iterator[Settings]:
    yield settings.with_(database_url=f"sqlite:///{tmp_path / 'jobdeck.db'}")


def _sqlite_store(settings: Settings) -> Store:
    from jobdeck.store.sqlite import SQLiteStore

    return SQLiteStore(settings.database_url.removeprefix("sqlite:///"), settings)


BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("sqlite", frozenset(), _sqlite_database, _sqlite_store),
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_capability(*names): run only on store backends declaring these capabilities",
    )


@dataclass(frozen=True)
class Database:
    """A fresh database of one backend, and the settings that point at it."""

    backend: Backend
    settings: Settings


@pytest.fixture(params=sorted(BACKENDS))
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A fresh, empty database of each backend in turn."""
    backend = BACKENDS[request.param]
    reason = backend.unavailable()
    if reason is not None:
        pytest.skip(f"{backend.name}: {reason}")
    required: set[str] = set()
    for marker in request.node.iter_markers("requires_capability"):
        required.update(marker.args)
    unknown = required - CAPABILITIES
    assert not unknown, f"undeclared capabilities {sorted(unknown)}"
    missing = required - backend.capabilities
    if missing:
        pytest.skip(f"{backend.name} lacks {', '.join(sorted(missing))}")
    with backend.fresh_database(tmp_path, TEST_SETTINGS) as settings:
        yield Database(backend, settings)


@asynccontextmanager
async def opened_store(database: Database) -> AsyncIterator[Store]:
    """A store object on ``database``, opened for the block and closed after it."""
    store = database.backend.make_store(database.settings)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


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
