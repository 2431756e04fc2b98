"""PostgreSQL only: LISTEN/NOTIFY as an optimisation, never the source of truth.

One notification per transaction (a batch of 1,000 jobs is one; enqueues committed at the
same moment share one, sent before they return), wake-ups across store objects at once,
recovery when the listening connection is killed, and the poll-only mode
(``JOBDECK_NOTIFY=off``) for PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from backends import Database
from jobdeck.model import JobError, JobSpec, Outcome, OutcomeKind, new_job_id, now_us
from jobdeck.settings import Settings
from jobdeck.store import open_store
from jobdeck.store.base import Store, WorkerBatch
from jobdeck.store.postgres import PostgresStore

pytestmark = pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True)

SETTINGS = Settings(lease_seconds=0.5, poll_seconds=0.01, cancel_check_seconds=0.05)

MARKER = "end-of-test-marker"


async def notifications_until_marker(conn: psycopg.AsyncConnection[Any], channel: str) -> list:
    """The payloads heard on ``channel`` before our own marker notification arrives.

    Notifications are delivered in commit order, so everything committed before the marker
    arrives before it: no waiting on a clock.
    """
    await conn.execute("SELECT pg_notify(%s, %s)", (channel, MARKER))
    heard = []
    async with asyncio.timeout(10):
        async for notify in conn.notifies():
            if notify.payload == MARKER:
                return heard
            heard.append(notify.payload)
    return heard


async def test_a_batch_of_a_thousand_jobs_is_one_notification(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """Enqueueing 1,000 jobs in one call commits one transaction with one NOTIFY."""
    assert isinstance(store, PostgresStore)
    async with await psycopg.AsyncConnection.connect(
        database.database_url, autocommit=True
    ) as listener:
        await listener.execute(f'LISTEN "{store.channel}"')
        await store.enqueue([make_spec() for _ in range(1000)])
        heard = await notifications_until_marker(listener, store.channel)
    assert len(heard) == 1
    flags, _, ids = heard[0].partition("|")
    assert "w" in flags
    assert ids == "*"  # 1,000 ids do not fit one payload: listeners re-read what they watch


async def test_a_one_job_enqueue_notifies_from_its_insert(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """A one-job enqueue alone is one statement that inserts and notifies (work added, its
    id named); enqueueing the same spec again writes nothing and notifies nothing."""
    assert isinstance(store, PostgresStore)
    spec = make_spec()
    async with await psycopg.AsyncConnection.connect(
        database.database_url, autocommit=True
    ) as listener:
        await listener.execute(f'LISTEN "{store.channel}"')
        (first,) = await store.enqueue([spec])
        (again,) = await store.enqueue([spec])
        heard = await notifications_until_marker(listener, store.channel)
    assert first.created and not again.created and again.job == first.job
    assert heard == [f"w|{spec.id}"]


async def test_every_write_notifies_once_naming_its_jobs(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """A claim of three jobs is one notification naming the three; a cancel request says so."""
    assert isinstance(store, PostgresStore)
    specs = [make_spec() for _ in range(3)]
    await store.enqueue(specs)
    async with await psycopg.AsyncConnection.connect(
        database.database_url, autocommit=True
    ) as listener:
        await listener.execute(f'LISTEN "{store.channel}"')
        claimed = await store.claim("w1", ["default"], ["steps"], 3, 30)
        await store.request_cancel(claimed[0].id)
        heard = await notifications_until_marker(listener, store.channel)
    assert len(heard) == 2
    _, _, claim_ids = heard[0].partition("|")
    assert sorted(claim_ids.split(",")) == sorted(s.id for s in specs)
    cancel_flags, _, cancel_ids = heard[1].partition("|")
    assert "c" in cancel_flags and cancel_ids == claimed[0].id


async def test_a_claim_carrying_finished_runs_is_one_notification_naming_all(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """A claim that writes a batch of ended runs notifies once: the ended jobs and the
    claimed ones named, flagged as work when a run was queued again."""
    assert isinstance(store, PostgresStore)
    await store.enqueue([make_spec() for _ in range(2)])
    ended, retried = await store.claim("w1", ["default"], ["steps"], 2, 30)
    waiting = [make_spec() for _ in range(2)]
    await store.enqueue(waiting)
    batch = WorkerBatch(
        "w1",
        outcomes=[
            Outcome(ended.id, "w1", OutcomeKind.SUCCEEDED, attempt=1),
            Outcome(
                retried.id,
                "w1",
                OutcomeKind.FAILED,
                error=JobError("ValueError", "boom"),
                retry_at=now_us(),
                attempt=1,
            ),
        ],
    )
    async with await psycopg.AsyncConnection.connect(
        database.database_url, autocommit=True
    ) as listener:
        await listener.execute(f'LISTEN "{store.channel}"')
        claimed = await store.claim("w1", ["default"], ["steps"], 5, 30, done=batch)
        heard = await notifications_until_marker(listener, store.channel)

    assert {j.id for j in claimed} == {s.id for s in waiting}
    assert len(heard) == 1
    flags, _, ids = heard[0].partition("|")
    assert flags == "w"
    assert sorted(ids.split(",")) == sorted([ended.id, retried.id, *(s.id for s in waiting)])


async def test_enqueues_at_once_share_notifications_sent_before_they_return(
    database: Database, store: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """Fifty single enqueues at once: every job is named in a notification sent before its
    enqueue returned, and they share notifications (fewer than fifty)."""
    assert isinstance(store, PostgresStore)
    specs = [make_spec() for _ in range(50)]
    async with await psycopg.AsyncConnection.connect(
        database.database_url, autocommit=True
    ) as listener:
        await listener.execute(f'LISTEN "{store.channel}"')
        await asyncio.gather(*(store.enqueue([spec]) for spec in specs))
        heard = await notifications_until_marker(listener, store.channel)
    named: set[str] = set()
    for payload in heard:
        flags, _, ids = payload.partition("|")
        assert "w" in flags
        named.update(ids.split(","))
    assert named == {spec.id for spec in specs}
    assert 1 <= len(heard) < len(specs)


async def test_a_killed_listen_connection_reconnects_and_hears_again(
    database: Database, store: Store, peer: Store, make_spec: Callable[..., JobSpec]
) -> None:
    """After pg_terminate_backend on its LISTEN connection the store listens again, and a
    change by another store object wakes a waiter on it."""
    assert isinstance(store, PostgresStore)
    spec = make_spec()
    await store.enqueue([spec])
    with psycopg.connect(database.database_url, autocommit=True) as admin:
        query = (
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE %s AND datname = current_database()"
        )
        pattern = f'LISTEN "{store.channel}"%'
        rows = admin.execute(query, (pattern,)).fetchall()
        assert rows, "the store holds a LISTEN connection"
        for (pid,) in rows:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

        async def listening_again() -> bool:
            return bool(admin.execute(query, (pattern,)).fetchall())

        deadline = asyncio.get_running_loop().time() + 10
        while not await listening_again():
            assert asyncio.get_running_loop().time() < deadline, "no LISTEN after 10 s"
            await asyncio.sleep(0.05)
    with store.hub.subscribe(spec.id) as subscription:
        await peer.request_cancel(spec.id)
        assert await subscription.wait(1.5), "a change by another store object woke no one"


async def test_poll_only_mode_still_wakes_waiters(
    database: Database, make_spec: Callable[..., JobSpec]
) -> None:
    """With notify off the store holds no LISTEN connection, yet a change made elsewhere
    reaches a waiter on it, by polling."""
    quiet = open_store(database.configure(SETTINGS.with_(notify=False)))
    other = open_store(database.configure(SETTINGS))
    assert isinstance(quiet, PostgresStore)
    await quiet.open()
    await other.open()
    try:
        assert quiet.push_notifications is False
        spec = make_spec(id=new_job_id())
        await other.enqueue([spec])
        with quiet.hub.subscribe(spec.id) as subscription:
            await other.request_cancel(spec.id)
            assert await subscription.wait(2.0)
        assert (await quiet.get(spec.id)).status == "cancelled"  # type: ignore[union-attr]
    finally:
        await quiet.close()
        await other.close()
