"""SQLite only: how the adapter's one finish statement per batch treats what it must split.

The SQLite adapter writes a batch's outcomes in as few statements as it can: the outcomes of
one job repeated in a batch go to later rounds (the first outcome that applies wins, as when
they are written one by one), and a large batch is split into chunks. The other adapters
write batches their own way; the behaviour for one outcome per job is the conformance suite's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jobdeck.model import Job, JobError, JobSpec, Outcome, OutcomeKind, Status, now_us
from jobdeck.settings import Settings
from jobdeck.store import sqlite as sqlite_store
from jobdeck.store.base import WorkerBatch
from jobdeck.store.sqlite import SQLiteStore

BOOM = JobError("ValueError", "boom")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    path = tmp_path / "jobs.db"
    opened = SQLiteStore(str(path), Settings(database_url=f"sqlite:///{path}"))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def running(store: SQLiteStore, count: int, queue: str = "q") -> list[Job]:
    """``count`` new jobs, claimed by worker w1."""
    specs = [
        JobSpec(id=f"{queue}-{i:05d}", kind="steps", params={}, queue=queue) for i in range(count)
    ]
    await store.enqueue(specs)
    jobs = await store.claim("w1", [queue], ["steps"], count, 30.0)
    assert len(jobs) == count
    return jobs


def outcome(job: Job, kind: OutcomeKind, **values: object) -> Outcome:
    values.setdefault("attempt", job.attempt)
    return Outcome(job.id, "w1", kind, finished_at=now_us(), **values)  # type: ignore[arg-type]


async def get(store: SQLiteStore, job_id: str) -> Job:
    job = await store.get(job_id)
    assert job is not None
    return job


async def test_the_first_outcome_that_applies_wins_within_a_batch(store: SQLiteStore) -> None:
    """A job's repeated outcomes in one batch: a stale one is skipped, the first that applies
    ends the run, the later ones change nothing; a hand-back and an end, in either order."""
    failed, handed, succeeded, alone = await running(store, 4)
    batch = WorkerBatch(
        "w1",
        outcomes=[
            outcome(failed, OutcomeKind.SUCCEEDED, result=1, attempt=failed.attempt + 1),
            outcome(handed, OutcomeKind.HANDED_BACK),
            outcome(succeeded, OutcomeKind.SUCCEEDED, result="first"),
            outcome(alone, OutcomeKind.SUCCEEDED, result="alone"),
            outcome(failed, OutcomeKind.FAILED, error=BOOM),
            outcome(handed, OutcomeKind.SUCCEEDED, result=2),
            outcome(succeeded, OutcomeKind.HANDED_BACK),
            outcome(failed, OutcomeKind.SUCCEEDED, result=3),
        ],
    )
    await store.record(batch, 100)

    job = await get(store, failed.id)
    assert (job.status, job.error, job.result) == (Status.FAILED, BOOM, None)
    assert [e.attempt for e in job.attempt_errors] == [1]
    assert job.version == failed.version + 1
    job = await get(store, handed.id)
    assert (job.status, job.attempt, job.result) == (Status.QUEUED, 0, None)
    job = await get(store, succeeded.id)
    assert (job.status, job.result, job.attempt) == (Status.SUCCEEDED, "first", 1)
    assert (await get(store, alone.id)).result == "alone"


async def test_a_batch_larger_than_one_statement_is_written_whole(store: SQLiteStore) -> None:
    """More outcomes than one finish statement takes: every one lands, in its chunk."""
    jobs = await running(store, 2 * sqlite_store.FINISH_CHUNK + 3)
    outcomes = [
        outcome(job, OutcomeKind.SUCCEEDED, result=i)
        if i % 2
        else outcome(job, OutcomeKind.FAILED, error=BOOM, retry_at=0)
        for i, job in enumerate(jobs)
    ]
    await store.record(WorkerBatch("w1", outcomes=outcomes), 100)
    for i, job in enumerate(jobs):
        after = await get(store, job.id)
        if i % 2:
            assert (after.status, after.result) == (Status.SUCCEEDED, i)
        else:
            assert (after.status, after.run_at, after.error) == (Status.QUEUED, 0, BOOM)
    again = await store.claim("w2", ["q"], ["steps"], len(jobs), 30.0)
    assert sorted(j.id for j in again) == [job.id for i, job in enumerate(jobs) if not i % 2]
    assert {j.attempt for j in again} == {2}
