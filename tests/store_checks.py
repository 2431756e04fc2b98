"""Checks shared by the store conformance tests."""

from __future__ import annotations

from jobdeck.model import Job
from jobdeck.store.base import Store

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
