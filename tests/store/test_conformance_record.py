"""Conformance: worker batches — progress, log lines (numbering, paging, cap) and outcomes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import pytest

from jobdeck.model import (
    MICROS,
    Job,
    JobError,
    Outcome,
    OutcomeKind,
    Progress,
    Status,
    now_us,
)
from jobdeck.store.base import JobFilter, LogLine, NewLogLine, ProgressUpdate, Store, WorkerBatch
from store_checks import assert_between, current

JobFactory = Callable[..., Awaitable[Job]]
Finisher = Callable[..., Awaitable[Job | None]]

LONG_LEASE = 30.0
BOOM = JobError("ValueError", "boom", "Traceback (most recent call last): ...")


async def all_logs(store: Store, job_id: str, limit: int = 1000) -> list[LogLine]:
    """Every log line of a job, page after page (at most 100 pages)."""
    lines: list[LogLine] = []
    cursor: str | None = None
    for _ in range(100):
        page = await store.logs(job_id, cursor, limit)
        assert len(page.items) <= limit
        lines.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return lines
    pytest.fail("log listing did not end within 100 pages")


def lines_for(job_id: str, texts: list[str]) -> list[NewLogLine]:
    base = now_us()
    return [NewLogLine(job_id, base + i, "info", text) for i, text in enumerate(texts)]


# --- progress -------------------------------------------------------------------------------


async def test_progress_is_visible_and_bumps_version(store: Store, start: JobFactory) -> None:
    """A progress update of the owner shows on get, with a new version; the last one wins."""
    job = await start(worker="w1")
    await store.record(WorkerBatch("w1", progress=[ProgressUpdate(job.id, 3, 10, "three")]), 100)
    first = await current(store, job.id)
    assert first.progress == Progress(3, 10, "three")
    assert first.version > job.version

    await store.record(WorkerBatch("w1", progress=[ProgressUpdate(job.id, 4.5, None, None)]), 100)
    second = await current(store, job.id)
    assert second.progress == Progress(4.5, None, None)
    assert second.version > first.version
    assert second.status is Status.RUNNING


async def test_progress_of_a_worker_not_owning_the_job_is_ignored(
    store: Store, start: JobFactory, add: JobFactory
) -> None:
    """Progress from another worker, or for a queued job, changes nothing."""
    job = await start(worker="w1")
    queued = await add()
    updates = [ProgressUpdate(job.id, 1, 2, "x"), ProgressUpdate(queued.id, 1, 2, "x")]
    await store.record(WorkerBatch("w2", progress=updates), 100)
    assert await store.get(job.id) == job
    assert await store.get(queued.id) == queued


async def test_one_batch_writes_for_several_jobs(store: Store, start: JobFactory) -> None:
    """One batch carries progress, logs and outcomes of several jobs; all of it lands."""
    a = await start(worker="w1")
    b = await start(worker="w1")
    batch = WorkerBatch(
        "w1",
        progress=[ProgressUpdate(a.id, 1, 2, None), ProgressUpdate(b.id, 2, 2, "done")],
        logs=lines_for(a.id, ["a1"]) + lines_for(b.id, ["b1", "b2"]),
        outcomes=[Outcome(b.id, "w1", OutcomeKind.SUCCEEDED, result=[1], finished_at=now_us())],
    )
    await store.record(batch, 100)
    job_a, job_b = await current(store, a.id), await current(store, b.id)
    assert (job_a.status, job_a.progress) == (Status.RUNNING, Progress(1, 2, None))
    assert (job_b.status, job_b.progress, job_b.result) == (
        Status.SUCCEEDED,
        Progress(2, 2, "done"),
        [1],
    )
    assert [line.message for line in await all_logs(store, a.id)] == ["a1"]
    assert [line.message for line in await all_logs(store, b.id)] == ["b1", "b2"]


async def test_empty_batch_changes_nothing(store: Store, start: JobFactory) -> None:
    """Recording an empty batch is harmless."""
    job = await start(worker="w1")
    await store.record(WorkerBatch("w1"), 100)
    assert await store.get(job.id) == job


# --- logs --------------------------------------------------------------------------------------


async def test_log_lines_are_numbered_in_order(store: Store, start: JobFactory) -> None:
    """Lines get seq 1, 2, 3... in the order written, across batches, keeping at/level/message."""
    job = await start(worker="w1")
    first = [NewLogLine(job.id, 1_000, "info", "one"), NewLogLine(job.id, 2_000, "warning", "two")]
    await store.record(WorkerBatch("w1", logs=first), 100)
    await store.record(WorkerBatch("w1", logs=[NewLogLine(job.id, 3_000, "error", "三")]), 100)
    assert await all_logs(store, job.id) == [
        LogLine(1, 1_000, "info", "one"),
        LogLine(2, 2_000, "warning", "two"),
        LogLine(3, 3_000, "error", "三"),
    ]


async def test_log_pages(store: Store, start: JobFactory) -> None:
    """Log pages of a given size visit every line once, oldest first; last page has no cursor."""
    job = await start(worker="w1")
    texts = [f"line {i}" for i in range(7)]
    await store.record(WorkerBatch("w1", logs=lines_for(job.id, texts)), 100)
    first = await store.logs(job.id, None, 3)
    assert [line.seq for line in first.items] == [1, 2, 3]
    assert first.next_cursor is not None
    for limit in (1, 3, 7, 50):
        lines = await all_logs(store, job.id, limit)
        assert [line.seq for line in lines] == list(range(1, 8)), f"limit {limit}"
        assert [line.message for line in lines] == texts
    last = await store.logs(job.id, None, 50)
    assert last.next_cursor is None


async def test_logs_of_jobs_are_separate(store: Store, start: JobFactory) -> None:
    """Each job numbers its own lines from 1."""
    a = await start(worker="w1")
    b = await start(worker="w1")
    await store.record(WorkerBatch("w1", logs=lines_for(a.id, ["a1", "a2"])), 100)
    await store.record(WorkerBatch("w1", logs=lines_for(b.id, ["b1"])), 100)
    assert [(x.seq, x.message) for x in await all_logs(store, b.id)] == [(1, "b1")]
    assert [(x.seq, x.message) for x in await all_logs(store, a.id)] == [(1, "a1"), (2, "a2")]


@pytest.mark.parametrize("batches", [[8], [3, 3, 2], [5, 1, 1, 1], [1] * 8], ids=str)
async def test_log_cap_keeps_the_first_lines_and_counts_the_rest(
    store: Store, start: JobFactory, batches: list[int]
) -> None:
    """With max_log_lines=5, 8 lines keep the first 5 plus one final marker counting 3 dropped."""
    job = await start(worker="w1")
    written = 0
    for size in batches:
        texts = [f"line {written + i}" for i in range(size)]
        written += size
        await store.record(WorkerBatch("w1", logs=lines_for(job.id, texts)), 5)
    lines = await all_logs(store, job.id, limit=2)
    assert [line.message for line in lines[:5]] == [f"line {i}" for i in range(5)]
    assert [line.seq for line in lines[:5]] == [1, 2, 3, 4, 5]
    assert len(lines) == 6, [line.message for line in lines]
    marker = lines[5]
    assert marker.seq > 5
    assert re.search(r"\b3\b", marker.message), marker.message
    assert "drop" in marker.message.lower(), marker.message


async def test_log_cap_not_reached_adds_no_marker(store: Store, start: JobFactory) -> None:
    """Exactly max_log_lines lines are all kept, with no marker."""
    job = await start(worker="w1")
    await store.record(WorkerBatch("w1", logs=lines_for(job.id, ["a", "b", "c"])), 3)
    assert [line.message for line in await all_logs(store, job.id)] == ["a", "b", "c"]


# --- outcomes ------------------------------------------------------------------------------------


async def test_succeeded_stores_result_and_finished_at(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """SUCCEEDED: status succeeded, the result, finished_at, new version; worker kept."""
    job = await start(worker="w1")
    before = now_us()
    done = await finish(job, OutcomeKind.SUCCEEDED, result={"answer": 42, "list": [1, "x"]})
    after = now_us()
    assert done is not None
    assert done.status is Status.SUCCEEDED
    assert done.result == {"answer": 42, "list": [1, "x"]}
    assert_between(done.finished_at, before, after)
    assert done.version > job.version
    assert (done.worker, done.attempt, done.error) == ("w1", 1, None)


#: Results of every JSON type, including strings that read as other JSON documents.
RESULTS: list[object] = [None, True, False, 0, -7, 2.5, "", "done", "5", "null", '{"a": 1}']
RESULTS += ["ジョブ", [], [1, "x"], {}, {"nested": {"a": [None, 1.5, "s"]}}]


async def test_every_json_result_reads_back_as_stored(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """A result of any JSON type reads back equal and of the same type, by get and by list:
    a string stays a string, whatever it contains."""
    for result in RESULTS:
        job = await start(worker="w1")
        done = await finish(job, OutcomeKind.SUCCEEDED, result=result)
        assert done is not None
        assert (done.result, type(done.result)) == (result, type(result)), "get"
        page = await store.list(JobFilter(queues=(job.queue,)), 10, None)
        [listed] = page.items
        assert (listed.result, type(listed.result)) == (result, type(result)), "list"


async def test_failed_with_attempts_left_is_requeued_at_retry_at(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """FAILED with retry_at and attempts left: queued at retry_at, error recorded in history."""
    job = await start(worker="w1", max_attempts=3)
    retry_at = now_us() + 3600 * MICROS
    before = now_us()
    again = await finish(job, OutcomeKind.FAILED, error=BOOM, retry_at=retry_at)
    after = now_us()
    assert again is not None
    assert again.status is Status.QUEUED
    assert again.run_at == retry_at
    assert again.attempt == 1
    assert again.error == BOOM
    assert len(again.attempt_errors) == 1
    entry = again.attempt_errors[0]
    assert (entry.attempt, entry.type, entry.message) == (1, "ValueError", "boom")
    assert_between(entry.at, before, after)
    assert again.version > job.version
    assert await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE) == []


async def test_failed_retry_runs_again_with_the_next_attempt(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """A failure retried now is claimed again as attempt 2, the history growing per failure."""
    job = await start(worker="w1", max_attempts=2)
    await finish(job, OutcomeKind.FAILED, error=BOOM, retry_at=now_us())
    [second] = await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE)
    assert (second.attempt, second.worker) == (2, "w2")
    other = JobError("KeyError", "k")
    failed = await finish(second, OutcomeKind.FAILED, error=other, retry_at=now_us())
    assert failed is not None
    assert failed.status is Status.FAILED
    assert failed.error == other
    assert [(e.attempt, e.type) for e in failed.attempt_errors] == [
        (1, "ValueError"),
        (2, "KeyError"),
    ]


async def test_failed_on_the_last_attempt_fails(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """FAILED when attempt == max_attempts ends failed, even with a retry_at."""
    job = await start(worker="w1", max_attempts=1)
    before = now_us()
    failed = await finish(job, OutcomeKind.FAILED, error=BOOM, retry_at=now_us())
    after = now_us()
    assert failed is not None
    assert failed.status is Status.FAILED
    assert failed.error == BOOM
    assert_between(failed.finished_at, before, after)
    assert [a.attempt for a in failed.attempt_errors] == [1]


async def test_failed_without_retry_at_fails(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """FAILED without a retry_at ends failed although attempts remain."""
    job = await start(worker="w1", max_attempts=3)
    failed = await finish(job, OutcomeKind.FAILED, error=BOOM)
    assert failed is not None
    assert (failed.status, failed.error) == (Status.FAILED, BOOM)


@pytest.mark.parametrize("kind", [OutcomeKind.SUCCEEDED, OutcomeKind.FAILED])
async def test_a_job_asked_to_stop_ends_cancelled(
    store: Store, start: JobFactory, finish: Finisher, kind: OutcomeKind
) -> None:
    """SUCCEEDED or FAILED (even retryable) for a job with cancel_requested ends cancelled."""
    job = await start(worker="w1", max_attempts=3)
    await store.request_cancel(job.id)
    ended = await finish(job, kind, result="r", error=BOOM, retry_at=now_us())
    assert ended is not None
    assert ended.status is Status.CANCELLED
    assert ended.finished_at is not None
    assert await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE) == []


async def test_cancelled_outcome_ends_cancelled(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """CANCELLED: status cancelled with finished_at."""
    job = await start(worker="w1")
    await store.request_cancel(job.id)
    before = now_us()
    ended = await finish(job, OutcomeKind.CANCELLED)
    after = now_us()
    assert ended is not None
    assert ended.status is Status.CANCELLED
    assert_between(ended.finished_at, before, after)


async def test_handed_back_requeues_and_gives_the_attempt_back(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """HANDED_BACK: queued, runnable now, attempt decremented so the next claim is attempt 1."""
    job = await start(worker="w1", max_attempts=1)
    back = await finish(job, OutcomeKind.HANDED_BACK)
    assert back is not None
    assert (back.status, back.attempt, back.finished_at) == (Status.QUEUED, 0, None)
    assert back.version > job.version
    [again] = await store.claim("w2", [job.queue], ["steps"], 1, LONG_LEASE)
    assert (again.id, again.attempt, again.worker) == (job.id, 1, "w2")


@pytest.mark.parametrize("kind", list(OutcomeKind))
async def test_outcome_of_a_worker_not_owning_the_job_is_ignored(
    store: Store, start: JobFactory, add: JobFactory, finish: Finisher, kind: OutcomeKind
) -> None:
    """An outcome from another worker, or for a queued job, changes nothing."""
    job = await start(worker="w1")
    assert await finish(job, kind, worker="w2", result=1, error=BOOM, retry_at=now_us()) == job
    queued = await add()
    assert await finish(queued, kind, worker="w1", result=1, error=BOOM) == queued


async def test_second_outcome_changes_nothing(
    store: Store, start: JobFactory, finish: Finisher
) -> None:
    """Once a run has ended, a repeated outcome of the same worker changes nothing."""
    job = await start(worker="w1")
    done = await finish(job, OutcomeKind.SUCCEEDED, result=1)
    assert done is not None
    for kind in OutcomeKind:
        assert await finish(job, kind, result=2, error=BOOM) == done
