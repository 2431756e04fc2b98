"""PostgreSQL only: group commit of one-job enqueues.

One-job enqueues of a process that come while one of them is written share the next
transaction. Each caller is answered as if its enqueue had been written alone, one after the
other in the order they came: created, the existing job, or its own conflict; a database
error goes only to the spec that causes it. The new ids of a group are inserted first, in
one statement committed on its own; the others (ids already there) are resolved in a second
transaction. Rows inserted by one transaction share their ``xmin``, which tells how many
transactions wrote them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest

from backends import Database
from jobdeck.errors import JobActive, JobIdTaken
from jobdeck.model import JobSpec, Outcome, OutcomeKind, Status, now_us
from jobdeck.store.base import Enqueued, Store, WorkerBatch
from jobdeck.store.postgres import PostgresStore

pytestmark = pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True)


def transactions(database: Database, store: PostgresStore, ids: Sequence[str]) -> int:
    """How many transactions inserted the jobs of ``ids`` (as they stand now)."""
    with psycopg.connect(database.database_url) as conn:
        row = conn.execute(
            f'SELECT count(DISTINCT xmin::text) FROM "{store.schema}".jobs WHERE id = ANY(%s)',
            (list(ids),),
        ).fetchone()
    assert row is not None
    return int(row[0])


async def one_by_one(
    store: Store, calls: Sequence[tuple[JobSpec, bool]]
) -> list[Enqueued | BaseException]:
    """The one-job enqueues of ``calls`` (spec, replace_terminal), all at once."""
    answers = await asyncio.gather(
        *(store.enqueue([spec], replace_terminal=replace) for spec, replace in calls),
        return_exceptions=True,
    )
    return [a if isinstance(a, BaseException) else a[0] for a in answers]


async def test_single_enqueues_at_once_share_a_transaction(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """Fifty one-job enqueues at once: every one is created and stored as answered, in far
    fewer transactions than fifty (one each without group commit)."""
    assert isinstance(store, PostgresStore)
    specs = [make_spec(priority=i) for i in range(50)]
    answers = await one_by_one(store, [(spec, False) for spec in specs])
    for spec, answer in zip(specs, answers, strict=True):
        assert isinstance(answer, Enqueued) and answer.created
        assert answer.job.id == spec.id and answer.job.priority == spec.priority
        assert answer.job.status is Status.QUEUED
        assert await store.get(spec.id) == answer.job
    assert transactions(database, store, [s.id for s in specs]) <= 3


async def test_each_enqueue_of_a_group_is_answered_as_if_alone(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """Repeats, conflicts and replacements within one group get what they would get one after
    the other, and the others of the group are written all the same."""
    assert isinstance(store, PostgresStore)
    queued = make_spec(params={"n_steps": 1})
    ended = make_spec(params={"n_steps": 1}, queue="q-ended")
    await store.enqueue([queued, ended])
    (claimed,) = await store.claim("w1", [ended.queue], [ended.kind], 1, 30.0)
    done = Outcome(claimed.id, "w1", OutcomeKind.SUCCEEDED, None, None, None, now_us())
    await store.record(WorkerBatch("w1", outcomes=[done]), 100)

    fresh = make_spec()
    twice = make_spec(params={"n_steps": 2})
    other = make_spec(params={"n_steps": 3})
    calls: list[tuple[JobSpec, bool]] = [
        (fresh, False),
        (make_spec(id=queued.id, params={"n_steps": 1}), False),  # the same spec again
        (make_spec(id=queued.id, params={"n_steps": 9}), False),  # another spec
        (twice, False),
        (make_spec(id=twice.id, params={"n_steps": 2}), False),  # repeat within the group
        (make_spec(id=twice.id, params={"n_steps": 5}), False),  # conflict within the group
        (make_spec(id=ended.id, params={"n_steps": 4}, queue="q-ended"), True),  # replaces it
        (make_spec(id=ended.id, params={"n_steps": 4}, queue="q-ended"), True),  # queued now
        (make_spec(id=queued.id), True),  # queued: not replaced
        (other, False),
    ]
    answers = await one_by_one(store, calls)

    def created(answer: Any, spec: JobSpec) -> None:
        assert isinstance(answer, Enqueued) and answer.created, answer
        assert answer.job.id == spec.id and answer.job.params == spec.params

    created(answers[0], fresh)
    assert isinstance(answers[1], Enqueued) and not answers[1].created
    assert answers[1].job == await store.get(queued.id)
    assert isinstance(answers[2], JobIdTaken) and answers[2].job_id == queued.id
    created(answers[3], twice)
    assert isinstance(answers[4], Enqueued) and not answers[4].created
    assert answers[4].job == answers[3].job
    assert isinstance(answers[5], JobIdTaken)
    created(answers[6], calls[6][0])
    assert isinstance(answers[7], JobActive) and "queued" in str(answers[7])
    assert isinstance(answers[8], JobActive)
    created(answers[9], other)
    for index in (0, 3, 6, 9):
        answer = answers[index]
        assert isinstance(answer, Enqueued)
        assert await store.get(answer.job.id) == answer.job
    # The new ids in one transaction; the replacement of an ended job in the next one.
    assert transactions(database, store, [fresh.id, twice.id, other.id]) == 1
    assert transactions(database, store, [fresh.id, ended.id]) == 2


async def test_a_database_error_goes_to_its_own_spec_only(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """A spec the database refuses (a priority out of the integer range) fails alone: the
    others of its group are stored, and a conflict among them is still a conflict."""
    assert isinstance(store, PostgresStore)
    existing = make_spec()
    await store.enqueue([existing])
    good = [make_spec() for _ in range(5)]
    bad = make_spec(priority=2**40)
    conflicting = make_spec(id=existing.id, params={"n_steps": 7})
    calls = [(good[0], False), (good[1], False), (bad, False), (conflicting, False)]
    calls += [(spec, False) for spec in good[2:]]
    answers = await one_by_one(store, calls)
    assert isinstance(answers[2], psycopg.errors.NumericValueOutOfRange)
    assert isinstance(answers[3], JobIdTaken)
    for spec, answer in zip(good, answers[:2] + answers[4:], strict=True):
        assert isinstance(answer, Enqueued) and answer.created
        assert await store.get(spec.id) == answer.job
    assert await store.get(bad.id) is None
    # And the next group, without it, shares a transaction again.
    later = [make_spec() for _ in range(10)]
    await one_by_one(store, [(spec, False) for spec in later])
    assert transactions(database, store, [s.id for s in later]) == 1


async def test_a_cancelled_caller_leaves_the_others_answered(
    store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """A caller that gives up while its group is written does not disturb the others."""
    specs = [make_spec() for _ in range(10)]
    tasks = [asyncio.create_task(store.enqueue([spec])) for spec in specs]
    await asyncio.sleep(0)
    tasks[3].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for index, (spec, result) in enumerate(zip(specs, results, strict=True)):
        if index == 3:
            continue
        assert not isinstance(result, BaseException), result
        assert result[0].created and await store.get(spec.id) == result[0].job
