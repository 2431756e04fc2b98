"""Fixtures of the worker tests: a Deck on a fresh database of each backend, and workers on it.

Every test here runs once per backend of :data:`backends.BACKENDS` (through the
``fresh_database`` fixture of ``tests/conftest.py``) and reaches the database only through
the :class:`~jobdeck.store.base.Store` port (``deck.store``), so that adding an adapter is one
entry there. Waits are polls with a deadline (``wait_for``, ``wait_status``) or events, never
bare sleeps.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from backends import Database
from jobdeck.deck import Deck
from jobdeck.model import Job, Status
from jobdeck.settings import Settings
from jobdeck.store.base import Store
from jobdeck.tasks import builtin_registry
from jobdeck.worker import Worker

#: Short intervals so that leases, retries and cancel checks play out within a second.
WORKER_SETTINGS = Settings(
    lease_seconds=0.6,
    poll_seconds=0.01,
    cancel_check_seconds=0.05,
    backoff_base_seconds=0.01,
    backoff_max_seconds=0.05,
    shutdown_grace_seconds=1,
    embedded_worker=False,
)


DeckFactory = Callable[..., Awaitable[Deck]]
WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]


@pytest.fixture
def database(fresh_database: Database) -> Settings:
    """:data:`WORKER_SETTINGS` pointing at a fresh, empty database of each backend in turn."""
    return fresh_database.configure(WORKER_SETTINGS)


@pytest.fixture
async def make_deck(database: Settings) -> AsyncIterator[DeckFactory]:
    """``await make_deck(**settings_changes)``: a Deck with its store open and no worker."""
    decks: list[Deck] = []

    async def make(**changes: Any) -> Deck:
        deck = Deck(database.with_(**changes), registry=builtin_registry())
        await deck.start(worker=False)
        decks.append(deck)
        return deck

    yield make
    for deck in reversed(decks):
        await deck.stop()


@pytest.fixture
async def deck(make_deck: DeckFactory) -> Deck:
    """A Deck with the test settings, its store open, no embedded worker."""
    return await make_deck()


@pytest.fixture
async def make_worker(make_deck: DeckFactory) -> AsyncIterator[WorkerFactory]:
    """``make_worker(deck, name=..., concurrency=..., store=...)``: a Worker, not started.

    Every worker made is stopped (grace 0) before the decks close.
    """
    workers: list[Worker] = []

    def make(
        deck: Deck,
        *,
        name: str | None = None,
        concurrency: int | None = None,
        store: Store | None = None,
    ) -> Worker:
        worker = Worker(
            store if store is not None else deck.store,
            deck.registry,
            deck.settings,
            name=name,
            concurrency=concurrency,
        )
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await asyncio.wait_for(worker.stop(grace_seconds=0), timeout=10)


@pytest.fixture
def gate(make_worker: WorkerFactory) -> Iterator[Callable[[], threading.Event]]:
    """``gate()``: a threading.Event for sync tasks to block on; all are set at teardown,
    before the workers stop, so that no task thread is left waiting."""
    events: list[threading.Event] = []

    def make() -> threading.Event:
        event = threading.Event()
        events.append(event)
        return event

    yield make
    for event in events:
        event.set()


@pytest.fixture
def wait_for(eventually: WaitFor) -> WaitFor:
    """``await wait_for(predicate, timeout=5, what=...)``: poll a sync or async predicate
    until it returns something truthy (returned); fail at the deadline."""

    async def wait(
        predicate: Callable[[], Any], *, timeout: float = 5.0, what: str = "condition"
    ) -> Any:
        async def check() -> Any:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            return value

        return await eventually(check, timeout=timeout, interval=0.005, what=what)

    return wait


@pytest.fixture
def wait_status(wait_for: WaitFor) -> WaitStatus:
    """``await wait_status(store, job_id, *statuses, timeout=5)``: the job once it has one of
    ``statuses`` (any terminal status when none is given)."""

    async def wait(store: Store, job_id: str, *statuses: Status, timeout: float = 5.0) -> Job:
        wanted = set(statuses)

        async def reached() -> Job | None:
            job = await store.get(job_id)
            if job is None:
                return None
            ok = job.status in wanted if wanted else job.is_terminal
            return job if ok else None

        names = ", ".join(s.value for s in statuses) or "a terminal status"
        return await wait_for(reached, timeout=timeout, what=f"job {job_id} {names}")

    return wait
