"""Checks shared by the store conformance tests."""

from __future__ import annotations

from collections import Counter

from jobdeck.model import Job, Status
from jobdeck.store.base import JobFilter, Store

#: Every status's name, as the keys of the counts of ``Store.stats``.
STATUSES = [s.value for s in Status]

#: Slack allowed between a store's timestamp and this process's clock readings.
SLACK_US = 1_000_000


def assert_between(value: int | None, before: int, after: int) -> None:
    """A store timestamp lies between two readings of this process's clock (with slack)."""
    assert value is not None
    assert before - SLACK_US <= value <= after + SLACK_US, (before, value, after)


async def current(store: Store, job_id: str) -> Job:
    """The job as stored now; it must exist."""
    job = await store.get(job_id)
    assert job is not None
    return job


async def counts_from_listing(store: Store) -> dict[str, dict[str, int]]:
    """Per queue and status, what a full listing shows."""
    tally: Counter[tuple[str, str]] = Counter()
    cursor: str | None = None
    while True:
        page = await store.list(JobFilter(), 1000, cursor)
        tally.update((job.queue, job.status.value) for job in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    queues = {queue for queue, _ in tally}
    return {q: {s: tally[q, s] for s in STATUSES} for q in queues}
