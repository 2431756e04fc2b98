"""The SQLite adapter: one file, WAL mode, ``synchronous=FULL`` by default.

Writes run on one thread with one connection and always open with ``BEGIN IMMEDIATE``, so a
transaction never has to upgrade a read lock (which is what makes SQLite answer "database is
locked" at once). Lock waits beyond the busy timeout are retried here, never passed on.
Group commit: the writes queued at one moment share a transaction (each in a savepoint, so a
failing one undoes only itself) and one commit; every caller is answered after that commit.
Reads run on a small pool of their own connections; WAL lets them proceed during writes.

Other processes' changes are seen by polling ``PRAGMA data_version`` (one cheap query per
process every ``JOBDECK_POLL_SECONDS``), which then wakes this process's waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    seen_due,
    spec_values,
    stats_from_counts,
)
from jobdeck.store.sql import load_queries

log = logging.getLogger("jobdeck.store")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000
LOCK_RETRY_SECONDS = 60.0
#: At most this many queued writes share one transaction (group commit).
MAX_GROUP = 256

Q = load_queries("sqlite", columns=JOB_COLUMNS, terminal=TERMINAL_SQL)


class _WriteRequest:
    """One caller's write waiting for the writer thread, and its outcome."""

    __slots__ = ("adds_work", "error", "fn", "future", "loop", "on_commit", "result")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[Any], None] | None = None,
        adds_work: Callable[[Any], bool] | None = None,
    ):
        self.fn = fn
        self.loop = loop
        self.on_commit = on_commit
        #: Whether the write, committed with this result, made jobs runnable.
        self.adds_work = adds_work
        self.future: asyncio.Future[Any] = loop.create_future()
        self.result: Any = None
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.result = None

    def added_work(self) -> bool:
        """Whether this write committed and made jobs runnable (on the writer thread)."""
        return self.error is None and self.adds_work is not None and self.adds_work(self.result)

    def settle(self) -> None:
        """On the caller's event loop: pass the outcome on (unless the caller gave up)."""
        if self.future.done():
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.result)


def _settle(requests: list[_WriteRequest]) -> None:
    """Answer ``requests`` on their event loops: one hand-off per loop, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_WriteRequest]] = {}
    for request in requests:
        by_loop.setdefault(request.loop, []).append(request)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle_on_loop, group)


def _settle_on_loop(requests: list[_WriteRequest]) -> None:
    # Commit hooks first: what they wake (an idle worker's claim loop) runs before the
    # callers resume, even a caller that gave up.
    for request in requests:
        if request.error is None and request.on_commit is not None:
            request.on_commit(request.result)
    for request in requests:
        request.settle()


def _undo_savepoint(conn: sqlite3.Connection) -> bool:
    """Undo the changes since ``SAVEPOINT jobdeck_write``; False when the whole transaction
    is gone (SQLite rolls it all back on some errors), or cannot be kept."""
    if not conn.in_transaction:
        return False
    try:
        conn.execute("ROLLBACK TO jobdeck_write")
        conn.execute("RELEASE jobdeck_write")
    except sqlite3.Error:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        return False
    return True


async def _retry_locked(start: Callable[[], Awaitable[T]]) -> T:
    """Await ``start()``, starting it again while SQLite answers "locked" or "busy" (for
    :data:`LOCK_RETRY_SECONDS`); any other ``OperationalError`` is a :class:`StoreUnavailable`."""
    deadline = time.monotonic() + LOCK_RETRY_SECONDS
    delay = 0.005
    while True:
        try:
            return await start()
        except sqlite3.OperationalError as exc:
            message = str(exc).lower()
            if "locked" not in message and "busy" not in message:
                raise StoreUnavailable(f"sqlite: {exc}") from exc
            if time.monotonic() > deadline:
                raise StoreUnavailable(f"sqlite stayed locked: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)


class SQLiteStore:
    """The :class:`~jobdeck.store.base.Store` on one SQLite file."""

    push_notifications = False

    def __init__(self, path: str, settings: Settings | None = None) -> None:
        self.path = path
        self.settings = settings if settings is not None else Settings()
        self.hub = ChangeHub()
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._write_conn: sqlite3.Connection | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_conns_lock = threading.Lock()
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_conn: sqlite3.Connection | None = None
        self._watch_executor: ThreadPoolExecutor | None = None
        self._known_versions: dict[str, int] = {}
        #: This process made work runnable since the last claim: the claim can skip its probe.
        self._work_added_here = False
        self._seen: dict[str, float] = {}
        # Writes waiting for the writer thread, and whether a drain of them is under way.
        self._pending: deque[_WriteRequest] = deque()
        self._pending_lock = threading.Lock()
        self._draining = False
        # Claims of idle workers that run next after a commit adding work (park_claim).
        self._parked: list[_WriteRequest] = []

    # --- connections -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA synchronous = {self.settings.sqlite_synchronous.upper()}")
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._read_conns_lock:
                self._read_conns.append(conn)
        return conn

    async def _on(self, executor: ThreadPoolExecutor | None, fn: Callable[[], T]) -> T:
        if executor is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        return await _retry_locked(lambda: loop.run_in_executor(executor, fn))

    async def _write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
        adds_work: Callable[[T], bool] | None = None,
    ) -> T:
        """Run ``fn`` in a ``BEGIN IMMEDIATE`` transaction on the write connection.

        Group commit: the writer thread takes every write queued at that moment (up to
        :data:`MAX_GROUP`) and runs them in one transaction, each inside a ``SAVEPOINT`` (a
        failing ``fn`` undoes its own changes only, and only its caller sees the error), and
        commits once. Every caller is answered after that commit, never before. ``on_commit``
        runs on the caller's loop with the result once committed, before any caller of the
        group resumes. ``adds_work`` tells, from the result, whether the write made jobs
        runnable: parked claims then run next (:meth:`park_claim`).
        """
        return await _retry_locked(lambda: self._queue_write(fn, on_commit, adds_work))

    def _queue_write(
        self,
        fn: Callable[[sqlite3.Connection], T],
        on_commit: Callable[[T], None] | None = None,
        adds_work: Callable[[T], bool] | None = None,
    ) -> asyncio.Future[T]:
        writer = self._writer
        if writer is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        request = _WriteRequest(fn, loop, on_commit, adds_work)
        with self._pending_lock:
            self._pending.append(request)
            start = not self._draining
            self._draining = True
        if start:
            try:
                writer.submit(self._drain)
            except RuntimeError as exc:  # the writer shut down meanwhile
                with self._pending_lock:
                    self._pending.clear()
                    self._draining = False
                raise StoreUnavailable("the store is not open") from exc
        return request.future

    def _drain(self) -> None:
        """On the writer thread: run the queued writes, a group at a time, until none is left."""
        while True:
            with self._pending_lock:
                if not self._pending:
                    self._draining = False
                    return
                count = min(MAX_GROUP, len(self._pending))
                group = [self._pending.popleft() for _ in range(count)]
            # Writes whose callers gave up (cancelled) before they started are not run.
            group = [request for request in group if not request.future.done()]
            answered: list[_WriteRequest] = []
            self._run_group(group, answered)
            parked = self._take_parked() if any(r.added_work() for r in answered) else []
            if not parked:
                _settle(answered)
                continue
            self._run_parked(parked, answered)

    def _run_parked(self, parked: list[_WriteRequest], answered: list[_WriteRequest]) -> None:
        """Run the parked claims at once, after a group whose writes made jobs runnable;
        that group's callers are answered once the claims are read, before their commit.
        (Answered first, the callers' event loop would hold the GIL this thread needs.)"""
        settled = False

        def answer_callers() -> None:
            nonlocal settled
            if not settled:
                settled = True
                _settle(answered)

        claims: list[_WriteRequest] = []
        self._run_group(parked, claims, before_commit=answer_callers)
        answer_callers()  # when the claims never reached a commit
        _settle(claims)

    def _run_group(
        self,
        group: list[_WriteRequest],
        answered: list[_WriteRequest],
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """Run ``group`` until each request of it is answered (committed or failed)."""
        try:
            while group:
                group = self._transaction(group, answered, before_commit)
        except BaseException as exc:  # pragma: no cover - _transaction answers every error
            for request in group:
                if request not in answered:
                    request.fail(exc)
                    answered.append(request)

    def _take_parked(self) -> list[_WriteRequest]:
        """The parked claims, taken to run (their callers can no longer withdraw them)."""
        if not self._parked:
            return []
        with self._pending_lock:
            parked, self._parked = self._parked, []
        return [request for request in parked if not request.future.done()]

    def _transaction(
        self,
        group: list[_WriteRequest],
        answered: list[_WriteRequest],
        before_commit: Callable[[], None] | None = None,
    ) -> list[_WriteRequest]:
        """One transaction for ``group``, each request in a savepoint. The requests decided
        (committed, or failed) go to ``answered``; the ones returned must run again, in a new
        transaction (SQLite rolled this one back as a whole under them)."""
        conn = self._write_conn
        try:
            if conn is None:
                raise StoreUnavailable("the store is not open")
            conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            for request in group:
                request.fail(exc)
            answered.extend(group)
            return []
        done: list[_WriteRequest] = []
        for position, request in enumerate(group):
            try:
                conn.execute("SAVEPOINT jobdeck_write")
                request.result = request.fn(conn)
                conn.execute("RELEASE jobdeck_write")
            except BaseException as exc:
                request.fail(exc)
                answered.append(request)
                if not _undo_savepoint(conn):
                    # The whole transaction is gone (an I/O error, a full disk...): this
                    # request has its error; the others run again in a new transaction.
                    for other in done:
                        other.result = None
                    return done + group[position + 1 :]
                continue
            done.append(request)
        if before_commit is not None:
            before_commit()
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):  # the commit's error is the one told
                    conn.execute("ROLLBACK")
            for request in done:
                request.fail(exc)
        answered.extend(done)
        return []

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._on(self._readers, lambda: fn(self._reader()))

    # --- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="jobdeck-sqlite-write")
        self._readers = ThreadPoolExecutor(2, thread_name_prefix="jobdeck-sqlite-read")
        loop = asyncio.get_running_loop()
        self._write_conn = await loop.run_in_executor(self._writer, self._open_writer)
        await self.migrate()
        self._watch_executor = ThreadPoolExecutor(1, thread_name_prefix="jobdeck-sqlite-watch")
        self._watch_task = asyncio.create_task(self._watch(), name="jobdeck-sqlite-watch")

    def _open_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            log.warning("sqlite journal mode is %s, not wal", mode)
        # Every write runs in a savepoint, whose journal (the pages as they were before it)
        # spills to a temporary file past 64 KiB otherwise: a file created, written and
        # deleted per transaction. In memory it lasts until the savepoint is released;
        # the readers keep the default.
        conn.execute("PRAGMA temp_store = MEMORY")
        return conn

    async def close(self) -> None:
        with self._pending_lock:
            parked, self._parked = self._parked, []
        for request in parked:
            request.fail(StoreUnavailable("the store is closed"))
        _settle(parked)
        if self._watch_task is not None:
            await cancel_and_wait(self._watch_task)
            self._watch_task = None
        # Each connection is closed on the thread that uses it, after its last query.
        for executor, conns in (
            (self._watch_executor, [self._watch_conn]),
            (self._writer, [self._write_conn]),
        ):
            if executor is not None:
                executor.submit(self._close_conns, conns).result()
                executor.shutdown(wait=True)
        if self._readers is not None:
            self._readers.shutdown(wait=True)
        self._close_conns(self._read_conns)
        self._writer = self._readers = self._watch_executor = None
        self._read_conns = []
        self._watch_conn = self._write_conn = None

    @staticmethod
    def _close_conns(conns: list[sqlite3.Connection | None]) -> None:
        for conn in conns:
            if conn is not None:
                conn.close()

    async def migrate(self) -> int:
        migrations = load_migrations("sqlite")

        def apply(conn: sqlite3.Connection) -> int:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
            )
            current = conn.execute(
                "SELECT coalesce(max(version), 0) FROM schema_migrations"
            ).fetchone()[0]
            newest = max(migrations, default=0)
            if current > newest:
                raise SchemaTooNew(
                    f"database schema version {current} is newer than this jobdeck ({newest})"
                )
            for version in sorted(v for v in migrations if v > current):
                for statement in _statements(migrations[version]):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, now_us()),
                )
            return newest

        return await self._write(apply)

    async def ping(self) -> None:
        try:
            await self._read(lambda conn: conn.execute("SELECT 1").fetchone())
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    # --- watching other processes ------------------------------------------------------

    async def _watch(self) -> None:
        """Poll ``PRAGMA data_version``; on a change by another connection, wake workers
        and the waiters on jobs whose version moved. Newly watched jobs are woken once,
        since a change may have landed between their first read and our first look."""
        executor = self._watch_executor
        assert executor is not None
        loop = asyncio.get_running_loop()
        last = await loop.run_in_executor(executor, self._data_version)
        while True:
            await asyncio.sleep(self.settings.poll_seconds)
            try:
                current = await loop.run_in_executor(executor, self._data_version)
                changed = current != last
                last = current
                if changed:
                    self.hub.work_added()
                    self.hub.cancel_added()
                await self._publish_watched(executor, changed)
            except sqlite3.Error as exc:
                log.warning("sqlite watch failed: %s", exc)

    def _data_version(self) -> int:
        if self._watch_conn is None:
            self._watch_conn = self._connect()
        return self._watch_conn.execute("PRAGMA data_version").fetchone()[0]

    async def _publish_watched(self, executor: ThreadPoolExecutor, changed: bool) -> None:
        watched = self.hub.watched_ids()
        known = self._known_versions
        for stale in set(known) - set(watched):
            del known[stale]
        fresh = [job_id for job_id in watched if job_id not in known]
        if not (changed and watched) and not fresh:
            return
        versions = await asyncio.get_running_loop().run_in_executor(
            executor, self._versions_on_watch_conn, watched if changed else fresh
        )
        for job_id, version in versions.items():
            if known.get(job_id) != version:
                self.hub.job_changed(job_id)
            known[job_id] = version
        for job_id in fresh:
            if job_id not in versions:
                self.hub.job_changed(job_id)  # deleted or not there yet: let the waiter look

    def _versions_on_watch_conn(self, job_ids: list[str]) -> dict[str, int]:
        assert self._watch_conn is not None
        return _versions(self._watch_conn, job_ids)

    def _changed(self, job_ids: Sequence[str], *, work: bool = False) -> None:
        self.hub.jobs_changed(job_ids)
        if work:
            self._work_added_here = True
            self.hub.work_added()

    # --- clients -----------------------------------------------------------------------

    async def enqueue(
        self, specs: Sequence[JobSpec], *, replace_terminal: bool = False
    ) -> list[Enqueued]:
        def insert(conn: sqlite3.Connection) -> list[Enqueued]:
            existing = _jobs_by_id(conn, [spec.id for spec in specs])
            answers, replaced = resolve_batch(specs, existing, replace_terminal)
            if replaced:
                conn.execute(
                    "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
                    (dumps(replaced),),
                )
            new_specs = [specs[i] for i, answer in enumerate(answers) if answer == i]
            now = now_us()  # created_at: the insert itself, after the lookups
            conn.executemany(Q["insert_jobs"], [spec_values(spec, now) for spec in new_specs])
            new_jobs = {spec.id: new_job(spec, now) for spec in new_specs}
            return batch_entries(specs, answers, new_jobs)

        entries = await self._write(insert, on_commit=self._wake_for, adds_work=_any_created)
        self._changed([e.job.id for e in entries if e.created])
        return entries

    def _wake_for(self, entries: list[Enqueued]) -> None:
        """Wake idle workers at the commit of new jobs, before the caller resumes."""
        if _any_created(entries):
            self._work_added_here = True
            self.hub.work_added()

    async def get(self, job_id: str) -> Job | None:
        def select(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(Q["select_job"], (job_id,)).fetchone()
            return None if row is None else job_from_row(row)

        return await self._read(select)

    async def versions(self, job_ids: Sequence[str]) -> dict[str, int]:
        return await self._read(lambda conn: _versions(conn, list(job_ids)))

    async def list(self, flt: JobFilter, limit: int, cursor: str | None) -> Page:
        where, args = _filter_sql(flt)
        if cursor is not None:
            created_at, job_id = decode_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args += [created_at, created_at, job_id]
        sql = (
            f"SELECT {JOB_COLUMNS} FROM jobs"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY created_at DESC, id DESC LIMIT ?"
        )

        def select(conn: sqlite3.Connection) -> list[Job]:
            return [job_from_row(r) for r in conn.execute(sql, [*args, limit + 1])]

        jobs = await self._read(select)
        return Page(*one_page(jobs, limit, lambda job: encode_cursor(job.created_at, job.id)))

    async def request_cancel(self, job_id: str) -> tuple[Job, CancelEffect]:
        def cancel(conn: sqlite3.Connection) -> tuple[Job, CancelEffect]:
            args = {"id": job_id, "now": now_us()}
            row = conn.execute(Q["cancel_queued"], args).fetchone()
            if row is not None:
                return job_from_row(row), CancelEffect.CANCELLED
            row = conn.execute(Q["cancel_running"], args).fetchone()
            if row is not None:
                return job_from_row(row), CancelEffect.REQUESTED
            row = conn.execute(Q["select_job"], (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            job = job_from_row(row)
            if job.status is Status.RUNNING:
                return job, CancelEffect.REQUESTED
            return job, CancelEffect.UNCHANGED

        job, effect = await self._write(cancel)
        if effect is not CancelEffect.UNCHANGED:
            self._changed([job.id])
        if effect is CancelEffect.REQUESTED:
            self.hub.cancel_added()
        return job, effect

    async def retry(self, job_id: str) -> Job:
        def retry(conn: sqlite3.Connection) -> Job:
            row = conn.execute(Q["retry"], {"id": job_id, "now": now_us()}).fetchone()
            if row is not None:
                return job_from_row(row)
            row = conn.execute(Q["select_job"], (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            status = row["status"]
            raise JobConflict(
                f"job {job_id!r} is {status}; only failed or cancelled jobs retry", job_id
            )

        job = await self._write(retry, adds_work=lambda _: True)
        self._changed([job.id], work=True)
        return job

    async def delete(self, job_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            deleted = conn.execute(
                f"DELETE FROM jobs WHERE id = ? AND status IN {TERMINAL_SQL}", (job_id,)
            ).rowcount
            if deleted:
                return
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            raise JobActive(f"job {job_id!r} is {row['status']}", job_id)

        await self._write(delete)
        self._changed([job_id])

    async def logs(self, job_id: str, cursor: str | None, limit: int) -> LogPage:
        after = decode_seq_cursor(cursor)

        def select(conn: sqlite3.Connection) -> list[LogLine] | None:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                return None
            rows = conn.execute(
                "SELECT seq, at, level, message FROM job_logs"
                " WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after, limit + 1),
            )
            return [LogLine(r["seq"], r["at"], r["level"], r["message"]) for r in rows]

        lines = await self._read(select)
        if lines is None:
            raise JobNotFound(job_id)
        return LogPage(*one_page(lines, limit, lambda line: str(line.seq)))

    async def stats(self) -> Stats:
        def select(conn: sqlite3.Connection) -> Stats:
            now = now_us()
            counts = [tuple(r) for r in conn.execute("SELECT queue, status, n FROM queue_counts")]
            alive_since = now - int(self.settings.lease_seconds * MICROS)
            workers = conn.execute(
                "SELECT count(*) FROM workers WHERE last_seen >= ?", (alive_since,)
            ).fetchone()[0]
            finished = conn.execute(
                "SELECT count(*) FROM jobs WHERE finished_at >= ?", (now - 60 * MICROS,)
            ).fetchone()[0]
            return stats_from_counts(counts, workers, finished)

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
        marks = {"queues": _marks(len(queues)), "kinds": _marks(len(kinds))}
        fresh, self._work_added_here = self._work_added_here, False
        if done is None and not fresh:
            # Nothing to write and no work added by this process since the last claim: a
            # cheap read first, so that an idle poll takes no lock.
            probe = Q["any_runnable"].format(**marks)
            now = now_us()
            runnable = await self._read(
                lambda conn: conn.execute(probe, [*queues, *kinds, now]).fetchone()
            )
            if runnable is None:
                return []
        seen = seen_due(self._seen, worker, lease_seconds)
        claim = _claim_in(worker, queues, kinds, limit, lease_seconds, seen=seen)

        def claim_and_record(conn: sqlite3.Connection) -> tuple[list[Job], list[str], bool]:
            jobs = claim(conn)
            # The claim comes first: a run queued again by this batch is not taken back at
            # once, it stays visible as queued (to cancels, to other workers) until the next.
            if done is None:
                return jobs, [], False
            changed, requeued = _record(conn, done, lines)
            return jobs, changed, requeued

        jobs, changed, requeued = await self._write(claim_and_record)
        if done is not None:
            done.recorded = True
        self._changed([*changed, *(j.id for j in jobs)], work=requeued)
        return jobs

    def park_claim(
        self,
        worker: str,
        queues: Sequence[str],
        kinds: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> ParkedClaim | None:
        """Park a claim on the writer thread: it runs in the transaction right after the
        next commit of this process that makes jobs runnable (an enqueue, a retry), with no
        turn of the event loop in between. An embedded worker (``jobdeck serve``) picks a
        submitted job up one commit after it is stored, instead of after two thread hand-offs
        and a claim of its own."""
        if self._writer is None or limit <= 0 or not queues or not kinds:
            return None
        claim = _claim_in(worker, queues, kinds, limit, lease_seconds, seen=False)

        def claim_now(conn: sqlite3.Connection) -> tuple[list[Job], float]:
            asked_at = time.monotonic()
            return claim(conn), asked_at

        def claimed(result: tuple[list[Job], float]) -> None:
            # As of this claim, what was runnable is taken: work committed later sets the
            # flag again, and its commit hook runs after this one.
            self.hub.work_available.clear()
            self._changed([job.id for job in result[0]])

        request = _WriteRequest(claim_now, asyncio.get_running_loop(), claimed)
        with self._pending_lock:
            self._parked.append(request)
        return _ParkedClaim(self, request)

    @property
    def parked_claims(self) -> int:
        """How many claims are parked (:meth:`park_claim`), waiting for work."""
        return len(self._parked)

    def _withdraw(self, request: _WriteRequest) -> bool:
        """Take a parked claim back, unless the writer has taken it to run."""
        with self._pending_lock:
            if request in self._parked:
                self._parked.remove(request)
                return True
            return False

    async def next_due(self, queues: Sequence[str], kinds: Sequence[str]) -> int | None:
        sql = (
            "SELECT min(run_at) FROM jobs WHERE status = 'queued'"
            f" AND queue IN ({_marks(len(queues))}) AND kind IN ({_marks(len(kinds))})"
        )
        return await self._read(lambda conn: conn.execute(sql, [*queues, *kinds]).fetchone()[0])

    async def maintain(self) -> None:
        """Nothing to do: SQLite keeps its counts exact in triggers."""

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> Heartbeat:
        ids = list(job_ids)

        def renew(conn: sqlite3.Connection) -> Heartbeat:
            now = now_us()
            conn.execute(Q["seen_worker"], (worker, now, now))
            if not ids:
                return Heartbeat(frozenset(), frozenset())
            rows = conn.execute(
                Q["renew_leases"].format(ids=_marks(len(ids))),
                [now + int(lease_seconds * MICROS), *ids, worker],
            ).fetchall()
            return Heartbeat(
                frozenset(r["id"] for r in rows),
                frozenset(r["id"] for r in rows if r["cancel_requested"]),
            )

        return await self._write(renew)

    async def cancel_requests(self, worker: str, job_ids: Sequence[str]) -> frozenset[str]:
        ids = list(job_ids)
        if not ids:
            return frozenset()
        sql = (
            f"SELECT id FROM jobs WHERE id IN ({_marks(len(ids))})"
            " AND worker = ? AND status = 'running' AND cancel_requested"
        )
        rows = await self._read(lambda conn: conn.execute(sql, [*ids, worker]).fetchall())
        return frozenset(r["id"] for r in rows)

    async def record(self, batch: WorkerBatch, max_log_lines: int) -> None:
        if not batch:
            return
        changed, requeued = await self._write(lambda conn: _record(conn, batch, max_log_lines))
        self._changed(changed, work=requeued)

    async def rescue_expired(self) -> list[Job]:
        def rescue(conn: sqlite3.Connection) -> list[Job]:
            return [job_from_row(r) for r in conn.execute(Q["rescue_expired"], {"now": now_us()})]

        probe = "SELECT 1 FROM jobs WHERE status = 'running' AND lease_expires_at < ? LIMIT 1"
        now = now_us()
        if await self._read(lambda conn: conn.execute(probe, (now,)).fetchone()) is None:
            return []
        jobs = await self._write(rescue)
        for job in jobs:
            log.warning(
                "job %s kind=%s lease of %s expired: now %s",
                job.id,
                job.kind,
                job.worker,
                job.status,
            )
        self._changed([j.id for j in jobs], work=any(j.status is Status.QUEUED for j in jobs))
        return jobs

    async def purge(self, finished_before: int, batch_size: int) -> int:
        return await self._write(
            lambda conn: conn.execute(Q["purge"], (finished_before, batch_size)).rowcount
        )

    async def unregister_worker(self, worker: str) -> None:
        self._seen.pop(worker, None)
        await self._write(lambda conn: conn.execute("DELETE FROM workers WHERE id = ?", (worker,)))


# --- helpers ---------------------------------------------------------------------------


class _ParkedClaim:
    """A claim parked with :meth:`SQLiteStore.park_claim`."""

    __slots__ = ("_request", "_store")

    def __init__(self, store: SQLiteStore, request: _WriteRequest) -> None:
        self._store = store
        self._request = request

    def withdraw(self) -> bool:
        return self._store._withdraw(self._request)

    async def result(self) -> tuple[list[Job], float]:
        try:
            return await self._request.future
        except sqlite3.OperationalError as exc:  # not retried: the worker claims again itself
            raise StoreUnavailable(f"sqlite: {exc}") from exc


def _claim_in(
    worker: str,
    queues: Sequence[str],
    kinds: Sequence[str],
    limit: int,
    lease_seconds: float,
    *,
    seen: bool,
) -> Callable[[sqlite3.Connection], list[Job]]:
    """The claim statement as a function of the write connection: up to ``limit`` jobs
    leased to ``worker`` from the moment it runs, in claim order; the worker marked alive
    when ``seen``."""
    sql = Q["claim"].format(
        named_queues=", ".join(f":q{i}" for i in range(len(queues))),
        named_kinds=", ".join(f":k{i}" for i in range(len(kinds))),
    )
    names = {f"q{i}": q for i, q in enumerate(queues)}
    names.update({f"k{i}": k for i, k in enumerate(kinds)})

    def claim(conn: sqlite3.Connection) -> list[Job]:
        now = now_us()
        args: dict[str, Any] = {
            "worker": worker,
            "now": now,
            "lease": now + int(lease_seconds * MICROS),
            "limit": limit,
            **names,
        }
        jobs = [job_from_values(r) for r in _plain_cursor(conn).execute(sql, args)]
        if seen:
            conn.execute(Q["seen_worker"], (worker, now, now))
        jobs.sort(key=lambda j: (-j.priority, j.run_at, j.id))
        return jobs

    return claim


def _any_created(entries: list[Enqueued]) -> bool:
    return any(entry.created for entry in entries)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _plain_cursor(conn: sqlite3.Connection) -> sqlite3.Cursor:
    """A cursor of ``conn`` whose rows are plain tuples (cheaper than ``sqlite3.Row``)."""
    cursor = conn.cursor()
    cursor.row_factory = None
    return cursor


def _jobs_by_id(conn: sqlite3.Connection, job_ids: list[str]) -> dict[str, Job]:
    """The jobs that have some of these ids, by id."""
    return {
        row["id"]: job_from_row(row) for row in conn.execute(Q["select_jobs"], (dumps(job_ids),))
    }


def _versions(conn: sqlite3.Connection, job_ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(job_ids), 500):
        chunk = job_ids[start : start + 500]
        rows = conn.execute(
            f"SELECT id, version FROM jobs WHERE id IN ({_marks(len(chunk))})", chunk
        )
        found.update((r["id"], r["version"]) for r in rows)
    return found


def _filter_sql(flt: JobFilter) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    for column, values in (
        ("status", [s.value for s in flt.statuses]),
        ("kind", list(flt.kinds)),
        ("queue", list(flt.queues)),
    ):
        if values:
            where.append(f"{column} IN ({_marks(len(values))})")
            args += values
    for key, values in labels_by_key(flt).items():
        where.append(f"json_extract(labels, ?) IN ({_marks(len(values))})")
        args += ['$."' + key.replace('"', "") + '"', *values]
    return where, args


def _record(
    conn: sqlite3.Connection, batch: WorkerBatch, max_log_lines: int
) -> tuple[list[str], bool]:
    """Write a worker's batch: progress, log lines, outcomes; (changed ids, requeued)."""
    now = now_us()
    changed: list[str] = []
    requeued = False
    progress, last = batch.split_progress()
    for p in progress:
        cursor = conn.execute(
            Q["save_progress"], (p.current, p.total, p.message, now, p.job_id, batch.worker)
        )
        if cursor.rowcount:
            changed.append(p.job_id)
    _append_logs(conn, batch, max_log_lines)
    for outcomes in _rounds(batch.outcomes):
        rows: list[Any] = []
        finishing: list[Any] = []
        for outcome in outcomes:
            if outcome.kind is OutcomeKind.HANDED_BACK:
                rows.append(
                    conn.execute(
                        Q["hand_back"],
                        {
                            "id": outcome.job_id,
                            "worker": batch.worker,
                            "now": now,
                            "attempt": outcome.attempt,
                        },
                    ).fetchone()
                )
            else:
                finishing.append(outcome)
        for start in range(0, len(finishing), FINISH_CHUNK):
            chunk = finishing[start : start + FINISH_CHUNK]
            values: list[Any] = [batch.worker, now]
            for outcome in chunk:
                values += _finish_values(outcome, last.get(outcome.job_id), now)
            rows += conn.execute(_finish_sql(len(chunk)), values).fetchall()
        for row in rows:
            if row is not None:
                changed.append(row[0])
                requeued = requeued or row[1] == "queued"
    return changed, requeued


#: At most this many outcomes per finish statement (13 parameters each, under SQLite's 32766).
FINISH_CHUNK = 500


def _rounds(outcomes: Sequence[Outcome]) -> list[list[Outcome]]:
    """``outcomes`` in rounds that name each job at most once, in order: a job's second
    outcome in a batch goes to the second round, and so on. Run one after the other, they
    have the effect of the outcomes run one by one (the first that applies wins)."""
    if len({outcome.job_id for outcome in outcomes}) == len(outcomes):
        return [list(outcomes)] if outcomes else []
    rounds: list[list[Outcome]] = []
    seen: dict[str, int] = {}
    for outcome in outcomes:
        index = seen.get(outcome.job_id, 0)
        seen[outcome.job_id] = index + 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(outcome)
    return rounds


@functools.lru_cache(maxsize=64)
def _finish_sql(count: int) -> str:
    """The finish statement for ``count`` outcomes."""
    row = "(" + ", ".join("?" * 13) + ")"
    return Q["finish"].format(outcomes=", ".join([row] * count))


def _finish_values(outcome: Outcome, update: ProgressUpdate | None, now: int) -> tuple[Any, ...]:
    """One outcome's row of the finish statement (the columns of its ``o``)."""
    error = outcome.error
    return (
        outcome.job_id,
        outcome.kind.value,
        dumps(outcome.result) if outcome.kind is OutcomeKind.SUCCEEDED else None,
        dumps(error.to_dict()) if error else None,
        error.type if error else None,
        error.message if error else None,
        outcome.retry_at,
        outcome.finished_at or now,
        outcome.attempt,
        *_progress_values(update),
    )


def _progress_values(update: ProgressUpdate | None) -> tuple[Any, ...]:
    """The progress columns of a finish row: progress (0 or 1), current, total, message."""
    if update is None:
        return (0, None, None, None)
    return (1, update.current, update.total, update.message)


def _append_logs(conn: sqlite3.Connection, batch: WorkerBatch, max_lines: int) -> None:
    """Number and store buffered log lines; past ``max_lines`` only count them."""
    for job_id, lines in logs_by_job(batch.logs).items():
        row = conn.execute("SELECT log_count FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            continue
        kept, marker = numbered_log_rows(job_id, row["log_count"], lines, max_lines)
        conn.executemany(
            "INSERT OR IGNORE INTO job_logs (job_id, seq, at, level, message)"
            " VALUES (?, ?, ?, ?, ?)",
            kept,
        )
        conn.execute("UPDATE jobs SET log_count = log_count + ? WHERE id = ?", (len(lines), job_id))
        if marker is not None:
            conn.execute(
                "INSERT INTO job_logs (job_id, seq, at, level, message) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (job_id, seq) DO UPDATE SET at = excluded.at,"
                " message = excluded.message",
                marker,
            )


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (triggers hold inner semicolons)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not current.strip():
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
