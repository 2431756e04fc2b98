"""Worker: what a run reports — coalesced progress, log lines with their cap, JSON results."""

from __future__ import annotations

import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jobdeck.deck import Deck
from jobdeck.model import Job, Progress, Status
from jobdeck.store.base import LogLine, Store
from jobdeck.tasks import JobContext
from jobdeck.worker import Worker

WorkerFactory = Callable[..., Worker]
DeckFactory = Callable[..., Awaitable[Deck]]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]
Gate = Callable[[], threading.Event]

CALLS = 100_000


async def all_logs(store: Store, job_id: str) -> list[LogLine]:
    page = await store.logs(job_id, None, 1000)
    assert page.next_cursor is None
    return page.items


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
async def test_progress_in_a_hot_loop_is_coalesced(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus, asynchronous: bool
) -> None:
    """100,000 ctx.progress calls make only a handful of writes (the version stays small);
    the stored progress is the last call's, with total and message kept from earlier calls."""

    def report(ctx: JobContext) -> None:
        ctx.progress(0, total=CALLS, message="counting")
        for i in range(1, CALLS + 1):
            ctx.progress(i)

    if asynchronous:

        @deck.task(name="hot_loop")
        async def hot_loop_async(ctx: JobContext) -> None:
            report(ctx)

    else:

        @deck.task(name="hot_loop")
        def hot_loop_sync(ctx: JobContext) -> None:
            report(ctx)

    job = await deck.enqueue("hot_loop")
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=20)

    assert done.status is Status.SUCCEEDED
    assert done.progress == Progress(CALLS, CALLS, "counting")
    assert done.version < 50, f"{done.version - job.version} writes for {CALLS} progress calls"
    assert done.to_dict()["progress"]["percent"] == 100.0


async def test_progress_is_written_while_the_job_runs(
    deck: Deck, make_worker: WorkerFactory, gate: Gate, wait_for: WaitFor
) -> None:
    """Progress reported by a running job shows in the store before the job ends."""
    release = gate()

    @deck.task
    def halfway(ctx: JobContext) -> None:
        ctx.progress(5, total=10, message="half")
        release.wait(10)

    job = await deck.enqueue("halfway")
    await make_worker(deck).start()

    async def shown() -> Job | None:
        seen = await deck.store.get(job.id)
        return seen if seen is not None and seen.progress.current == 5 else None

    running = await wait_for(shown, what="progress written")
    assert running.status is Status.RUNNING
    assert running.progress == Progress(5, 10, "half")
    assert running.to_dict()["progress"]["percent"] == 50.0
    release.set()


async def test_log_lines_are_stored_in_order_up_to_the_cap(
    make_deck: DeckFactory,
    make_worker: WorkerFactory,
    gate: Gate,
    wait_for: WaitFor,
    wait_status: WaitStatus,
) -> None:
    """Lines logged over several writes keep their order and levels; past
    JOBDECK_MAX_LOG_LINES they are only counted, in a final marker line."""
    deck = await make_deck(max_log_lines=5)
    release = gate()

    @deck.task
    def chatty(ctx: JobContext) -> None:
        ctx.log("line 1")
        ctx.log("line 2", level="warning")
        ctx.log("line 3")
        release.wait(10)
        for n in range(4, 13):
            ctx.log(f"line {n}", level="error" if n == 4 else "info")

    job = await deck.enqueue("chatty")
    await make_worker(deck).start()

    async def first_three() -> bool:
        return len(await all_logs(deck.store, job.id)) == 3

    await wait_for(first_three, what="first lines written")
    release.set()
    done = await wait_status(deck.store, job.id)
    assert done.status is Status.SUCCEEDED

    lines = await all_logs(deck.store, job.id)
    assert [(line.seq, line.level, line.message) for line in lines[:5]] == [
        (1, "info", "line 1"),
        (2, "warning", "line 2"),
        (3, "info", "line 3"),
        (4, "error", "line 4"),
        (5, "info", "line 5"),
    ]
    assert len(lines) == 6
    marker = lines[5]
    assert marker.seq == 6
    assert re.search(r"\b7\b", marker.message), marker.message  # lines 6..12 were dropped
    ats = [line.at for line in lines]
    assert ats == sorted(ats)


async def test_many_log_lines_in_one_write_keep_their_order(
    deck: Deck, make_worker: WorkerFactory
) -> None:
    """Hundreds of lines logged at once are stored in the order they were logged."""

    @deck.task
    def verbose(ctx: JobContext) -> None:
        for n in range(300):
            ctx.log(f"entry {n}")

    job = await deck.enqueue("verbose")
    await make_worker(deck).run_until_idle(timeout=10)

    lines = await all_logs(deck.store, job.id)
    assert [line.message for line in lines] == [f"entry {n}" for n in range(300)]
    assert [line.seq for line in lines] == list(range(1, 301))


class Opaque:
    """Something json cannot encode."""


@pytest.mark.parametrize(
    "result",
    [Opaque(), {1, 2}, {"when": b"bytes"}, float("nan"), {"ratio": float("inf")}],
    ids=["object", "set", "bytes", "nan", "infinity"],
)
async def test_result_that_is_not_json_fails_the_job(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus, result: Any
) -> None:
    """A task returning something JSON cannot represent fails with an error saying so."""

    @deck.task(max_attempts=1)
    def unencodable() -> Any:
        return result

    job = await deck.enqueue("unencodable")
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id)

    assert done.status is Status.FAILED
    assert done.result is None
    assert done.error is not None
    assert "JSON" in done.error.message


async def test_json_result_is_stored_as_returned(deck: Deck, make_worker: WorkerFactory) -> None:
    """A JSON-compatible result is stored and read back equal."""
    value = {"rows": [1, 2.5, None, True], "name": "ジョブ", "nested": {"ok": []}}

    @deck.task
    async def structured() -> dict[str, Any]:
        return value

    job = await deck.enqueue("structured")
    await make_worker(deck).run_until_idle(timeout=10)
    done = await deck.store.get(job.id)
    assert done is not None
    assert (done.status, done.result) == (Status.SUCCEEDED, value)
