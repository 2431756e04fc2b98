"""The domain model: jobs, specs, statuses, legal transitions and progress arithmetic.

Pure: no I/O, nothing of ours imported. Every other module speaks these types.
Times are integer microseconds since the Unix epoch (UTC) inside jobdeck and RFC 3339
strings with a trailing ``Z`` on the wire.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
MICROS = 1_000_000


class Status(StrEnum):
    """Where a job stands."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """True for the statuses a job can leave only by an explicit retry (or never)."""
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})

#: The legal transitions of DESIGN §2. ``failed``/``cancelled`` -> ``queued`` only by an
#: explicit retry; ``succeeded`` is final.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED, Status.QUEUED}),
    Status.FAILED: frozenset({Status.QUEUED}),
    Status.CANCELLED: frozenset({Status.QUEUED}),
    Status.SUCCEEDED: frozenset(),
}


def can_transition(old: Status, new: Status) -> bool:
    """Whether ``old -> new`` is a legal change of status."""
    return new in TRANSITIONS[old]


# --- time ---------------------------------------------------------------------------


def now_us() -> int:
    """The current time in integer microseconds since the epoch."""
    return time.time_ns() // 1000


_EPOCH = datetime(1970, 1, 1)
#: The first and last instants RFC 3339 can write (years 0001 to 9999, UTC), in microseconds.
MIN_TIME_US = (datetime(1, 1, 1) - _EPOCH) // timedelta(microseconds=1)
MAX_TIME_US = (datetime(9999, 12, 31, 23, 59, 59, 999_999) - _EPOCH) // timedelta(microseconds=1)


def format_time(us: int | None) -> str | None:
    """Microseconds since the epoch as RFC 3339 UTC with microseconds and ``Z``; the year
    always has four digits. Raise OverflowError outside ``MIN_TIME_US..MAX_TIME_US``."""
    if us is None:
        return None
    moment = _EPOCH + timedelta(microseconds=us)
    return moment.isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> int:
    """An RFC 3339 / ISO 8601 timestamp as microseconds since the epoch.

    A timestamp without an offset is taken as UTC. Raise ValueError for text that is no
    timestamp, and for instants outside years 0001 to 9999 once in UTC (which RFC 3339
    cannot write).
    """
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    delta = parsed - datetime(1970, 1, 1, tzinfo=UTC)
    us = (delta.days * 86_400 + delta.seconds) * MICROS + delta.microseconds
    if not MIN_TIME_US <= us <= MAX_TIME_US:
        raise ValueError(f"{text!r} is outside the years 0001 to 9999 in UTC")
    return us


# --- ids ------------------------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Two characters per 10 bits: 13 lookups make an id instead of 26.
_CROCKFORD_PAIRS = [first + second for first in _CROCKFORD for second in _CROCKFORD]
_PAIR_SHIFTS = range(120, -1, -10)
_id_lock = threading.Lock()
_last_id: list[int] = [0, 0]


def new_job_id() -> str:
    """A time-ordered, 26-character id (ULID layout) that sorts by creation time.

    Ids made within one millisecond by one process stay ordered: the random part is
    incremented instead of drawn anew.
    """
    millis = time.time_ns() // 1_000_000
    with _id_lock:
        if millis <= _last_id[0]:
            millis = _last_id[0]
            randomness = (_last_id[1] + 1) & ((1 << 80) - 1)
        else:
            randomness = int.from_bytes(os.urandom(10), "big")
        _last_id[0], _last_id[1] = millis, randomness
    value = (millis << 80) | randomness
    return "".join([_CROCKFORD_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def is_valid_id(text: str) -> bool:
    """Whether ``text`` is a legal job id (also used for queue names and label keys)."""
    return JOB_ID_PATTERN.fullmatch(text) is not None


# --- progress -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job has come, as its task last reported."""

    current: float = 0
    total: float | None = None
    message: str | None = None

    def percent(self) -> float | None:
        """Completion in percent (0-100), or None when the total is unknown or zero."""
        if not self.total:
            return None
        return max(0.0, min(100.0, 100.0 * self.current / self.total))

    def eta_seconds(self, elapsed_seconds: float | None) -> float | None:
        """Seconds left at the average pace so far, or None when that cannot be told."""
        if not self.total or elapsed_seconds is None or self.current <= 0:
            return None
        remaining = max(0.0, self.total - self.current)
        return elapsed_seconds * remaining / self.current


# --- errors recorded on jobs ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobError:
    """The last failure of a job."""

    type: str
    message: str
    traceback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "message": self.message, "traceback": self.traceback}


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One failed attempt, kept in the job's history."""

    attempt: int
    type: str
    message: str
    at: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "type": self.type,
            "message": self.message,
            "at": format_time(self.at),
        }


# --- specs and jobs -------------------------------------------------------------------

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a client asks to run: a validated, normalised request for one job.

    ``params`` are already validated against the kind's schema, defaults filled in.
    """

    kind: str
    params: dict[str, Any]
    id: str
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    run_at: int | None = None

    def same_request(self, job: Job | JobSpec) -> bool:
        """Whether this spec asks for what ``job`` already is, or what another spec asks for
        (idempotent create).

        Compares kind, params, queue, priority, max_attempts, timeout and labels,
        never ``run_at``.
        """
        return (
            self.kind == job.kind
            and self.params == job.params
            and self.queue == job.queue
            and self.priority == job.priority
            and self.max_attempts == job.max_attempts
            and self.timeout == job.timeout
            and self.labels == job.labels
        )


@dataclass(frozen=True, slots=True)
class Job:
    """One run (with its retries) of a task kind, as stored."""

    id: str
    kind: str
    params: dict[str, Any]
    queue: str
    priority: int
    status: Status
    cancel_requested: bool
    progress: Progress
    result: Any
    error: JobError | None
    attempt_errors: tuple[AttemptError, ...]
    attempt: int
    max_attempts: int
    timeout: float | None
    run_at: int
    created_at: int
    started_at: int | None
    finished_at: int | None
    updated_at: int
    worker: str | None
    version: int
    labels: dict[str, str]
    lease_expires_at: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def elapsed_seconds(self, now: int | None = None) -> float | None:
        """Seconds the current run has taken so far (or took, once finished)."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else (now or now_us())
        return max(0.0, (end - self.started_at) / MICROS)

    def to_dict(self, now: int | None = None) -> dict[str, Any]:
        """The job as the v1 API shows it."""
        eta = None
        if self.status is Status.RUNNING:
            eta = self.progress.eta_seconds(self.elapsed_seconds(now))
        elif self.status is Status.SUCCEEDED and self.progress.total:
            eta = 0.0
        return {
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "queue": self.queue,
            "priority": self.priority,
            "status": self.status.value,
            "cancel_requested": self.cancel_requested,
            "progress": {
                "current": self.progress.current,
                "total": self.progress.total,
                "message": self.progress.message,
                "percent": self.progress.percent(),
                "eta_seconds": eta,
            },
            "result": self.result,
            "error": self.error.to_dict() if self.error else None,
            "attempt_errors": [e.to_dict() for e in self.attempt_errors],
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "run_at": format_time(self.run_at),
            "created_at": format_time(self.created_at),
            "started_at": format_time(self.started_at),
            "finished_at": format_time(self.finished_at),
            "updated_at": format_time(self.updated_at),
            "worker": self.worker,
            "version": self.version,
            "labels": self.labels,
        }

    def evolve(self, **changes: Any) -> Job:
        """A copy with some fields changed (for tests and in-memory bookkeeping)."""
        return replace(self, **changes)


# --- worker outcomes --------------------------------------------------------------------


class OutcomeKind(StrEnum):
    """How one run of a job ended, as the worker reports it to the store."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the store retries it when attempts remain and retry_at is set
    CANCELLED = "cancelled"
    HANDED_BACK = "handed_back"  # shutdown: back to the queue, attempt given back


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one run, written by the worker that held the job's lease."""

    job_id: str
    worker: str
    kind: OutcomeKind
    result: Any = None
    error: JobError | None = None
    retry_at: int | None = None
    finished_at: int = 0
    #: The attempt that ended; a late outcome of an earlier attempt changes nothing.
    attempt: int | None = None


def backoff_seconds(attempt: int, base: float, maximum: float, jitter: float) -> float:
    """Delay before the next attempt: ``min(max, base * 2^(attempt-1)) * jitter``.

    ``jitter`` is a draw from uniform(0.5, 1.5), passed in to keep this function pure.
    """
    exponent = max(0, attempt - 1)
    raw = maximum if exponent >= 64 else min(maximum, base * (2**exponent))
    return raw * jitter
