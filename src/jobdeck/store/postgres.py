"""The PostgreSQL adapter, on psycopg 3 (async) with a connection pool.

- Claims take several jobs per round trip with ``FOR UPDATE SKIP LOCKED``.
- Group commit: one-job enqueues that come while one is being written are written together
  next, in one transaction (one INSERT, one commit, one NOTIFY); each caller is answered
  after that commit as if its enqueue had been written alone.
- Batches travel as one JSON document (``insert_jobs``), encoded by one call.
- Every write transaction ends with at most one ``NOTIFY`` naming the jobs it changed and
  whether work was added or a cancel requested; a batch of 1,000 jobs is one notification.
  Enqueues send theirs just after the commit instead (before answering), one for all the
  enqueues committed at that moment: notifying commits queue behind each other.
- One listening connection per process turns notifications into wake-ups on the hub. A
  fallback poll (every 2 s; every ``JOBDECK_POLL_SECONDS`` with ``JOBDECK_NOTIFY=off``)
  keeps everything correct when a notification is lost: NOTIFY is never the source of truth.
- All tables live in the schema ``JOBDECK_PG_SCHEMA``; statements name it explicitly, so
  nothing depends on a session's ``search_path`` (PgBouncer in transaction mode works).
- Every connection names itself in ``pg_stat_activity.application_name``:
  ``jobdeck:pool:<pid>`` or ``jobdeck:listen:<pid>`` (unless the URL or ``PGAPPNAME`` names
  one), so that an operator can tell whose connections they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from jobdeck.aio import cancel_and_wait
from jobdeck.errors import (
    JobActive,
    JobConflict,
    JobNotFound,
    SchemaTooNew,
    StoreUnavailable,
)
from jobdeck.model import MICROS, Job, JobSpec, Outcome, OutcomeKind, Status, now_us
from jobdeck.settings import Settings
from jobdeck.store.base import (
    CancelEffect,
    ChangeHub,
    Enqueued,
    Heartbeat,
    JobFilter,
    LogLine,
    LogPage,
    Page,
    ParkedClaim,
    ProgressUpdate,
    Stats,
    WorkerBatch,
)
from jobdeck.store.migrations import load_migrations
from jobdeck.store.rows import (
    JOB_COLUMNS,
    TERMINAL_SQL,
    LogRow,
    batch_entries,
    decode_cursor,
    decode_seq_cursor,
    dumps,
    encode_cursor,
    job_from_row,
    job_from_values,
    labels_by_key,
    logs_by_job,
    new_job,
    numbered_log_rows,
    one_page,
    resolve_batch,
    resolve_group,
    seen_due,
    spec_rows,
    stats_from_counts,
)
from jobdeck.store.sql import load_queries

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row, tuple_row
    from psycopg.types.string import TextLoader
    from psycopg_pool import AsyncConnectionPool
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the PostgreSQL store needs psycopg: pip install 'jobdeck[postgres]'"
    ) from exc

log = logging.getLogger("jobdeck.store")
T = TypeVar("T")
Conn = psycopg.AsyncConnection[dict[str, Any]]

SCHEMA_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
POOL_SIZE = 10
INDENT = re.compile(r"\n[ \t]+")
SAFETY_POLL_SECONDS = 2.0
RETRY_SECONDS = 15.0
NOTIFY_MAX_BYTES = 7900
NOTIFY_SQL = "SELECT pg_notify(%s, %s)"
LISTEN_RECONNECT_SECONDS = 1.0
#: Executions of a statement on a connection before it is prepared (``JOBDECK_PG_PREPARE``).
PREPARE_AFTER = 5
#: At most this many one-job enqueues share a transaction (group commit).
MAX_GROUP = 500


class PostgresStore:
    """The :class:`~jobdeck.store.base.Store` on a PostgreSQL schema."""

    push_notifications = True

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        self.url = url
        self.settings = settings if settings is not None else Settings()
        schema = self.settings.pg_schema
        if not SCHEMA_PATTERN.fullmatch(schema):
            raise ValueError(f"invalid JOBDECK_PG_SCHEMA {schema!r}")
        self.schema = schema
        self.channel = f"jobdeck_{schema}"
        self.push_notifications = self.settings.notify
        self.hub = ChangeHub()
        quoted = f'"{schema}"'
        queries = load_queries(
            "postgres",
            s=quoted,
            columns=JOB_COLUMNS,
            jcolumns=", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(",")),
            terminal=TERMINAL_SQL,
        )
        # Without their indentation: psycopg parses a statement of up to 4,096 characters
        # once per process, a longer one at every execution.
        self._sql = {name: INDENT.sub("\n", text) for name, text in queries.items()}
        self._pool: AsyncConnectionPool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._known_versions: dict[str, int] = {}
        self._seen: dict[str, float] = {}
        # Changes waiting for their shared NOTIFY (``_write(shared_notify=True)``).
        self._notices = _Notices()
        self._notifier: asyncio.Task[None] | None = None
        #: Writes with ``shared_notify`` under way in this process.
        self._sharing_writes = 0
        # One-job enqueues waiting for the next group (``_submit``), and its writer.
        self._submits: list[_Submit] = []
        self._submitter: asyncio.Task[None] | None = None

    # --- connections -------------------------------------------------------------------

    async def _run(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        *,
        write: bool,
        pipeline: bool = False,
        autocommit: bool = False,
    ) -> T:
        """Run ``fn`` in one transaction, retrying while the server cannot be reached.

        With ``pipeline``, in psycopg's pipeline mode: BEGIN, the statements ``fn`` sends
        before it reads a result, and the final statements with COMMIT each travel in one
        round trip. With ``autocommit``, each statement of ``fn`` commits on its own (one
        round trip for a statement, none for BEGIN and COMMIT)."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.05
        while True:
            try:
                async with pool.connection() as conn:
                    if pipeline:
                        return await _pipelined(conn, fn)
                    if autocommit:
                        return await _autocommitted(conn, fn)
                    async with conn.transaction():
                        return await fn(conn)
            except (psycopg.OperationalError, psycopg.errors.SerializationFailure) as exc:
                if isinstance(exc, psycopg.errors.QueryCanceled) or time.monotonic() > deadline:
                    raise StoreUnavailable(f"postgresql: {exc}") from exc
                log.warning("postgresql %s failed, retrying: %s", "write" if write else "read", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except psycopg.errors.DeadlockDetected as exc:  # pragma: no cover - defensive
                log.warning("postgresql deadlock, retrying: %s", exc)
                await asyncio.sleep(delay)

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        return await self._run(fn, write=False)

    async def _write(
        self,
        fn: Callable[[Conn], Awaitable[T]],
        changes: Callable[[T], tuple[Iterable[str], bool, bool]],
        *,
        pipeline: bool = False,
        shared_notify: bool = False,
    ) -> T:
        """A write transaction and one NOTIFY describing ``changes(result)``: (changed job
        ids, work added, cancel requested).

        The NOTIFY ends the transaction; with ``shared_notify`` it follows the commit instead,
        still before this returns, and writes committed at the same moment share one. (A
        NOTIFY holds a database-wide lock from its commit until the commit is flushed, so
        commits that notify wait for each other: under many small concurrent writes, such as
        single submits, that queue is what limits them.) A write with ``shared_notify`` that
        is the only one under way in this process notifies in its transaction all the same:
        alone, it waits for nobody, and a worker hears of it one round trip sooner."""
        with self._sharing(shared_notify) as share:

            async def transaction(conn: Conn) -> T:
                result = await fn(conn)
                if share:
                    return result
                ids, work, cancel = changes(result)
                ids = list(ids)
                if ids or work or cancel:
                    await conn.execute(NOTIFY_SQL, (self.channel, _payload(ids, work, cancel)))
                return result

            result = await self._run(transaction, write=True, pipeline=pipeline)
            ids, work, cancel = changes(result)
            await self._announce(list(ids), work, cancel, shared=share)
            return result

    @contextlib.contextmanager
    def _sharing(self, shared_notify: bool) -> Iterator[bool]:
        """Whether a write with ``shared_notify`` shares its NOTIFY (see :meth:`_write`):
        counted among the writes under way while the block runs."""
        if not shared_notify:
            yield False
            return
        self._sharing_writes += 1
        try:
            yield self._sharing_writes > 1
        finally:
            self._sharing_writes -= 1

    async def _announce(self, ids: list[str], work: bool, cancel: bool, *, shared: bool) -> None:
        """Tell this process's hub of a committed write's changes; with ``shared``, other
        processes too (:meth:`_notify_shared`), before returning."""
        self.hub.jobs_changed(ids)
        if work:
            self.hub.work_added()
        if cancel:
            self.hub.cancel_added()
        if shared and (ids or work or cancel):
            await self._notify_shared(ids, work, cancel)

    async def _notify_shared(self, ids: list[str], work: bool, cancel: bool) -> None:
        """Send (after their commits) the changes of writes made at the same moment as one
        NOTIFY; return once it is sent (or failed: it is logged, and the fallback poll finds
        what it would have told)."""
        notices = self._notices
        notices.add(ids, work, cancel)
        sent = asyncio.get_running_loop().create_future()
        notices.waiters.append(sent)
        if self._notifier is None or self._notifier.done():
            self._notifier = asyncio.create_task(self._send_notices(), name="jobdeck-pg-notify")
        await sent

    async def _send_notices(self) -> None:
        while self._notices.waiters:
            notices, self._notices = self._notices, _Notices()
            try:
                pool = self._pool
                if pool is None:
                    raise StoreUnavailable("the store is not open")
                async with pool.connection() as conn, conn.transaction():
                    await conn.execute(NOTIFY_SQL, (self.channel, notices.payload()))
            except Exception as exc:  # the writes stand; a lost notification is only late news
                log.warning("postgresql notification failed: %s", exc)
            finally:
                for waiter in notices.waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = AsyncConnectionPool(
            self.url,
            min_size=1,
            max_size=POOL_SIZE,
            kwargs={
                "row_factory": dict_row,
                # Statements run this often are prepared on the server: the claim and the
                # writes of a busy worker are then planned once per connection.
                "prepare_threshold": PREPARE_AFTER if self.settings.pg_prepare else None,
                **_application_name(self.url, "pool"),
            },
            configure=_configure,
            open=False,
            name=f"jobdeck-{self.schema}",
        )
        try:
            await pool.open(wait=True, timeout=10)
        except Exception as exc:
            await pool.close()
            raise StoreUnavailable(f"postgresql: {exc}") from exc
        self._pool = pool
        await self.migrate()
        self._tasks = [asyncio.create_task(self._poll(), name="jobdeck-pg-poll")]
        if self.settings.notify:
            self._tasks.append(asyncio.create_task(self._listen(), name="jobdeck-pg-listen"))

    async def close(self) -> None:
        if self._submitter is not None:
            # Enqueues under way are written (or fail) before the pool closes.
            with contextlib.suppress(Exception):
                await self._submitter
            self._submitter = None
        if self._notifier is not None:
            # Writes committed already: their notification goes out before the pool closes.
            with contextlib.suppress(Exception):
                await self._notifier
            self._notifier = None
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def migrate(self) -> int:
        migrations = load_migrations("postgres")
        schema = self.schema

        async def apply(conn: Conn) -> int:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"jobdeck:{schema}",))
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET LOCAL search_path TO "{schema}"')
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version integer PRIMARY KEY, applied_at bigint NOT NULL)"
            )
            row = await (
                await conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
            ).fetchone()
            current = row["v"] if row else 0
            newest = max(migrations, default=0)
            if current > newest:
                raise SchemaTooNew(
                    f"database schema version {current} is newer than this jobdeck ({newest})"
                )
            for version in sorted(v for v in migrations if v > current):
                await conn.execute(migrations[version].encode())
                await conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                    (version, now_us()),
                )
            return newest

        return await self._run(apply, write=True)

    async def ping(self) -> None:
        async def select(conn: Conn) -> None:
            await conn.execute("SELECT 1")

        await self._read(select)

    # --- hearing other processes -------------------------------------------------------

    async def _listen(self) -> None:
        """Hold one LISTEN connection; reconnect when it drops, then assume everything
        changed (notifications sent meanwhile were lost)."""
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, **_application_name(self.url, "listen")
                )
            except psycopg.OperationalError as exc:
                log.warning("postgresql listen connection failed: %s", exc)
                await asyncio.sleep(LISTEN_RECONNECT_SECONDS)
                continue
            try:
                async with conn:
                    await conn.execute(f'LISTEN "{self.channel}"')
                    self._everything_changed()
                    async for notify in conn.notifies():
                        self._heard(notify.payload)
            except psycopg.OperationalError as exc:
                log.warning("postgresql listen connection lost: %s", exc)
                await asyncio.sleep(LISTEN_RECONNECT_SECONDS)

    def _heard(self, payload: str) -> None:
        flags, _, ids = payload.partition("|")
        if "w" in flags:
            self.hub.work_added()
        if "c" in flags:
            self.hub.cancel_added()
        if ids == "*":
            self._everything_changed()
        elif ids:
            self.hub.jobs_changed(ids.split(","))

    def _everything_changed(self) -> None:
        self.hub.work_added()
        self.hub.cancel_added()
        self.hub.jobs_changed(self.hub.watched_ids())

    async def _poll(self) -> None:
        """The fallback: wake workers and waiters whose jobs moved, whatever NOTIFY did."""
        interval = SAFETY_POLL_SECONDS if self.settings.notify else self.settings.poll_seconds
        while True:
            await asyncio.sleep(interval)
            self.hub.work_added()
            self.hub.cancel_added()
            try:
                await self._publish_watched()
            except StoreUnavailable as exc:
                log.warning("postgresql poll failed: %s", exc)

    async def _publish_watched(self) -> None:
        watched = self.hub.watched_ids()
        known = self._known_versions
        for stale in set(known) - set(watched):
            del known[stale]
        if not watched:
            return
        versions = await self.versions(watched)
        for job_id in watched:
            version = versions.get(job_id)
            if known.get(job_id) != version:
                self.hub.job_changed(job_id)
            if version is None:
                known.pop(job_id, None)
            else:
                known[job_id] = version

    # --- clients -----------------------------------------------------------------------

    async def enqueue(
        self, specs: Sequence[JobSpec], *, replace_terminal: bool = False
    ) -> list[Enqueued]:
        """Store jobs. A one-job call joins the others of this process that come while a
        write of them is under way: they share the next transaction (group commit)."""
        if len(specs) == 1:
            return [await self._submit(specs[0], replace_terminal)]
        return await self._enqueue_alone(specs, replace_terminal)

    async def _submit(self, spec: JobSpec, replace_terminal: bool) -> Enqueued:
        """Queue a one-job enqueue for the submitter task; its answer once committed."""
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        submit = _Submit(spec, replace_terminal, asyncio.get_running_loop().create_future())
        self._submits.append(submit)
        if self._submitter is None or self._submitter.done():
            self._submitter = asyncio.create_task(self._drain_submits(), name="jobdeck-pg-submit")
        return await submit.future

    async def _drain_submits(self) -> None:
        """Write the queued one-job enqueues, a group per transaction, until none is left:
        the ones that come while a group is written make the next group."""
        try:
            while self._submits:
                group = [s for s in self._submits[:MAX_GROUP] if not s.future.done()]
                del self._submits[:MAX_GROUP]
                if group:
                    await self._write_group(group)
        finally:
            # Cancelled (the loop closing): nobody is left waiting for an answer.
            for submit in self._submits:
                submit.future.cancel()
            self._submits.clear()

    async def _write_group(self, group: list[_Submit]) -> None:
        """Write ``group`` and answer each, as if each were written alone: its entry, or its
        JobIdTaken or JobActive (see :meth:`_enqueue_submits`); when the server cannot be
        reached, every one of them gets that."""
        try:
            outcomes = await self._enqueue_submits(group)
        except BaseException as exc:
            for submit in group:
                if submit.future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    submit.future.cancel()
                else:
                    submit.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for submit, outcome in zip(group, outcomes, strict=True):
            if submit.future.done():
                continue
            if isinstance(outcome, BaseException):
                submit.future.set_exception(outcome)
            else:
                submit.future.set_result(outcome)

    async def _enqueue_submits(self, group: list[_Submit]) -> list[Enqueued | BaseException]:
        """The outcomes of ``group``, one per submit. Their new ids go first, in one
        statement committed on its own (one round trip: the common case ends there); the
        submits it left alone (an id that exists, or repeats one of the group) are then
        resolved as :meth:`_enqueue_rest` says. When that statement fails (a spec that
        cannot be sent), the whole group goes that way instead."""
        try:
            inserted = await self._insert_new([submit.spec for submit in group])
        except StoreUnavailable as exc:
            if not _statement_cancelled(exc):
                raise
            inserted = {}
        except Exception as exc:
            log.info("%d enqueues are written with their lookups: %s", len(group), exc)
            inserted = {}
        outcomes: dict[int, Enqueued | BaseException] = {}
        left: list[int] = []
        for index, submit in enumerate(group):
            job = inserted.pop(submit.spec.id, None)
            if job is None:
                left.append(index)
            else:
                outcomes[index] = Enqueued(job, True)
        if left:
            rest = [group[index] for index in left]
            try:
                resolved = await self._enqueue_rest(rest)
            except Exception as exc:  # the others stand: they are committed
                resolved = [exc] * len(rest)
            outcomes.update(zip(left, resolved, strict=True))
        return [outcomes[index] for index in range(len(group))]

    async def _insert_new(self, specs: Sequence[JobSpec]) -> dict[str, Job]:
        """Insert the jobs of ``specs`` whose ids are new, committed at once, and notify of
        them (in the statement, or shared: see :meth:`_write`); the jobs inserted by id."""
        with self._sharing(True) as share:
            params = {
                "rows": spec_rows(specs),
                "notify": not share,
                "channel": self.channel,
                "max_ids": NOTIFY_MAX_BYTES,
            }

            async def insert(conn: Conn) -> str:
                params["now"] = now_us()  # created_at: once a connection is at hand
                cur = conn.cursor(row_factory=tuple_row)
                await cur.execute(self._sql["insert_new"], params)
                row = await cur.fetchone()
                return row[0] if row is not None else ""

            joined = await self._run(insert, write=True, autocommit=True)
            ids = joined.split(",") if joined else []
            await self._announce(ids, bool(ids), False, shared=share)
        new_ids = set(ids)
        now = params["now"]
        jobs: dict[str, Job] = {}
        for spec in specs:
            if spec.id in new_ids and spec.id not in jobs:
                jobs[spec.id] = new_job(spec, now)
        return jobs

    async def _enqueue_rest(self, group: list[_Submit]) -> list[Enqueued | BaseException]:
        """The outcomes of one-job enqueues whose ids were there already: each looked up and
        answered (or its terminal job replaced) in one transaction for the group; when that
        fails (a database error, or a spec that cannot be sent), each is written alone, so
        that the error goes to the spec that causes it."""
        if len(group) == 1:
            return list(await self._enqueue_alone([group[0].spec], group[0].replace_terminal))
        try:
            return list(await self._enqueue_group(group))
        except StoreUnavailable as exc:
            if not _statement_cancelled(exc):
                raise
            return await self._enqueue_each(group)
        except Exception as exc:
            log.info("a group of %d enqueues is written one by one: %s", len(group), exc)
            return await self._enqueue_each(group)

    async def _enqueue_each(self, group: list[_Submit]) -> list[Enqueued | BaseException]:
        """The submits of ``group`` written one after the other, each alone."""
        outcomes: list[Enqueued | BaseException] = []
        for submit in group:
            try:
                (entry,) = await self._enqueue_alone([submit.spec], submit.replace_terminal)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(entry)
        return outcomes

    async def _enqueue_group(self, group: list[_Submit]) -> list[Enqueued | JobConflict]:
        """One transaction for the one-job enqueues of ``group`` (see :func:`resolve_group`)."""
        specs = [submit.spec for submit in group]

        async def insert(conn: Conn) -> list[Enqueued | JobConflict]:
            now = now_us()
            new_jobs = await self._insert_jobs(conn, specs, now)
            existing = await self._jobs_not_inserted(conn, specs, new_jobs)
            outcomes, replaced, again = resolve_group(
                specs, [submit.replace_terminal for submit in group], new_jobs, existing, now
            )
            await self._delete_jobs(conn, replaced)
            if again and len(await self._insert_jobs(conn, again, now)) < len(again):
                # Inserted by another process meanwhile: written alone, each finds it.
                raise _GroupRaced("a job of the group was inserted meanwhile")
            return outcomes

        return await self._write(insert, _created, pipeline=True, shared_notify=True)

    async def _enqueue_alone(
        self, specs: Sequence[JobSpec], replace_terminal: bool
    ) -> list[Enqueued]:
        """:meth:`enqueue` in a transaction of its own."""

        async def insert(conn: Conn) -> list[Enqueued]:
            now = now_us()
            new_jobs = await self._insert_jobs(conn, specs, now)
            existing = await self._jobs_not_inserted(conn, specs, new_jobs)
            answers, replaced = resolve_batch(specs, existing, replace_terminal)
            await self._delete_jobs(conn, replaced)
            # Replaced ids, and any id whose job vanished between the insert and the select.
            again = [
                specs[i]
                for i, answer in enumerate(answers)
                if answer == i and specs[i].id not in new_jobs
            ]
            if again:
                new_jobs.update(await self._insert_jobs(conn, again, now))
            return batch_entries(specs, answers, new_jobs)

        return await self._write(insert, _created, pipeline=True, shared_notify=True)

    async def _jobs_not_inserted(
        self, conn: Conn, specs: Sequence[JobSpec], inserted: Mapping[str, Job]
    ) -> dict[str, Job]:
        """The stored jobs of the ids of ``specs`` that the insert left alone, by id."""
        missing = list({spec.id for spec in specs if spec.id not in inserted})
        if not missing:
            return {}
        cur = await conn.execute(self._sql["select_jobs"], (missing,))
        return {r["id"]: job_from_row(r) for r in await cur.fetchall()}

    async def _delete_jobs(self, conn: Conn, ids: Sequence[str]) -> None:
        """Delete the jobs of ``ids`` (terminal jobs an enqueue replaces)."""
        if ids:
            await conn.execute(f'DELETE FROM "{self.schema}".jobs WHERE id = ANY(%s)', (ids,))

    async def _insert_jobs(self, conn: Conn, specs: Sequence[JobSpec], now: int) -> dict[str, Job]:
        """Insert new jobs in one statement; the jobs inserted by id (existing ids and
        repeats within ``specs`` are left alone)."""
        cur = await conn.execute(self._sql["insert_jobs"], {"rows": spec_rows(specs), "now": now})
        # In pipeline mode the statement is on its way: the jobs are made while the server
        # inserts them, as if every id were new (an id's first spec inserts it).
        jobs: dict[str, Job] = {}
        for spec in specs:
            if spec.id not in jobs:
                jobs[spec.id] = new_job(spec, now)
        inserted = [row["id"] for row in await cur.fetchall()]
        if len(inserted) == len(jobs):
            return jobs
        return {job_id: jobs[job_id] for job_id in inserted}

    async def get(self, job_id: str) -> Job | None:
        async def select(conn: Conn) -> Job | None:
            row = await (await conn.execute(self._sql["select_job"], (job_id,))).fetchone()
            return None if row is None else job_from_row(row)

        return await self._read(select)

    async def versions(self, job_ids: Sequence[str]) -> dict[str, int]:
        ids = list(job_ids)

        async def select(conn: Conn) -> dict[str, int]:
            cur = await conn.execute(
                f'SELECT id, version FROM "{self.schema}".jobs WHERE id = ANY(%s)', (ids,)
            )
            return {r["id"]: r["version"] for r in await cur.fetchall()}

        return await self._read(select)

    async def list(self, flt: JobFilter, limit: int, cursor: str | None) -> Page:
        where, args = _filter_sql(flt)
        if cursor is not None:
            created_at, job_id = decode_cursor(cursor)
            where.append("(created_at, id) < (%s, %s)")
            args += [created_at, job_id]
        sql = (
            f'SELECT {JOB_COLUMNS} FROM "{self.schema}".jobs'
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY created_at DESC, id DESC LIMIT %s"
        )

        async def select(conn: Conn) -> list[Job]:
            cur = await conn.execute(sql, [*args, limit + 1])
            return [job_from_row(r) for r in await cur.fetchall()]

        jobs = await self._read(select)
        return Page(*one_page(jobs, limit, lambda job: encode_cursor(job.created_at, job.id)))

    async def request_cancel(self, job_id: str) -> tuple[Job, CancelEffect]:
        async def cancel(conn: Conn) -> tuple[Job, CancelEffect]:
            # Lock the row first: the statements below then see one status, even when a
            # rescue or a retry moves the job between running and queued meanwhile.
            await conn.execute(
                f'SELECT 1 FROM "{self.schema}".jobs WHERE id = %s FOR UPDATE', (job_id,)
            )
            args = {"id": job_id, "now": now_us()}
            row = await (await conn.execute(self._sql["cancel_queued"], args)).fetchone()
            if row is not None:
                return job_from_row(row), CancelEffect.CANCELLED
            row = await (await conn.execute(self._sql["cancel_running"], args)).fetchone()
            if row is not None:
                return job_from_row(row), CancelEffect.REQUESTED
            row = await (await conn.execute(self._sql["select_job"], (job_id,))).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            job = job_from_row(row)
            if job.status is Status.RUNNING:
                return job, CancelEffect.REQUESTED
            return job, CancelEffect.UNCHANGED

        def changes(result: tuple[Job, CancelEffect]) -> tuple[list[str], bool, bool]:
            job, effect = result
            changed = [job.id] if effect is not CancelEffect.UNCHANGED else []
            return changed, False, effect is CancelEffect.REQUESTED

        return await self._write(cancel, changes)

    async def retry(self, job_id: str) -> Job:
        async def retry(conn: Conn) -> Job:
            row = await (
                await conn.execute(self._sql["retry"], {"id": job_id, "now": now_us()})
            ).fetchone()
            if row is not None:
                return job_from_row(row)
            row = await (await conn.execute(self._sql["select_job"], (job_id,))).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            raise JobConflict(
                f"job {job_id!r} is {row['status']}; only failed or cancelled jobs retry", job_id
            )

        return await self._write(retry, lambda job: ([job.id], True, False))

    async def delete(self, job_id: str) -> None:
        schema = self.schema

        async def delete(conn: Conn) -> None:
            cur = await conn.execute(
                f'DELETE FROM "{schema}".jobs WHERE id = %s AND status IN {TERMINAL_SQL}',
                (job_id,),
            )
            if cur.rowcount:
                return
            row = await (
                await conn.execute(f'SELECT status FROM "{schema}".jobs WHERE id = %s', (job_id,))
            ).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            raise JobActive(f"job {job_id!r} is {row['status']}", job_id)

        await self._write(delete, lambda _: ([job_id], False, False))

    async def logs(self, job_id: str, cursor: str | None, limit: int) -> LogPage:
        after = decode_seq_cursor(cursor)
        schema = self.schema

        async def select(conn: Conn) -> list[LogLine] | None:
            exists = await (
                await conn.execute(f'SELECT 1 FROM "{schema}".jobs WHERE id = %s', (job_id,))
            ).fetchone()
            if exists is None:
                return None
            cur = await conn.execute(
                f'SELECT seq, at, level, message FROM "{schema}".job_logs'
                " WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (job_id, after, limit + 1),
            )
            return [
                LogLine(r["seq"], r["at"], r["level"], r["message"]) for r in await cur.fetchall()
            ]

        lines = await self._read(select)
        if lines is None:
            raise JobNotFound(job_id)
        return LogPage(*one_page(lines, limit, lambda line: str(line.seq)))

    async def stats(self) -> Stats:
        schema = self.schema

        async def select(conn: Conn) -> Stats:
            now = now_us()
            counts = [
                (r["queue"], r["status"], r["n"])
                for r in await (await conn.execute(self._sql["counts"])).fetchall()
            ]
            alive_since = now - int(self.settings.lease_seconds * MICROS)
            workers = await (
                await conn.execute(
                    f'SELECT count(*) AS n FROM "{schema}".workers WHERE last_seen >= %s',
                    (alive_since,),
                )
            ).fetchone()
            finished = await (
                await conn.execute(
                    f'SELECT count(*) AS n FROM "{schema}".jobs WHERE finished_at >= %s',
                    (now - 60 * MICROS,),
                )
            ).fetchone()
            assert workers is not None and finished is not None
            return stats_from_counts(counts, workers["n"], finished["n"])

        return await self._read(select)

    # --- workers -----------------------------------------------------------------------

    async def claim(
        self,
        worker: str,
        queues: Sequence[str],
        kinds: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        done: WorkerBatch | None = None,
        max_log_lines: int | None = None,
    ) -> list[Job]:
        lines = self.settings.max_log_lines if max_log_lines is None else max_log_lines
        if not done:
            done = None
        if limit <= 0 or not queues or not kinds:
            if done is not None:
                await self.record(done, lines)
                done.recorded = True
            return []
        seen = seen_due(self._seen, worker, lease_seconds)
        # One instant for every try of this claim: a retry after a commit whose answer was
        # lost finds the jobs the earlier try took (this worker, started at this instant)
        # instead of leaving them running with nobody to run them.
        now = now_us()
        params: dict[str, Any] = {
            "queues": text_array(tuple(queues)),
            "kinds": text_array(tuple(kinds)),
            "now": now,
            "limit": limit,
            "worker": worker,
            "lease": now + int(lease_seconds * MICROS),
        }
        tries = 0

        async def taken_before(conn: Conn) -> list[Job]:
            nonlocal tries
            tries += 1
            if tries == 1:
                return []
            found = await conn.execute(self._sql["claimed_at"], (worker, now))
            taken = [job_from_row(r) for r in await found.fetchall()]
            params["limit"] = max(0, limit - len(taken))
            return taken

        if done is None or done.only_finishes():
            _, last = done.split_progress() if done is not None else ((), {})
            params.update(
                rows=finish_rows(done.outcomes if done is not None else (), last, now),
                seen=seen,
                channel=self.channel,
                max_ids=NOTIFY_MAX_BYTES,
            )

            async def cycle(conn: Conn) -> tuple[list[Job], list[str], bool]:
                taken = await taken_before(conn)
                cur = conn.cursor(row_factory=tuple_row)
                await cur.execute(self._sql["cycle"], params)
                rows = await cur.fetchall()
                jobs = taken + [job_from_values(r[2:]) for r in rows if r[2] is not None]
                finished = rows[0][0]
                return jobs, finished.split(",") if finished else [], rows[0][1]

            jobs, changed, requeued = await self._run(cycle, write=True, autocommit=True)
            self.hub.jobs_changed([*changed, *(j.id for j in jobs)])
            if requeued:
                self.hub.work_added()
        else:

            async def claim(conn: Conn) -> tuple[list[Job], list[str], bool]:
                taken = await taken_before(conn)
                cur = conn.cursor(row_factory=tuple_row)
                await cur.execute(self._sql["claim"], params)
                # The claim comes first: a run queued again by this batch is not taken back
                # at once, it stays visible as queued (to cancels, to other workers) until
                # the next claim.
                collect = await self._send_record(conn, done, lines)
                jobs = taken + [job_from_values(r) for r in await cur.fetchall()]
                changed, requeued = await collect()
                if seen:
                    await conn.execute(self._sql["seen_worker"], (worker, now, now))
                return jobs, changed, requeued

            jobs, _, _ = await self._write(
                claim,
                lambda result: ([*result[1], *(j.id for j in result[0])], result[2], False),
                pipeline=True,
            )
        if done is not None:
            done.recorded = True
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    def park_claim(
        self,
        worker: str,
        queues: Sequence[str],
        kinds: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> ParkedClaim | None:
        """None: work comes from every process by notification, and the claim is a round
        trip of its own wherever it starts."""
        return None

    async def next_due(self, queues: Sequence[str], kinds: Sequence[str]) -> int | None:
        """The earliest ``run_at`` among queued jobs of these queues and kinds."""

        async def select(conn: Conn) -> int | None:
            cur = await conn.execute(self._sql["next_due"], (list(queues), list(kinds)))
            row = await cur.fetchone()
            return None if row is None else row["due"]

        return await self._read(select)

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> Heartbeat:
        ids = list(job_ids)

        async def renew(conn: Conn) -> Heartbeat:
            now = now_us()
            await conn.execute(self._sql["seen_worker"], (worker, now, now))
            if not ids:
                return Heartbeat(frozenset(), frozenset())
            cur = await conn.execute(
                self._sql["renew_leases"], (now + int(lease_seconds * MICROS), ids, worker)
            )
            rows = await cur.fetchall()
            return Heartbeat(
                frozenset(r["id"] for r in rows),
                frozenset(r["id"] for r in rows if r["cancel_requested"]),
            )

        return await self._run(renew, write=True)

    async def cancel_requests(self, worker: str, job_ids: Sequence[str]) -> frozenset[str]:
        ids = list(job_ids)
        if not ids:
            return frozenset()

        async def select(conn: Conn) -> frozenset[str]:
            cur = await conn.execute(
                f'SELECT id FROM "{self.schema}".jobs WHERE id = ANY(%s) AND worker = %s'
                " AND status = 'running' AND cancel_requested",
                (ids, worker),
            )
            return frozenset(r["id"] for r in await cur.fetchall())

        return await self._read(select)

    async def record(self, batch: WorkerBatch, max_log_lines: int) -> None:
        if not batch:
            return

        async def write(conn: Conn) -> tuple[list[str], bool]:
            return await self._record_in(conn, batch, max_log_lines)

        await self._write(write, lambda result: (result[0], result[1], False))

    async def _record_in(
        self, conn: Conn, batch: WorkerBatch, max_log_lines: int
    ) -> tuple[list[str], bool]:
        """Write a worker's batch: progress, log lines, outcomes; (changed ids, requeued)."""
        collect = await self._send_record(conn, batch, max_log_lines)
        return await collect()

    async def _send_record(
        self, conn: Conn, batch: WorkerBatch, max_log_lines: int
    ) -> Callable[[], Awaitable[tuple[list[str], bool]]]:
        """Send the statements that write a worker's batch; return the function that reads
        their answers: (changed ids, requeued). In pipeline mode, statements sent after
        this one (a claim) travel in the same round trip."""
        now = now_us()
        cursors: list[psycopg.AsyncCursor[dict[str, Any]]] = []
        progress, last = batch.split_progress()
        if progress:
            cursors.append(
                await conn.execute(
                    self._sql["save_progress"],
                    {
                        "ids": [p.job_id for p in progress],
                        "currents": [float(p.current) for p in progress],
                        "totals": [_float_or_none(p.total) for p in progress],
                        "messages": [p.message for p in progress],
                        "worker": batch.worker,
                        "now": now,
                    },
                )
            )
        await self._append_logs(conn, batch, max_log_lines)
        finished = [o for o in batch.outcomes if o.kind is not OutcomeKind.HANDED_BACK]
        if finished:
            cursors.append(
                await conn.execute(
                    self._sql["finish"],
                    {"rows": finish_rows(finished, last, now), "worker": batch.worker, "now": now},
                )
            )
        hand_backs = [
            {"id": o.job_id, "worker": batch.worker, "now": now, "attempt": o.attempt}
            for o in batch.outcomes
            if o.kind is OutcomeKind.HANDED_BACK
        ]
        if hand_backs:
            cur = conn.cursor()
            await cur.executemany(self._sql["hand_back"], hand_backs, returning=True)
            cursors.append(cur)

        async def collect() -> tuple[list[str], bool]:
            changed: list[str] = []
            requeued = False
            for cur in cursors:
                while True:
                    for row in await cur.fetchall():
                        changed.append(row["id"])
                        requeued = requeued or row.get("status") == "queued"
                    if not cur.nextset():
                        break
            return changed, requeued

        return collect

    async def _append_logs(self, conn: Conn, batch: WorkerBatch, max_lines: int) -> None:
        """Number and store buffered log lines; past ``max_lines`` only count them."""
        if not batch.logs:
            return
        schema = self.schema
        by_job = logs_by_job(batch.logs)
        cur = await conn.execute(
            f'UPDATE "{schema}".jobs AS j SET log_count = j.log_count + n.added'
            " FROM unnest(%s::text[], %s::int[]) AS n(id, added)"
            " WHERE j.id = n.id RETURNING j.id, j.log_count - n.added AS before",
            (list(by_job), [len(lines) for lines in by_job.values()]),
        )
        before = {r["id"]: r["before"] for r in await cur.fetchall()}
        kept: list[LogRow] = []
        markers: list[LogRow] = []
        for job_id, count in before.items():
            rows, marker = numbered_log_rows(job_id, count, by_job[job_id], max_lines)
            kept += rows
            if marker is not None:
                markers.append(marker)
        async with conn.cursor() as cur:
            if kept:
                await cur.executemany(
                    f'INSERT INTO "{schema}".job_logs (job_id, seq, at, level, message)'
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    kept,
                )
            if markers:
                await cur.executemany(
                    f'INSERT INTO "{schema}".job_logs (job_id, seq, at, level, message)'
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (job_id, seq) DO UPDATE"
                    " SET at = excluded.at, message = excluded.message",
                    markers,
                )

    async def rescue_expired(self) -> list[Job]:
        async def rescue(conn: Conn) -> list[Job]:
            cur = await conn.execute(self._sql["rescue_expired"], {"now": now_us()})
            return [job_from_row(r) for r in await cur.fetchall()]

        jobs = await self._write(
            rescue,
            lambda jobs: (
                [j.id for j in jobs],
                any(j.status is Status.QUEUED for j in jobs),
                False,
            ),
        )
        for job in jobs:
            log.warning(
                "job %s kind=%s lease of %s expired: now %s",
                job.id,
                job.kind,
                job.worker,
                job.status,
            )
        return jobs

    async def purge(self, finished_before: int, batch_size: int) -> int:
        async def purge(conn: Conn) -> int:
            cur = await conn.execute(self._sql["purge"], (finished_before, batch_size))
            return cur.rowcount

        return await self._run(purge, write=True)

    async def maintain(self) -> None:
        """Fold the count deltas into the counts (one process at a time)."""

        async def fold(conn: Conn) -> None:
            row = await (
                await conn.execute(
                    "SELECT pg_try_advisory_xact_lock(hashtext(%s)) AS locked",
                    (f"jobdeck:{self.schema}:counts",),
                )
            ).fetchone()
            if row and row["locked"]:
                await conn.execute(self._sql["fold_counts"])

        await self._run(fold, write=True)

    async def unregister_worker(self, worker: str) -> None:
        self._seen.pop(worker, None)

        async def delete(conn: Conn) -> None:
            await conn.execute(f'DELETE FROM "{self.schema}".workers WHERE id = %s', (worker,))

        await self._run(delete, write=True)


def _created(
    outcomes: Sequence[Enqueued | JobConflict],
) -> tuple[list[str], bool, bool]:
    """The changes of an enqueue's transaction: the jobs it created (work added when any)."""
    created = [o.job.id for o in outcomes if isinstance(o, Enqueued) and o.created]
    return created, bool(created), False


def _statement_cancelled(exc: StoreUnavailable) -> bool:
    """Whether the server cancelled the statement (``statement_timeout``): the server is
    there, and the writes can be tried another way."""
    return isinstance(exc.__cause__, psycopg.errors.QueryCanceled)


@functools.lru_cache(maxsize=64)
def text_array(names: tuple[str, ...]) -> str:
    """A PostgreSQL array literal of these strings, for a ``::text[]`` parameter: the
    worker's queues and kinds, the same at every claim, are not dumped as a list each time."""
    quoted = ('"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"' for name in names)
    return "{" + ",".join(quoted) + "}"


def finish_rows(finished: Sequence[Outcome], last: Mapping[str, ProgressUpdate], now: int) -> str:
    """Finished runs and each one's last progress as one JSON document, a list of rows: [id,
    kind, retry_at, error, result, finished_at, attempt, has_progress, current, total,
    message] (error and result as JSON values, numbers that JSON cannot hold as text;
    finished_at ``now`` where the run has none). One encoder call for the whole batch costs
    a fraction of an array per column."""
    rows = []
    for o in finished:
        end = last.get(o.job_id)
        rows.append(
            (
                o.job_id,
                o.kind.value,
                o.retry_at,
                o.error.to_dict() if o.error else None,
                o.result if o.kind is OutcomeKind.SUCCEEDED else None,
                o.finished_at or now,
                o.attempt,
                end is not None,
                _json_float(end.current) if end else None,
                _json_float(end.total) if end else None,
                end.message if end else None,
            )
        )
    return dumps(rows)


def _json_float(value: float | None) -> float | str | None:
    """A number for a JSON document read with ``::float8``: infinities and NaN as text."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else repr(number)


def _float_or_none(value: float | None) -> float | None:
    """A progress number as a float: a list mixing ints and floats cannot be sent as one
    array."""
    return None if value is None else float(value)


async def _pipelined(conn: Conn, fn: Callable[[Conn], Awaitable[T]]) -> T:
    """``fn`` in one transaction in pipeline mode, in two round trips when ``fn`` reads
    one answer: BEGIN travels with the first statements, the last ones with COMMIT.

    The BEGIN and COMMIT are sent as statements on an autocommit connection: psycopg's
    own (``conn.transaction()``, the implicit BEGIN) would each add a round trip."""
    await conn.set_autocommit(True)
    try:
        async with conn.pipeline():
            await conn.execute("BEGIN")
            result = await fn(conn)
            await conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                await conn.execute("ROLLBACK")
        raise
    finally:
        # A connection left in autocommit would still be safe: conn.transaction() sends
        # its own BEGIN then.
        with contextlib.suppress(psycopg.Error):
            await conn.set_autocommit(False)


async def _autocommitted(conn: Conn, fn: Callable[[Conn], Awaitable[T]]) -> T:
    """``fn`` with the connection in autocommit mode: each statement commits on its own."""
    await conn.set_autocommit(True)
    try:
        return await fn(conn)
    finally:
        with contextlib.suppress(psycopg.Error):
            await conn.set_autocommit(False)


async def _configure(conn: Conn) -> None:
    """jsonb comes back as its text, as SQLite's TEXT does: one decoder for both adapters."""
    conn.adapters.register_loader("jsonb", TextLoader)


def _application_name(url: str, purpose: str) -> dict[str, str]:
    """``application_name`` of a connection of this process: ``jobdeck:<purpose>:<pid>``,
    unless the URL or ``PGAPPNAME`` already names the application (theirs wins)."""
    try:
        named = "application_name" in conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        named = False  # a malformed URL: connecting will say what is wrong with it
    if named or os.environ.get("PGAPPNAME"):
        return {}
    return {"application_name": f"jobdeck:{purpose}:{os.getpid()}"}


class _Submit:
    """A one-job enqueue waiting for its group: the spec, and the future of its answer."""

    __slots__ = ("future", "replace_terminal", "spec")

    def __init__(
        self, spec: JobSpec, replace_terminal: bool, future: asyncio.Future[Enqueued]
    ) -> None:
        self.spec = spec
        self.replace_terminal = replace_terminal
        self.future = future


class _GroupRaced(Exception):
    """A group's transaction met a concurrent insert of one of its ids: undone, and its
    enqueues are written alone."""


class _Notices:
    """Changes of several writes, gathered for one NOTIFY, and the writers waiting for it."""

    __slots__ = ("cancel", "ids", "size", "waiters", "work")

    def __init__(self) -> None:
        self.ids: list[str] | None = []  # None: more than one notification holds
        self.size = 0
        self.work = False
        self.cancel = False
        self.waiters: list[asyncio.Future[None]] = []

    def add(self, ids: list[str], work: bool, cancel: bool) -> None:
        self.work = self.work or work
        self.cancel = self.cancel or cancel
        if self.ids is None:
            return
        self.size += sum(len(job_id) + 1 for job_id in ids)
        if self.size > NOTIFY_MAX_BYTES:
            self.ids = None
        else:
            self.ids.extend(ids)

    def payload(self) -> str:
        if self.ids is None:
            return _payload([], self.work, self.cancel).partition("|")[0] + "|*"
        return _payload(self.ids, self.work, self.cancel)


def _payload(ids: list[str], work: bool, cancel: bool) -> str:
    """``<flags>|<id>,<id>...``; ``*`` for the ids when they do not fit one notification."""
    flags = ("w" if work else "") + ("c" if cancel else "")
    joined = ",".join(ids)
    if len(joined) > NOTIFY_MAX_BYTES:
        joined = "*"
    return f"{flags}|{joined}"


def _filter_sql(flt: JobFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, values in (
        ("status", [s.value for s in flt.statuses]),
        ("kind", list(flt.kinds)),
        ("queue", list(flt.queues)),
    ):
        if values:
            where.append(f"{column} = ANY(%s)")
            args.append(values)
    for key, values in labels_by_key(flt).items():
        where.append("labels ->> %s = ANY(%s)")
        args += [key, values]
    return where, args
