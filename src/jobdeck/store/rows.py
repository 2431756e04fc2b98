"""Conversions shared by the adapters: database rows to jobs, list cursors, JSON columns."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from jobdeck.model import AttemptError, Job, JobError, JobSpec, Progress, Status
from jobdeck.store.base import JobFilter, NewLogLine, Stats

T = TypeVar("T")

#: The columns every adapter selects to build a Job, in this order.
JOB_COLUMNS = (
    "id, kind, params, queue, priority, status, cancel_requested, progress_current, "
    "progress_total, progress_message, result, error, attempt_errors, attempt, max_attempts, "
    "timeout, run_at, created_at, started_at, finished_at, updated_at, worker, version, labels, "
    "lease_expires_at"
)

TERMINAL_SQL = "('succeeded', 'failed', 'cancelled')"


def dumps(value: Any) -> str:
    """Compact JSON, as stored."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _loads(value: Any) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    return json.loads(value)


def _number(value: Any) -> float | int:
    """Progress figures as ints when they are whole (7 rather than 7.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A Job from a row holding :data:`JOB_COLUMNS` (JSON columns as text or decoded)."""
    error = _loads(row["error"])
    attempt_errors = _loads(row["attempt_errors"]) or []
    total = row["progress_total"]
    return Job(
        id=row["id"],
        kind=row["kind"],
        params=_loads(row["params"]),
        queue=row["queue"],
        priority=row["priority"],
        status=Status(row["status"]),
        cancel_requested=bool(row["cancel_requested"]),
        progress=Progress(
            current=_number(row["progress_current"]),
            total=None if total is None else _number(total),
            message=row["progress_message"],
        ),
        result=_loads(row["result"]),
        error=JobError(error["type"], error["message"], error.get("traceback")) if error else None,
        attempt_errors=tuple(
            AttemptError(e["attempt"], e["type"], e["message"], e["at"]) for e in attempt_errors
        ),
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
        labels=_loads(row["labels"]) or {},
        lease_expires_at=row["lease_expires_at"],
    )


def spec_values(spec: JobSpec, now: int) -> dict[str, Any]:
    """The column values of a new job."""
    return {
        "id": spec.id,
        "kind": spec.kind,
        "params": dumps(spec.params),
        "queue": spec.queue,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "timeout": spec.timeout,
        "run_at": spec.run_at if spec.run_at is not None else now,
        "created_at": now,
        "updated_at": now,
        "labels": dumps(spec.labels),
    }


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
