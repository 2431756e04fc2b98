"""The PostgreSQL adapter, on psycopg 3 (async) with a connection pool.

- Claims take several jobs per round trip with ``FOR UPDATE SKIP LOCKED``.
- Every write transaction ends with at most one ``NOTIFY`` naming the jobs it changed and
  whether work was added or a cancel requested; a batch of 1,000 jobs is one notification.
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
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from jobdeck.aio import cancel_and_wait
from jobdeck.errors import (
    JobActive,
    JobConflict,
    JobIdTaken,
    JobNotFound,
    SchemaTooNew,
    StoreUnavailable,
)
from jobdeck.model import MICROS, Job, JobSpec, OutcomeKind, Status, now_us
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
    Stats,
    WorkerBatch,
)
from jobdeck.store.migrations import load_migrations
from jobdeck.store.rows import (
    JOB_COLUMNS,
    TERMINAL_SQL,
    LogRow,
    decode_cursor,
    decode_seq_cursor,
    dumps,
    encode_cursor,
    job_from_row,
    labels_by_key,
    logs_by_job,
    numbered_log_rows,
    one_page,
    spec_values,
    stats_from_counts,
)
from jobdeck.store.sql import load_queries

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import dict_row
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
SAFETY_POLL_SECONDS = 2.0
RETRY_SECONDS = 15.0
NOTIFY_MAX_BYTES = 7900
LISTEN_RECONNECT_SECONDS = 1.0


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
        self._sql = load_queries(
            "postgres",
            s=quoted,
            columns=JOB_COLUMNS,
            jcolumns=", ".join(f"j.{c.strip()}" for c in JOB_COLUMNS.split(",")),
            terminal=TERMINAL_SQL,
        )
        self._pool: AsyncConnectionPool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._known_versions: dict[str, int] = {}

    # --- connections -------------------------------------------------------------------

    async def _run(self, fn: Callable[[Conn], Awaitable[T]], *, write: bool) -> T:
        """Run ``fn`` in one transaction, retrying while the server cannot be reached."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.05
        while True:
            try:
                async with pool.connection() as conn, conn.transaction():
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
    ) -> T:
        """A write transaction that ends with one NOTIFY describing ``changes(result)``:
        (changed job ids, work added, cancel requested)."""

        async def transaction(conn: Conn) -> T:
            result = await fn(conn)
            ids, work, cancel = changes(result)
            ids = list(ids)
            if ids or work or cancel:
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", (self.channel, _payload(ids, work, cancel))
                )
            return result

        result = await self._run(transaction, write=True)
        ids, work, cancel = changes(result)
        self.hub.jobs_changed(ids)
        if work:
            self.hub.work_added()
        if cancel:
            self.hub.cancel_added()
        return result

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
                "prepare_threshold": None,
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
        async def insert(conn: Conn) -> list[Enqueued]:
            now = now_us()
            rows = [spec_values(spec, now) for spec in specs]
            inserted: dict[str, Job] = {}
            async with conn.cursor() as cur:
                await cur.executemany(self._sql["insert_job"], rows, returning=True)
                while True:
                    for row in await cur.fetchall():
                        inserted[row["id"]] = job_from_row(row)
                    if not cur.nextset():
                        break
            missing = [spec.id for spec in specs if spec.id not in inserted]
            existing: dict[str, Job] = {}
            if missing:
                cur = await conn.execute(self._sql["select_jobs"], (missing,))
                existing = {r["id"]: job_from_row(r) for r in await cur.fetchall()}
            entries = []
            for index, spec in enumerate(specs):
                if spec.id in inserted:
                    entries.append(Enqueued(inserted[spec.id], True))
                    continue
                old = existing[spec.id]
                if replace_terminal:
                    if not old.is_terminal:
                        raise JobActive(f"job {spec.id!r} is {old.status}", spec.id, index)
                    await conn.execute(
                        f'DELETE FROM "{self.schema}".jobs WHERE id = %s', (spec.id,)
                    )
                    cur = await conn.execute(self._sql["insert_job"], rows[index])
                    row = await cur.fetchone()
                    assert row is not None
                    entries.append(Enqueued(job_from_row(row), True))
                elif spec.same_request(old):
                    entries.append(Enqueued(old, False))
                else:
                    raise JobIdTaken(f"job {spec.id!r} exists with another spec", spec.id, index)
            return entries

        def changes(entries: list[Enqueued]) -> tuple[list[str], bool, bool]:
            created = [e.job.id for e in entries if e.created]
            return created, bool(created), False

        return await self._write(insert, changes)

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
    ) -> list[Job]:
        if limit <= 0 or not queues or not kinds:
            return []

        async def claim(conn: Conn) -> list[Job]:
            now = now_us()
            cur = await conn.execute(
                self._sql["claim"],
                {
                    "queues": list(queues),
                    "kinds": list(kinds),
                    "now": now,
                    "limit": limit,
                    "worker": worker,
                    "lease": now + int(lease_seconds * MICROS),
                },
            )
            jobs = [job_from_row(r) for r in await cur.fetchall()]
            await conn.execute(self._sql["seen_worker"], (worker, now, now))
            return jobs

        jobs = await self._write(claim, lambda jobs: ([j.id for j in jobs], False, False))
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

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
            now = now_us()
            changed: list[str] = []
            requeued = False
            if batch.progress:
                cur = await conn.execute(
                    self._sql["save_progress"],
                    {
                        "ids": [p.job_id for p in batch.progress],
                        "currents": [p.current for p in batch.progress],
                        "totals": [p.total for p in batch.progress],
                        "messages": [p.message for p in batch.progress],
                        "worker": batch.worker,
                        "now": now,
                    },
                )
                changed += [r["id"] for r in await cur.fetchall()]
            await self._append_logs(conn, batch, max_log_lines)
            finishes = []
            hand_backs = []
            for outcome in batch.outcomes:
                if outcome.kind is OutcomeKind.HANDED_BACK:
                    hand_backs.append(
                        {
                            "id": outcome.job_id,
                            "worker": batch.worker,
                            "now": now,
                            "attempt": outcome.attempt,
                        }
                    )
                    continue
                error = outcome.error
                finishes.append(
                    {
                        "id": outcome.job_id,
                        "worker": batch.worker,
                        "kind": outcome.kind.value,
                        "result": dumps(outcome.result)
                        if outcome.kind is OutcomeKind.SUCCEEDED
                        else None,
                        "error": dumps(error.to_dict()) if error else None,
                        "retry_at": outcome.retry_at,
                        "finished_at": outcome.finished_at or now,
                        "now": now,
                        "attempt": outcome.attempt,
                    }
                )
            for statement, rows in (("finish", finishes), ("hand_back", hand_backs)):
                if not rows:
                    continue
                async with conn.cursor() as cur:
                    await cur.executemany(self._sql[statement], rows, returning=True)
                    while True:
                        for row in await cur.fetchall():
                            changed.append(row["id"])
                            requeued = requeued or row["status"] == "queued"
                        if not cur.nextset():
                            break
            return changed, requeued

        await self._write(write, lambda result: (result[0], result[1], False))

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
        async def delete(conn: Conn) -> None:
            await conn.execute(f'DELETE FROM "{self.schema}".workers WHERE id = %s', (worker,))

        await self._run(delete, write=True)


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
