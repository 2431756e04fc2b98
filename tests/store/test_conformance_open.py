"""Conformance: opening a store — capabilities, migrations, durability across store objects,
and isolation of databases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

from backends import CAPABILITIES, Database, PostgresServer
from jobdeck.model import Job, JobSpec
from jobdeck.store.base import JobFilter, Store

JobFactory = Callable[..., Awaitable[Job]]
SpecFactory = Callable[..., JobSpec]
StoreOn = Callable[[Database], AbstractAsyncContextManager[Store]]


async def test_the_adapter_declares_every_capability(store: Store) -> None:
    """Each capability a test may require is a boolean the adapter states, on the class and
    on the open store alike."""
    for name in CAPABILITIES:
        assert isinstance(getattr(type(store), name, None), bool), name
        assert isinstance(getattr(store, name, None), bool), name


async def test_ping_answers(store: Store) -> None:
    await store.ping()


async def test_migrate_again_changes_nothing(store: Store, add: JobFactory) -> None:
    """Migrating an up-to-date database returns the same version and keeps every job."""
    job = await add()
    version = await store.migrate()
    assert version >= 1
    assert await store.migrate() == version
    assert await store.get(job.id) == job


async def test_jobs_outlive_the_store_object(
    database: Database, store_on: StoreOn, make_spec: SpecFactory
) -> None:
    """A job stored through one store object is there for a new one opened after the first
    closed (a restart, in effect)."""
    spec = make_spec()
    async with store_on(database) as first:
        [entry] = await first.enqueue([spec])
    async with store_on(database) as second:
        assert await second.get(spec.id) == entry.job


async def test_databases_are_isolated(
    database: Database,
    store: Store,
    add: JobFactory,
    store_on: StoreOn,
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    """Two databases of one backend (PostgreSQL: two schemas of one server) share nothing:
    what one holds, the other does not see."""
    job = await add()

    def directory() -> Path:
        path = tmp_path / "other"
        path.mkdir()
        return path

    with database.backend.fresh(directory, postgres_server) as other:
        async with store_on(other) as elsewhere:
            assert await elsewhere.get(job.id) is None
            assert (await elsewhere.list(JobFilter(), 10, None)).items == []
            assert (await elsewhere.stats()).queues == {}
            [entry] = await elsewhere.enqueue([JobSpec(job.kind, job.params, job.id)])
            assert entry.created
    assert await store.get(job.id) == job
