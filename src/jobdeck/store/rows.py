"""Conversions shared by the adapters: database rows to jobs, list cursors, JSON columns."""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from jobdeck.errors import JobActive, JobIdTaken
from jobdeck.model import AttemptError, Job, JobError, JobSpec, Progress, Status
from jobdeck.store.base import Enqueued, JobFilter, NewLogLine, Stats

T = TypeVar("T")

#: The columns every adapter selects to build a Job, in this order.
JOB_COLUMNS = (
    "id, kind, params, queue, priority, status, cancel_requested, progress_current, "
    "progress_total, progress_message, result, error, attempt_errors, attempt, max_attempts, "
    "timeout, run_at, created_at, started_at, finished_at, updated_at, worker, version, labels, "
    "lease_expires_at"
)

TERMINAL_SQL = "('succeeded', 'failed', 'cancelled')"


#: One encoder made once: ``json.dumps`` with options builds a new one on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps(value: Any) -> str:
    """Compact JSON, as stored."""
    return _ENCODER.encode(value)


_decode = json.JSONDecoder().decode
_STATUSES = {status.value: status for status in Status}
#: A new job's progress, shared (Progress is frozen).
_NO_PROGRESS = Progress()


def _loads(value: Any) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    return _decode(value) if isinstance(value, str) else json.loads(value)


def _number(value: Any) -> float | int:
    """Progress figures as ints when they are whole (7 rather than 7.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A Job from a row holding :data:`JOB_COLUMNS` (JSON columns as text or decoded)."""
    error = row["error"]
    if error is not None:
        error = _loads(error)
    history = row["attempt_errors"]
    attempt_errors: tuple[AttemptError, ...] = ()
    if history and history != "[]":
        attempt_errors = tuple(
            AttemptError(e["attempt"], e["type"], e["message"], e["at"]) for e in _loads(history)
        )
    current = row["progress_current"]
    total = row["progress_total"]
    message = row["progress_message"]
    if not current and total is None and message is None:
        progress = _NO_PROGRESS
    else:
        progress = Progress(
            current=_number(current),
            total=None if total is None else _number(total),
            message=message,
        )
    result = row["result"]
    labels = row["labels"]
    return Job(
        id=row["id"],
        kind=row["kind"],
        params=_loads(row["params"]),
        queue=row["queue"],
        priority=row["priority"],
        status=_STATUSES[row["status"]],
        cancel_requested=bool(row["cancel_requested"]),
        progress=progress,
        result=None if result is None else _loads(result),
        error=JobError(error["type"], error["message"], error.get("traceback")) if error else None,
        attempt_errors=attempt_errors,
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        run_at=row["run_at"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        updated_at=row["updated_at"],
        worker=row["worker"],
        version=row["version"],
        labels={} if not labels or labels == "{}" else _loads(labels),
        lease_expires_at=row["lease_expires_at"],
    )


def new_job(spec: JobSpec, now: int) -> Job:
    """The job ``spec`` becomes when inserted at ``now``, made without reading the row back:
    what :func:`job_from_row` reads from it (the conformance tests hold the two equal)."""
    return Job(
        id=spec.id,
        kind=spec.kind,
        params=spec.params,
        queue=spec.queue,
        priority=spec.priority,
        status=Status.QUEUED,
        cancel_requested=False,
        progress=_NO_PROGRESS,
        result=None,
        error=None,
        attempt_errors=(),
        attempt=0,
        max_attempts=spec.max_attempts,
        timeout=None if spec.timeout is None else float(spec.timeout),
        run_at=now if spec.run_at is None else spec.run_at,
        created_at=now,
        started_at=None,
        finished_at=None,
        updated_at=now,
        worker=None,
        version=1,
        labels=spec.labels,
        lease_expires_at=None,
    )


def spec_values(spec: JobSpec, now: int) -> tuple[Any, ...]:
    """The column values of a new job: id, kind, params, queue, priority, max_attempts,
    timeout, run_at, created_at, updated_at, labels (the order of SQLite's insert_jobs)."""
    return (
        spec.id,
        spec.kind,
        _ENCODER.encode(spec.params),
        spec.queue,
        spec.priority,
        spec.max_attempts,
        spec.timeout,
        now if spec.run_at is None else spec.run_at,
        now,
        now,
        _ENCODER.encode(spec.labels) if spec.labels else "{}",
    )


def spec_columns(specs: Sequence[JobSpec], now: int) -> dict[str, Any]:
    """The column values of new jobs as one list per column (for a statement that inserts
    a batch from arrays), and ``now`` for their created_at and updated_at."""
    encode = _ENCODER.encode
    return {
        "ids": [spec.id for spec in specs],
        "kinds": [spec.kind for spec in specs],
        "params": [encode(spec.params) for spec in specs],
        "queues": [spec.queue for spec in specs],
        "priorities": [spec.priority for spec in specs],
        "max_attempts": [spec.max_attempts for spec in specs],
        "timeouts": [None if spec.timeout is None else float(spec.timeout) for spec in specs],
        "run_ats": [now if spec.run_at is None else spec.run_at for spec in specs],
        "labels": [encode(spec.labels) if spec.labels else "{}" for spec in specs],
        "now": now,
    }


def resolve_batch(
    specs: Sequence[JobSpec], existing: Mapping[str, Job], replace_terminal: bool
) -> tuple[list[Job | int], list[str]]:
    """How each entry of a batch is answered, as if its specs were enqueued one after the
    other, given the jobs that ``existing`` holds for some of their ids.

    Returns, per spec, either the existing job it asks for again (same spec) or the index of
    the spec whose new job answers it: its own index when it creates the job, an earlier
    one when its id repeats within the batch with the same spec; and the ids of terminal
    jobs to replace first (``replace_terminal``). Raises JobIdTaken or JobActive for the
    first entry that cannot be enqueued (a repeated id is a queued job by then).
    """
    answers: list[Job | int] = []
    created: dict[str, int] = {}
    replaced: list[str] = []
    for index, spec in enumerate(specs):
        first = created.get(spec.id)
        if first is not None:
            if replace_terminal:
                raise JobActive(f"job {spec.id!r} is queued", spec.id, index)
            if not spec.same_request(specs[first]):
                raise JobIdTaken(f"job {spec.id!r} exists with another spec", spec.id, index)
            answers.append(first)
            continue
        old = existing.get(spec.id)
        if old is None or (replace_terminal and old.is_terminal):
            if old is not None:
                replaced.append(spec.id)
            created[spec.id] = index
            answers.append(index)
        elif replace_terminal:
            raise JobActive(f"job {spec.id!r} is {old.status}", spec.id, index)
        elif spec.same_request(old):
            answers.append(old)
        else:
            raise JobIdTaken(f"job {spec.id!r} exists with another spec", spec.id, index)
    return answers, replaced


def batch_entries(
    specs: Sequence[JobSpec], answers: Sequence[Job | int], new_jobs: Mapping[str, Job]
) -> list[Enqueued]:
    """The entries of a batch from :func:`resolve_batch`'s answers and the new jobs by id."""
    return [
        Enqueued(answer, False)
        if isinstance(answer, Job)
        else Enqueued(new_jobs[spec.id], answer == index)
        for index, (spec, answer) in enumerate(zip(specs, answers, strict=True))
    ]


def encode_cursor(created_at: int, job_id: str) -> str:
    """An opaque list cursor pointing just past (created_at, id)."""
    raw = dumps([created_at, job_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """(created_at, id) from a cursor; raise ValueError when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, job_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError("malformed cursor") from None
    if not isinstance(created_at, int) or not isinstance(job_id, str):
        raise ValueError("malformed cursor")
    return created_at, job_id


def decode_seq_cursor(cursor: str | None) -> int:
    """A log cursor (the last seq seen) as an int; raise ValueError when malformed."""
    if cursor is None:
        return 0
    if not cursor.isdigit() or len(cursor) > 18:
        raise ValueError("malformed cursor")
    return int(cursor)


def dropped_lines_message(dropped: int) -> str:
    return f"{dropped} more log lines dropped (JOBDECK_MAX_LOG_LINES)"


def stats_from_counts(
    counts: Iterable[tuple[str, str, int]], workers: int, finished_last_minute: int
) -> Stats:
    """Stats from (queue, status, n) rows: all five statuses for every queue with jobs."""
    queues: dict[str, dict[str, int]] = {}
    for queue, status, n in counts:
        queues.setdefault(queue, {s.value: 0 for s in Status})[Status(status).value] += n
    return Stats(
        queues={q: c for q, c in sorted(queues.items()) if any(c.values())},
        workers=workers,
        finished_last_minute=finished_last_minute,
    )


def one_page(
    items: Sequence[T], limit: int, cursor_of: Callable[[T], str]
) -> tuple[list[T], str | None]:
    """The first ``limit`` of ``items`` (fetched as ``limit + 1``) and the cursor of the next
    page, or None when this is the last one."""
    if len(items) <= limit:
        return list(items), None
    page = list(items[:limit])
    return page, cursor_of(page[-1])


def labels_by_key(flt: JobFilter) -> dict[str, list[str]]:
    """Label filters grouped by key: values of one key match any, keys must all match."""
    grouped: dict[str, list[str]] = {}
    for key, value in flt.labels:
        grouped.setdefault(key, []).append(value)
    return grouped


def logs_by_job(lines: Iterable[NewLogLine]) -> dict[str, list[NewLogLine]]:
    """Buffered log lines grouped by job, in order."""
    grouped: dict[str, list[NewLogLine]] = {}
    for line in lines:
        grouped.setdefault(line.job_id, []).append(line)
    return grouped


LogRow = tuple[str, int, int, str, str]


def numbered_log_rows(
    job_id: str, count_before: int, lines: Sequence[NewLogLine], max_lines: int
) -> tuple[list[LogRow], LogRow | None]:
    """Rows (job_id, seq, at, level, message) for the lines that fit under ``max_lines``,
    and the marker row counting the dropped ones (seq ``max_lines + 1``), if any."""
    kept = [
        (job_id, count_before + i, line.at, line.level, line.message)
        for i, line in enumerate(lines, start=1)
        if count_before + i <= max_lines
    ]
    total = count_before + len(lines)
    marker = None
    if total > max_lines:
        message = dropped_lines_message(total - max_lines)
        marker = (job_id, max_lines + 1, lines[-1].at, "warning", message)
    return kept, marker


def seen_due(seen: dict[str, float], worker: str, lease_seconds: float) -> bool:
    """Whether a claim should (also) mark ``worker`` alive: at most every quarter lease (and
    every second), not at every claim; the heartbeat marks it too. ``seen`` holds the last
    time of each worker, on the monotonic clock."""
    now = time.monotonic()
    last = seen.get(worker)
    if last is not None and now - last < min(1.0, lease_seconds / 4):
        return False
    seen[worker] = now
    return True
