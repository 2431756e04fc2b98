"""Conformance: enqueue (idempotency, batches, replacement), get, versions and list."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from jobdeck.errors import JobActive, JobIdTaken
from jobdeck.model import (
    MICROS,
    Job,
    JobSpec,
    OutcomeKind,
    Progress,
    Status,
    new_job_id,
    now_us,
)
from jobdeck.store.base import JobFilter, Store
from store_checks import assert_between

SpecFactory = Callable[..., JobSpec]
JobFactory = Callable[..., Awaitable[Job]]


async def list_all(store: Store, flt: JobFilter, limit: int = 1000) -> list[Job]:
    """Every job the filter matches, page after page (at most 100 pages)."""
    jobs: list[Job] = []
    cursor: str | None = None
    for _ in range(100):
        page = await store.list(flt, limit, cursor)
        assert len(page.items) <= limit
        jobs.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return jobs
    pytest.fail("listing did not end within 100 pages")


# --- enqueue ------------------------------------------------------------------------------


async def test_enqueue_inserts_a_queued_job(store: Store, make_spec: SpecFactory) -> None:
    """A new spec is stored as a queued job: version 1, attempt 0, stamped times, spec kept."""
    spec = make_spec(
        params={"n_steps": 3, "nested": {"list": [1, 2.5, None, "日本"], "flag": True}},
        queue="q1",
        priority=7,
        max_attempts=5,
        timeout=2.5,
        labels={"team": "a", "env": "prod"},
    )
    before = now_us()
    [entry] = await store.enqueue([spec])
    after = now_us()

    job = entry.job
    assert entry.created is True
    assert (job.id, job.kind, job.params, job.queue) == (spec.id, spec.kind, spec.params, "q1")
    assert (job.priority, job.max_attempts, job.timeout) == (7, 5, 2.5)
    assert job.labels == {"team": "a", "env": "prod"}
    assert job.status is Status.QUEUED
    assert job.version == 1
    assert job.attempt == 0
    assert job.cancel_requested is False
    assert job.progress == Progress()
    assert (job.result, job.error, job.attempt_errors) == (None, None, ())
    assert (job.started_at, job.finished_at, job.worker) == (None, None, None)
    assert_between(job.created_at, before, after)
    assert_between(job.run_at, before, after)
    assert_between(job.updated_at, before, after)
    assert await store.get(spec.id) == job


async def test_enqueue_keeps_a_given_run_at(store: Store, make_spec: SpecFactory) -> None:
    """A spec's run_at (e.g. from ``delay``) is stored as given."""
    run_at = now_us() + 3600 * MICROS
    [entry] = await store.enqueue([make_spec(run_at=run_at)])
    assert entry.job.run_at == run_at
    assert entry.job.created_at < run_at


async def test_enqueue_batch_inserts_every_entry_in_order(
    store: Store, make_spec: SpecFactory
) -> None:
    """A batch yields one created entry per spec, in the order given, all stored."""
    specs = [make_spec(priority=i) for i in range(5)]
    entries = await store.enqueue(specs)
    assert [(e.job.id, e.created) for e in entries] == [(s.id, True) for s in specs]
    for spec in specs:
        stored = await store.get(spec.id)
        assert stored is not None
        assert stored.priority == spec.priority


async def test_enqueue_same_spec_again_is_idempotent(store: Store, make_spec: SpecFactory) -> None:
    """The same id with the same spec (run_at aside) yields the existing job, created=False."""
    spec = make_spec(labels={"a": "1"})
    [first] = await store.enqueue([spec])
    again = replace(spec, run_at=now_us() + 3600 * MICROS)
    [second] = await store.enqueue([again])
    assert second.created is False
    assert second.job == first.job
    assert await store.get(spec.id) == first.job


async def test_enqueue_same_spec_yields_the_current_state(
    store: Store, make_spec: SpecFactory
) -> None:
    """Re-enqueueing a job that has moved on returns it as it is now, unchanged."""
    spec = make_spec(queue="q-current")
    await store.enqueue([spec])
    [claimed] = await store.claim("w1", ["q-current"], ["steps"], 1, 30.0)
    [entry] = await store.enqueue([spec])
    assert entry.created is False
    assert entry.job.status is Status.RUNNING
    assert entry.job.version == claimed.version


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "other"},
        {"params": {"n_steps": 2}},
        {"queue": "elsewhere"},
        {"priority": 1},
        {"max_attempts": 9},
        {"timeout": 1.0},
        {"labels": {"x": "y"}},
    ],
    ids=lambda change: next(iter(change)),
)
async def test_enqueue_same_id_with_another_spec_raises_id_taken(
    store: Store, make_spec: SpecFactory, change: dict[str, Any]
) -> None:
    """The same id with any compared field different raises JobIdTaken and changes nothing."""
    spec = make_spec()
    [original] = await store.enqueue([spec])
    with pytest.raises(JobIdTaken) as caught:
        await store.enqueue([replace(spec, **change)])
    assert caught.value.job_id == spec.id
    assert caught.value.index == 0
    assert await store.get(spec.id) == original.job


async def test_enqueue_batch_is_all_or_none(store: Store, make_spec: SpecFactory) -> None:
    """A conflict in entry 3 raises JobIdTaken naming index 3 and stores none of the batch."""
    taken = make_spec()
    [existing] = await store.enqueue([taken])
    fresh = [make_spec() for _ in range(3)]
    batch = [*fresh, replace(taken, priority=99), make_spec()]
    with pytest.raises(JobIdTaken) as caught:
        await store.enqueue(batch)
    assert caught.value.index == 3
    assert caught.value.job_id == taken.id
    for spec in [*fresh, batch[4]]:
        assert await store.get(spec.id) is None
    assert await store.get(taken.id) == existing.job
    assert await list_all(store, JobFilter()) == [existing.job]


async def test_enqueue_batch_mixes_new_and_existing_entries(
    store: Store, make_spec: SpecFactory
) -> None:
    """A batch repeating an existing spec creates the new entries and yields the old one."""
    old = make_spec()
    await store.enqueue([old])
    new = make_spec()
    entries = await store.enqueue([new, old])
    assert [(e.job.id, e.created) for e in entries] == [(new.id, True), (old.id, False)]


async def test_enqueue_batch_jobs_are_what_is_stored(store: Store, make_spec: SpecFactory) -> None:
    """Every job a batch yields equals the stored one, whatever its spec holds."""
    specs = [
        make_spec(),
        make_spec(params={"n_steps": 2, "deep": {"x": [1, 2.5, None, "日本"]}}, timeout=3),
        make_spec(queue="q-stored", priority=-4, max_attempts=1, timeout=0.25),
        make_spec(labels={"team": "a", "env": "prod"}, run_at=now_us() + 60 * MICROS),
    ]
    entries = await store.enqueue(specs)
    for entry in entries:
        assert await store.get(entry.job.id) == entry.job
    [again] = await store.enqueue([specs[1]])
    assert again == replace(entries[1], created=False)


async def test_enqueue_batch_repeating_an_id(store: Store, make_spec: SpecFactory) -> None:
    """An id repeated within a batch counts as if the specs came one after the other: the
    first creates the job, a later same spec yields it (created=False), a later other spec
    raises JobIdTaken naming its index and stores none of the batch."""
    old = make_spec()
    await store.enqueue([old])
    first, other = make_spec(priority=1), make_spec()
    later_same = replace(first, run_at=now_us() + 3600 * MICROS)
    entries = await store.enqueue([first, old, other, later_same, old])
    assert [(e.job.id, e.created) for e in entries] == [
        (first.id, True),
        (old.id, False),
        (other.id, True),
        (first.id, False),
        (old.id, False),
    ]
    assert entries[3].job == entries[0].job == await store.get(first.id)
    assert entries[0].job.run_at != later_same.run_at

    fresh = make_spec()
    with pytest.raises(JobIdTaken) as caught:
        await store.enqueue([make_spec(), fresh, replace(fresh, priority=5)])
    assert (caught.value.job_id, caught.value.index) == (fresh.id, 2)
    assert await store.get(fresh.id) is None


async def test_replace_terminal_refuses_an_id_repeated_in_the_batch(
    store: Store, make_spec: SpecFactory
) -> None:
    """With replace_terminal, an id's second entry in one batch meets the job its first
    entry queued: JobActive naming that index, and nothing stored."""
    spec = make_spec()
    with pytest.raises(JobActive) as caught:
        await store.enqueue([spec, spec], replace_terminal=True)
    assert (caught.value.job_id, caught.value.index) == (spec.id, 1)
    assert await store.get(spec.id) is None


async def test_replace_terminal_replaces_a_terminal_job(
    store: Store, make_spec: SpecFactory, finish: Callable[..., Awaitable[Job | None]]
) -> None:
    """With replace_terminal a terminal job of that id gives way to a fresh queued job."""
    spec = make_spec(queue="q-replace")
    await store.enqueue([spec])
    await store.request_cancel(spec.id)

    [plain] = await store.enqueue([spec])
    assert plain.created is False
    assert plain.job.status is Status.CANCELLED

    [same] = await store.enqueue([spec], replace_terminal=True)
    assert same.created is True
    assert same.job.status is Status.QUEUED
    assert (same.job.attempt, same.job.cancel_requested, same.job.finished_at) == (0, False, None)
    assert await store.get(spec.id) == same.job

    [claimed] = await store.claim("w1", ["q-replace"], ["steps"], 1, 30.0)
    done = await finish(claimed, OutcomeKind.SUCCEEDED, result={"ok": True})
    assert done is not None and done.status is Status.SUCCEEDED
    other = replace(spec, params={"n_steps": 42}, priority=3)
    [entry] = await store.enqueue([other], replace_terminal=True)
    assert entry.created is True
    assert (entry.job.params, entry.job.priority) == ({"n_steps": 42}, 3)
    assert (entry.job.status, entry.job.attempt, entry.job.worker) == (Status.QUEUED, 0, None)
    assert (entry.job.result, entry.job.started_at, entry.job.finished_at) == (None, None, None)
    assert await store.get(spec.id) == entry.job


async def test_replace_terminal_refuses_an_active_job(store: Store, make_spec: SpecFactory) -> None:
    """With replace_terminal a queued or running job of that id raises JobActive, unchanged."""
    spec = make_spec(queue="q-active")
    [queued] = await store.enqueue([spec])
    with pytest.raises(JobActive):
        await store.enqueue([spec], replace_terminal=True)
    with pytest.raises(JobActive):
        await store.enqueue([replace(spec, priority=5)], replace_terminal=True)
    assert await store.get(spec.id) == queued.job

    [running] = await store.claim("w1", ["q-active"], ["steps"], 1, 30.0)
    with pytest.raises(JobActive):
        await store.enqueue([spec], replace_terminal=True)
    assert await store.get(spec.id) == running


# --- get and versions ---------------------------------------------------------------------


async def test_get_missing_job_is_none(store: Store) -> None:
    """get of an unknown id answers None."""
    assert await store.get(new_job_id()) is None


async def test_versions_of_existing_jobs(store: Store, add: JobFactory) -> None:
    """versions maps each existing id to its current version and leaves out unknown ids."""
    a = await add(queue="q-versions")
    b = await add(queue="q-other")
    [claimed] = await store.claim("w1", ["q-versions"], ["steps"], 1, 30.0)
    assert claimed.version > a.version
    assert await store.versions([a.id, b.id, "missing"]) == {a.id: claimed.version, b.id: 1}
    assert await store.versions([]) == {}


# --- list -----------------------------------------------------------------------------------


async def test_list_is_newest_first(store: Store, add: JobFactory) -> None:
    """Jobs enqueued one after another are listed in reverse order."""
    ids = [(await add()).id for _ in range(5)]
    page = await store.list(JobFilter(), 100, None)
    assert [j.id for j in page.items] == ids[::-1]
    assert page.next_cursor is None


async def test_list_pages_visit_every_job_once(store: Store, add: JobFactory) -> None:
    """Pages of 3 over 7 jobs (and other sizes) visit each job exactly once, newest first."""
    ids = [(await add()).id for _ in range(7)]
    for limit in (1, 3, 7, 10):
        pages: list[list[str]] = []
        cursor: str | None = None
        for _ in range(20):
            page = await store.list(JobFilter(), limit, cursor)
            assert len(page.items) <= limit
            pages.append([j.id for j in page.items])
            cursor = page.next_cursor
            if cursor is None:
                break
        seen = [job_id for page_ids in pages for job_id in page_ids]
        assert seen == ids[::-1], f"limit {limit}"
        assert all(pages[:-1]), f"limit {limit}: an empty page before the last"
        if limit == 3:
            assert [len(p) for p in pages] == [3, 3, 1]
        if limit == 10:
            assert len(pages) == 1


async def test_list_cursor_is_stable_under_inserts(store: Store, add: JobFactory) -> None:
    """Jobs enqueued between pages do not make the walk repeat or skip older jobs."""
    ids = [(await add()).id for _ in range(4)]
    first = await store.list(JobFilter(), 2, None)
    await add()
    second = await store.list(JobFilter(), 2, first.next_cursor)
    assert [j.id for j in first.items + second.items] == ids[::-1]


async def test_list_filters(store: Store, add: JobFactory) -> None:
    """status/kind/queue/labels filter; several values of one field OR, fields AND."""
    a = await add(kind="steps", queue="q1", labels={"team": "a"})
    b = await add(kind="steps", queue="q2", labels={"team": "b"})
    c = await add(kind="other", queue="q1", labels={"team": "a", "env": "prod"})
    d = await add(kind="other", queue="q2", labels={})
    e = await add(kind="steps", queue="q3", labels={"team": "c"})
    [running] = await store.claim("w1", ["q2"], ["steps"], 1, 30.0)
    assert running.id == b.id
    await store.request_cancel(d.id)

    async def ids(**fields: Any) -> set[str]:
        return {job.id for job in await list_all(store, JobFilter(**fields))}

    everything = {a.id, b.id, c.id, d.id, e.id}
    assert await ids() == everything
    assert await ids(statuses=(Status.QUEUED,)) == {a.id, c.id, e.id}
    assert await ids(statuses=(Status.RUNNING, Status.CANCELLED)) == {b.id, d.id}
    assert await ids(statuses=(Status.SUCCEEDED,)) == set()
    assert await ids(kinds=("other",)) == {c.id, d.id}
    assert await ids(kinds=("steps", "other")) == everything
    assert await ids(kinds=("nope",)) == set()
    assert await ids(queues=("q1",)) == {a.id, c.id}
    assert await ids(queues=("q1", "q3")) == {a.id, c.id, e.id}
    assert await ids(labels=(("team", "a"),)) == {a.id, c.id}
    assert await ids(labels=(("env", "prod"),)) == {c.id}
    assert await ids(labels=(("team", "a"), ("team", "c"))) == {a.id, c.id, e.id}
    assert await ids(labels=(("team", "z"),)) == set()
    assert await ids(statuses=(Status.QUEUED,), kinds=("steps",)) == {a.id, e.id}
    assert await ids(queues=("q2",), statuses=(Status.CANCELLED,)) == {d.id}
    assert await ids(kinds=("steps",), labels=(("team", "a"),)) == {a.id}
    assert await ids(queues=("q1", "q2"), kinds=("other",), statuses=(Status.QUEUED,)) == {c.id}


async def test_list_filtered_pages(store: Store, add: JobFactory) -> None:
    """Pagination under a filter visits exactly the matching jobs, newest first."""
    matching: list[str] = []
    for i in range(9):
        job = await add(queue="even" if i % 2 == 0 else "odd")
        if i % 2 == 0:
            matching.append(job.id)
    seen = await list_all(store, JobFilter(queues=("even",)), limit=2)
    assert [j.id for j in seen] == matching[::-1]
