"""The storage port: the domain operations the core needs, and the in-process change hub.

This interface is internal and free to change; both adapters (SQLite, PostgreSQL) implement
all of it and pass one conformance suite (``tests/store``). Every state change is a guarded
compare-and-set on the job's current status and owner, so a late actor changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from jobdeck.aio import Flag, wait_any
from jobdeck.model import Job, JobSpec, Outcome, OutcomeKind, Status

# --- values the port speaks -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enqueued:
    """One job of an enqueue call: the stored job and whether this call created it."""

    job: Job
    created: bool


class CancelEffect(StrEnum):
    """What a cancel request did."""

    CANCELLED = "cancelled"  # the job was queued and is now cancelled
    REQUESTED = "requested"  # the job is running; its worker was (or had already been) asked
    UNCHANGED = "unchanged"  # the job was already terminal; nothing changed


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing shows. Empty tuples mean "any"."""

    statuses: tuple[Status, ...] = ()
    kinds: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a listing, newest first."""

    items: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line a task logged."""

    seq: int
    at: int
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class LogPage:
    items: list[LogLine]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class NewLogLine:
    """A line the worker has buffered for a job, before the store numbers it."""

    job_id: str
    at: int
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """The latest progress of a running job, coalesced by the worker."""

    job_id: str
    current: float
    total: float | None
    message: str | None


@dataclass(slots=True)
class WorkerBatch:
    """What a worker writes in one transaction: progress, log lines and finished runs."""

    worker: str
    progress: list[ProgressUpdate] = field(default_factory=list)
    logs: list[NewLogLine] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    #: Set by a store's ``claim`` once it committed the batch given as ``done``.
    recorded: bool = field(default=False, compare=False)

    def __bool__(self) -> bool:
        return bool(self.progress or self.logs or self.outcomes)

    def only_finishes(self) -> bool:
        """Whether the batch holds only runs that ended (handed back excepted) and their
        last progress: no log lines, no progress of a run that goes on, no hand-back."""
        if self.logs:
            return False
        ending: set[str] = set()
        for outcome in self.outcomes:
            if outcome.kind is OutcomeKind.HANDED_BACK:
                return False
            ending.add(outcome.job_id)
        return all(update.job_id in ending for update in self.progress)

    def split_progress(self) -> tuple[list[ProgressUpdate], dict[str, ProgressUpdate]]:
        """The progress updates to write on their own, and the last update of each run that
        ends in this batch (handed back excepted), which a store writes with its end."""
        ending = {o.job_id for o in self.outcomes if o.kind is not OutcomeKind.HANDED_BACK}
        if not ending:
            return self.progress, {}
        alone: list[ProgressUpdate] = []
        last: dict[str, ProgressUpdate] = {}
        for update in self.progress:
            if update.job_id in ending:
                last[update.job_id] = update
            else:
                alone.append(update)
        return alone, last


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The answer to a heartbeat: which leases were renewed, which jobs were asked to stop."""

    renewed: frozenset[str]
    cancel_requested: frozenset[str]


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts per queue and status, live workers, jobs finished in the last minute."""

    queues: dict[str, dict[str, int]]
    workers: int
    finished_last_minute: int


# --- the port ---------------------------------------------------------------------------


class ParkedClaim(Protocol):
    """A claim an idle worker leaves with its store (:meth:`Store.park_claim`)."""

    def withdraw(self) -> bool:
        """Take the claim back: True when it had not started (it never will); False when
        the store has taken it to run, and :meth:`result` has its jobs."""

    async def result(self) -> tuple[list[Job], float]:
        """The jobs the claim took, in claim order, and the ``time.monotonic()`` at which
        it asked for their leases (no later than they start)."""


class Store(Protocol):
    """All persistence and all cross-process signalling of jobdeck."""

    hub: ChangeHub
    #: True when other processes' changes reach the hub at once (PostgreSQL LISTEN/NOTIFY);
    #: False when the hub learns of them by polling every ``JOBDECK_POLL_SECONDS``.
    push_notifications: bool

    async def open(self) -> None:
        """Connect, apply pending migrations, start background listeners."""

    async def close(self) -> None:
        """Stop listeners and close connections."""

    async def migrate(self) -> int:
        """Apply pending migrations under a lock; return the schema version."""

    async def ping(self) -> None:
        """Raise :class:`StoreUnavailable` unless the database answers."""

    # clients

    async def enqueue(
        self, specs: Sequence[JobSpec], *, replace_terminal: bool = False
    ) -> list[Enqueued]:
        """Insert jobs, all or none.

        An id already used by a job with the same spec yields that job (``created=False``);
        with another spec it raises :class:`JobIdTaken` naming the entry's index. With
        ``replace_terminal`` a terminal job of that id is replaced by the new one and an
        active one raises :class:`JobActive`. An id repeated within the batch counts as if
        the entries came one after the other: the first creates the job, a later one meets
        it as an existing queued job.
        """

    async def get(self, job_id: str) -> Job | None:
        """One job, or None."""

    async def versions(self, job_ids: Sequence[str]) -> dict[str, int]:
        """The current version of each existing job among ``job_ids``."""

    async def list(self, flt: JobFilter, limit: int, cursor: str | None) -> Page:
        """Jobs matching ``flt``, newest first, ``limit`` per page."""

    async def request_cancel(self, job_id: str) -> tuple[Job, CancelEffect]:
        """Cancel a queued job at once, ask a running one to stop; raise JobNotFound."""

    async def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job to run now; raise JobNotFound / JobConflict."""

    async def delete(self, job_id: str) -> None:
        """Forget a terminal job and its logs; raise JobNotFound / JobActive."""

    async def logs(self, job_id: str, cursor: str | None, limit: int) -> LogPage:
        """A job's log lines, oldest first."""

    async def stats(self) -> Stats:
        """Exact, current counts."""

    # workers

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
        """Take up to ``limit`` runnable jobs (priority, then run_at) and lease them.

        With ``done``, also write that batch as :meth:`record` would, in the same
        transaction (after the claim: a run that batch queues again is not taken back at
        once), and set its ``recorded`` once committed: a worker's cycle of "write what
        finished, take as many new jobs" is one transaction, not two."""

    def park_claim(
        self,
        worker: str,
        queues: Sequence[str],
        kinds: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> ParkedClaim | None:
        """Leave a claim (as :meth:`claim`, without ``done``) with the store while the worker
        waits for work: the store runs it by itself as soon as this process adds work, or
        returns None when it has no quicker way than the worker's own claim once woken."""

    async def next_due(self, queues: Sequence[str], kinds: Sequence[str]) -> int | None:
        """The earliest ``run_at`` among queued jobs of these queues and kinds, or None."""

    async def heartbeat(
        self, worker: str, job_ids: Sequence[str], lease_seconds: float
    ) -> Heartbeat:
        """Renew the leases ``worker`` holds and record the worker as alive."""

    async def cancel_requests(self, worker: str, job_ids: Sequence[str]) -> frozenset[str]:
        """Which of ``worker``'s running jobs have been asked to stop (a cheap read)."""

    async def record(self, batch: WorkerBatch, max_log_lines: int) -> None:
        """Write progress, log lines and outcomes of one worker in one transaction."""

    async def rescue_expired(self) -> list[Job]:
        """Jobs whose lease expired: back to the queue, cancelled, or failed (WorkerLost)."""

    async def purge(self, finished_before: int, batch_size: int) -> int:
        """Delete up to ``batch_size`` terminal jobs finished before the given time, the
        earliest finished first, with their log lines; return how many. Never touches a
        queued or running job."""

    async def unregister_worker(self, worker: str) -> None:
        """Forget a worker that shut down."""

    async def maintain(self) -> None:
        """Adapter upkeep the workers run every few seconds (e.g. folding count deltas)."""


# --- in-process change hub ---------------------------------------------------------------


class Subscription:
    """A waiter on one job's changes. Set when the job changes; cleared by the reader."""

    __slots__ = ("_flag", "job_id")

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._flag = Flag()

    def notify(self) -> None:
        self._flag.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until notified or ``timeout`` seconds pass; True when notified. Clears."""
        await wait_any(self._flag, timeout=timeout)
        if not self._flag.is_set():
            return False
        self._flag.clear()
        return True


class ChangeHub:
    """Wakes waiters in this process when jobs change.

    The store publishes every change it makes itself, and every change it learns of from
    other processes (SQLite: a poll of ``PRAGMA data_version``; PostgreSQL: LISTEN). Waiters
    always re-read the store after waking: the hub carries hints, never state.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, set[Subscription]] = {}
        self.work_available = Flag()
        self.cancel_requested = Flag()

    def watched_ids(self) -> list[str]:
        """Ids of the jobs somebody in this process waits on."""
        return list(self._subscribers)

    @contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """Register a waiter on ``job_id`` for the duration of the block."""
        subscription = Subscription(job_id)
        self._subscribers.setdefault(job_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            waiters = self._subscribers.get(job_id)
            if waiters is not None:
                waiters.discard(subscription)
                if not waiters:
                    del self._subscribers[job_id]

    def job_changed(self, job_id: str) -> None:
        """Wake every waiter on ``job_id``."""
        for subscription in self._subscribers.get(job_id, ()):
            subscription.notify()

    def jobs_changed(self, job_ids: Any) -> None:
        for job_id in job_ids:
            self.job_changed(job_id)

    def work_added(self) -> None:
        """Wake idle workers: a job may have become runnable."""
        self.work_available.set()

    def cancel_added(self) -> None:
        """Wake workers: a running job may have been asked to stop."""
        self.cancel_requested.set()
