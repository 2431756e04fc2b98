"""Worker: a loop meeting an unexpected error (a bug, not an unreachable store) logs it and
goes on; it never dies quietly, leaving the worker up but doing nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from jobdeck import worker as worker_module
from jobdeck.deck import Deck
from jobdeck.model import Job, Status
from jobdeck.worker import Worker
from worker.stores import Faulty

DeckFactory = Callable[..., Awaitable[Deck]]
WorkerFactory = Callable[..., Worker]
WaitStatus = Callable[..., Awaitable[Job]]


@pytest.fixture(autouse=True)
def short_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "ERROR_PAUSE_SECONDS", 0.05)


async def test_claim_loop_survives_a_failing_claim(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_status: WaitStatus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Faulty(deck.store, "claim", times=2)
    worker = make_worker(deck, store=store)  # type: ignore[arg-type]
    await worker.start()

    job = await deck.enqueue("steps", {"n_steps": 0})
    await wait_status(deck.store, job.id, Status.SUCCEEDED)

    assert store.failures_left["claim"] == 0
    assert "claim failed" in caplog.text and "claim broke (test)" in caplog.text


async def test_lease_loop_survives_a_failing_heartbeat(
    make_deck: DeckFactory, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """A heartbeat that fails once is followed by others: a run longer than its lease is not
    fenced off and ends with its first attempt."""
    deck = await make_deck(lease_seconds=0.6)
    store = Faulty(deck.store, "heartbeat", "rescue_expired")
    worker = make_worker(deck, store=store)  # type: ignore[arg-type]
    await worker.start()

    job = await deck.enqueue("steps", {"n_steps": 30, "step_seconds": 0.05})
    ended = await wait_status(deck.store, job.id, Status.SUCCEEDED)

    assert store.failures_left == {"heartbeat": 0, "rescue_expired": 0}
    assert ended.attempt == 1


async def test_cancel_loop_survives_a_failing_check(
    make_deck: DeckFactory, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """The first cancel check fails; a later one brings the cancel (heartbeats, which
    would bring it too, are far apart here)."""
    deck = await make_deck(lease_seconds=60)
    store = Faulty(deck.store, "cancel_requests")
    worker = make_worker(deck, store=store)  # type: ignore[arg-type]
    await worker.start()

    job = await deck.enqueue("steps", {"n_steps": 200, "step_seconds": 0.05})
    await wait_status(deck.store, job.id, Status.RUNNING)
    await deck.store.request_cancel(job.id)
    ended = await wait_status(deck.store, job.id, Status.CANCELLED)

    assert store.failures_left == {"cancel_requests": 0}
    assert ended.attempt == 1
