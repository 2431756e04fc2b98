"""Conversions shared by the adapters: database rows to jobs, list cursors, JSON columns."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from json.scanner import c_make_scanner  # type: ignore[attr-defined]
from typing import Any, TypeVar

from jobdeck.errors import JobActive, JobConflict, JobIdTaken
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

#: The values of :data:`JOB_COLUMNS` from a row, by name, as one tuple.
_job_values = operator.itemgetter(*JOB_COLUMNS.split(", "))


#: One encoder made once: ``json.dumps`` with options builds a new one on every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


#: The C encoder behind ``_ENCODER``, made once too: ``encode`` builds one on every call,
#: which costs more than encoding a small object. It keeps no record of the containers it
#: is in (no cycle check: a cycle ends in RecursionError), so it has no state to share.
_C_ENCODE = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False
    )
)


def dumps(value: Any) -> str:
    """Compact JSON, as stored; ValueError for NaN, Infinity or a cycle, TypeError for what
    JSON cannot hold (as ``json.dumps``)."""
    if _C_ENCODE is not None:
        try:
            return "".join(_C_ENCODE(value, 0))
        except RecursionError:
            pass  # a cycle, or nesting too deep: the checking encoder tells which
    return _ENCODER.encode(value)


_decode = json.JSONDecoder().decode
#: The C scanner behind ``_decode``: it skips the decoder's checks for whitespace around
#: the value, which a stored document (the server's own text) never has.
_scan = c_make_scanner(json.JSONDecoder()) if c_make_scanner is not None else None
_STATUSES = {status.value: status for status in Status}
#: A new job's progress, shared (Progress is frozen).
_NO_PROGRESS = Progress()


def _loads(value: Any) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    if not isinstance(value, str):
        return json.loads(value)
    if _scan is not None:
        try:
            decoded, end = _scan(value, 0)
        except StopIteration:
            pass  # not a JSON value where it starts: the decoder says why
        else:
            if end == len(value):
                return decoded
    return _decode(value)


def _number(value: Any) -> float | int:
    """Progress figures as ints when they are whole (7 rather than 7.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def job_from_row(row: Mapping[str, Any]) -> Job:
    """A Job from a row holding :data:`JOB_COLUMNS` (JSON columns as text or decoded)."""
    return job_from_values(_job_values(row))


#: Job's fields in the order :func:`new_job` gives their values, and their slot setters.
_NEW_JOB_FIELDS = (
    "id", "kind", "params", "queue", "priority", "status", "cancel_requested", "progress",
    "result", "error", "attempt_errors", "attempt", "max_attempts", "timeout", "run_at",
    "created_at", "started_at", "finished_at", "updated_at", "worker", "version", "labels",
    "lease_expires_at",
)  # fmt: skip
if {f.name for f in dataclasses.fields(Job)} != set(_NEW_JOB_FIELDS):  # pragma: no cover
    raise ImportError("jobdeck.store.rows: new_job does not know Job's fields")
_NEW_JOB_SETTERS = tuple(getattr(Job, name).__set__ for name in _NEW_JOB_FIELDS)
_QUEUED = Status.QUEUED
_new_object = object.__new__


def job_from_values(values: Sequence[Any]) -> Job:
    """A Job from the values of :data:`JOB_COLUMNS` in their order (a plain tuple row, cheaper
    than :func:`job_from_row`'s names), JSON columns as text or decoded."""
    (
        job_id,
        kind,
        params,
        queue,
        priority,
        status,
        cancel_requested,
        current,
        total,
        message,
        result,
        error,
        history,
        attempt,
        max_attempts,
        timeout,
        run_at,
        created_at,
        started_at,
        finished_at,
        updated_at,
        worker,
        version,
        labels,
        lease_expires_at,
    ) = values
    if not current and total is None and message is None:
        progress = _NO_PROGRESS
    else:
        progress = Progress(_number(current), None if total is None else _number(total), message)
    if error is not None:
        error = _loads(error)
        error = JobError(error["type"], error["message"], error.get("traceback")) if error else None
    fields = (
        job_id,
        kind,
        {} if params == "{}" else _loads(params),
        queue,
        priority,
        _STATUSES[status],
        bool(cancel_requested),
        progress,
        None if result is None else _loads(result),
        error,
        ()
        if not history or history == "[]"
        else tuple(
            AttemptError(e["attempt"], e["type"], e["message"], e["at"]) for e in _loads(history)
        ),
        attempt,
        max_attempts,
        timeout,
        run_at,
        created_at,
        started_at,
        finished_at,
        updated_at,
        worker,
        version,
        {} if not labels or labels == "{}" else _loads(labels),
        lease_expires_at,
    )
    # Slots filled directly, as in new_job: cheaper than the frozen __init__.
    job = _new_object(Job)
    for set_slot, value in zip(_NEW_JOB_SETTERS, fields, strict=True):
        set_slot(job, value)
    return job


def new_job(spec: JobSpec, now: int) -> Job:
    """The job ``spec`` becomes when inserted at ``now``, made without reading the row back:
    what :func:`job_from_row` reads from it (the conformance tests hold the two equal).

    Its slots are filled directly: Job's frozen ``__init__`` costs twice as much, and a batch
    of 1,000 makes 1,000 of them."""
    job = _new_object(Job)
    timeout = spec.timeout
    run_at = spec.run_at
    values = (
        spec.id, spec.kind, spec.params, spec.queue, spec.priority, _QUEUED, False,
        _NO_PROGRESS, None, None, (), 0, spec.max_attempts,
        None if timeout is None else float(timeout), now if run_at is None else run_at,
        now, None, None, now, None, 1, spec.labels, None,
    )  # fmt: skip
    for set_slot, value in zip(_NEW_JOB_SETTERS, values, strict=True):
        set_slot(job, value)
    return job


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


def spec_rows(specs: Sequence[JobSpec]) -> str:
    """The column values of new jobs as one JSON document, a list of rows: [id, kind, params,
    queue, priority, max_attempts, timeout, run_at, labels] (timeout as the text of a float,
    so that infinities travel too; run_at null for "now"). One encoder call for the whole
    batch costs a fraction of one call per params and labels plus one array per column."""
    rows = [
        (
            spec.id,
            spec.kind,
            spec.params,
            spec.queue,
            spec.priority,
            spec.max_attempts,
            None if spec.timeout is None else repr(float(spec.timeout)),
            spec.run_at,
            spec.labels,
        )
        for spec in specs
    ]
    return dumps(rows)


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


def resolve_group(
    specs: Sequence[JobSpec],
    replace_terminal: Sequence[bool],
    inserted: Mapping[str, Job],
    existing: Mapping[str, Job],
    now: int,
) -> tuple[list[Enqueued | JobConflict], list[str], list[JobSpec]]:
    """How each of several one-job enqueues written in one transaction (group commit) is
    answered, as if they were made one after the other, each alone.

    ``inserted`` holds the jobs the group's insert made (each from the first spec of its
    id), ``existing`` the jobs found for the other ids. Returns, per spec, its entry or the
    JobIdTaken or JobActive it raises alone; the ids of terminal jobs to delete first; and
    the specs whose jobs are still to insert (the ones replacing a terminal job, or whose
    job vanished since the insert), made at ``now`` as their entries say.
    """
    found = dict(existing)  # the job the next enqueue of an id finds
    outcomes: list[Enqueued | JobConflict] = []
    replaced: list[str] = []
    again: list[JobSpec] = []
    for spec, replace in zip(specs, replace_terminal, strict=True):
        job = found.get(spec.id)
        if job is None and spec.id in inserted:
            job = found[spec.id] = inserted[spec.id]
            outcomes.append(Enqueued(job, True))
            continue
        try:
            (answer,), replacing = resolve_batch(
                [spec], {} if job is None else {spec.id: job}, replace
            )
        except JobConflict as exc:
            outcomes.append(exc)
            continue
        if isinstance(answer, Job):
            outcomes.append(Enqueued(answer, False))
            continue
        replaced += replacing
        job = found[spec.id] = new_job(spec, now)
        again.append(spec)
        outcomes.append(Enqueued(job, True))
    return outcomes, replaced, again


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
