"""The built-in kind ``steps`` (DESIGN §5) run by a real worker."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from jobdeck.deck import Deck
from jobdeck.model import Job, Progress, Status
from jobdeck.store.base import CancelEffect
from jobdeck.worker import Worker

WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]


async def test_zero_steps_succeeds_at_once(deck: Deck, make_worker: WorkerFactory) -> None:
    """steps with n_steps=0 succeeds on its first run with result {"steps": 0}."""
    job = await deck.enqueue("steps", {"n_steps": 0})
    assert job.params == {"n_steps": 0, "step_seconds": 1.0}
    await make_worker(deck).run_until_idle(timeout=5)

    done = await deck.store.get(job.id)
    assert done is not None
    assert (done.status, done.result, done.attempt) == (Status.SUCCEEDED, {"steps": 0}, 1)
    assert done.progress.current == 0
    assert (await deck.store.logs(job.id, None, 100)).items == []


async def test_three_steps_report_progress_and_log(deck: Deck, make_worker: WorkerFactory) -> None:
    """steps with n_steps=3 ends with progress 3/3 (100 %), three log lines and its result."""
    job = await deck.enqueue("steps", {"n_steps": 3, "step_seconds": 0.01})
    await make_worker(deck).run_until_idle(timeout=5)

    done = await deck.store.get(job.id)
    assert done is not None
    assert (done.status, done.result) == (Status.SUCCEEDED, {"steps": 3})
    assert done.progress == Progress(3, 3, "step 3 of 3")
    shown = done.to_dict()["progress"]
    assert (shown["percent"], shown["eta_seconds"]) == (100.0, 0.0)
    lines = (await deck.store.logs(job.id, None, 100)).items
    assert len(lines) == 3
    assert [line.seq for line in lines] == [1, 2, 3]
    assert all(f"{n}" in line.message for n, line in enumerate(lines, start=1))


async def test_cancel_interrupts_a_long_step_at_once(
    deck: Deck, make_worker: WorkerFactory, wait_for: WaitFor, wait_status: WaitStatus
) -> None:
    """Cancelling a running steps job with 30 s steps ends it cancelled within a second."""
    job = await deck.enqueue("steps", {"n_steps": 5, "step_seconds": 30})
    await make_worker(deck).start()

    async def reported_total() -> bool:
        seen = await deck.store.get(job.id)
        return seen is not None and seen.progress.total == 5

    await wait_for(reported_total, what="first progress written")
    asked = time.monotonic()
    _, effect = await deck.store.request_cancel(job.id)
    assert effect is CancelEffect.REQUESTED
    done = await wait_status(deck.store, job.id, timeout=1.0)

    assert time.monotonic() - asked < 1.0
    assert done.status is Status.CANCELLED
    assert done.result is None
    assert done.progress.current == 0
