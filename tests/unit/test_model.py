"""The pure domain model: statuses and transitions, time, ids, progress, backoff, jobs."""

from __future__ import annotations

import dataclasses
import itertools
import re
import time
from typing import Any

import pytest

from jobdeck.model import (
    MICROS,
    AttemptError,
    Job,
    JobError,
    JobSpec,
    Progress,
    Status,
    backoff_seconds,
    can_transition,
    format_time,
    is_valid_id,
    new_job_id,
    parse_time,
)

RFC3339_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")

Q, R, S, F, C = (Status.QUEUED, Status.RUNNING, Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

#: DESIGN §2: every legal change of status, and nothing else.
LEGAL = {(Q, R), (Q, C), (R, S), (R, F), (R, C), (R, Q), (F, Q), (C, Q)}


# --- statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new"), list(itertools.product(Status, Status)))
def test_transitions_follow_the_design(old: Status, new: Status) -> None:
    """can_transition allows exactly the legal transitions of DESIGN §2."""
    assert can_transition(old, new) is ((old, new) in LEGAL)


def test_succeeded_is_final() -> None:
    """No transition leaves succeeded."""
    assert not any(can_transition(S, new) for new in Status)


def test_status_is_terminal() -> None:
    """Succeeded, failed and cancelled are terminal; queued and running are not."""
    assert {s for s in Status if s.is_terminal} == {S, F, C}


def test_status_values_are_the_wire_words() -> None:
    """Statuses compare equal to their lower-case wire words."""
    assert [s.value for s in Status] == ["queued", "running", "succeeded", "failed", "cancelled"]
    assert Status("running") is R


# --- progress -------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [None, 0, 0.0])
def test_percent_is_none_without_a_total(total: float | None) -> None:
    """percent is None when the total is unknown or zero."""
    assert Progress(current=5, total=total).percent() is None


@pytest.mark.parametrize(
    ("current", "total", "percent"),
    [(0, 10, 0.0), (1, 4, 25.0), (10, 10, 100.0), (15, 10, 100.0), (-3, 10, 0.0), (1, 3, 100 / 3)],
)
def test_percent_is_clamped_to_0_100(current: float, total: float, percent: float) -> None:
    """percent is 100 × current / total, clamped to 0..100."""
    assert Progress(current=current, total=total).percent() == pytest.approx(percent)


@pytest.mark.parametrize(
    ("progress", "elapsed", "eta"),
    [
        (Progress(25, 100), 10.0, 30.0),
        (Progress(50, 100), 4.0, 4.0),
        (Progress(100, 100), 7.0, 0.0),
        (Progress(120, 100), 7.0, 0.0),
        (Progress(0, 100), 10.0, None),
        (Progress(5, None), 10.0, None),
        (Progress(5, 0), 10.0, None),
        (Progress(5, 10), None, None),
    ],
)
def test_eta_seconds(progress: Progress, elapsed: float | None, eta: float | None) -> None:
    """eta extrapolates the pace so far, and is None when it cannot be told."""
    result = progress.eta_seconds(elapsed)
    if eta is None:
        assert result is None
    else:
        assert result == pytest.approx(eta)


# --- time -----------------------------------------------------------------------------------


def test_format_time_is_rfc3339_utc_with_micros_and_z() -> None:
    """A known instant formats with six fraction digits and Z."""
    us = 1_795_850_157_123_456  # 2026-11-28T07:15:57.123456Z
    assert format_time(us) == "2026-11-28T07:15:57.123456Z"
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(1_795_850_157_000_000) == "2026-11-28T07:15:57.000000Z"
    assert format_time(None) is None


@pytest.mark.parametrize(
    "us", [0, 1, 999_999, 1_795_850_157_123_456, 1_795_850_157_000_001, 4_102_444_799_999_999]
)
def test_format_and_parse_round_trip(us: int) -> None:
    """parse_time(format_time(t)) == t to the microsecond."""
    text = format_time(us)
    assert text is not None and RFC3339_Z.fullmatch(text)
    assert parse_time(text) == us


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-28T07:15:57.123456Z",
        "2026-11-28T07:15:57.123456z",
        "2026-11-28T07:15:57.123456+00:00",
        "2026-11-28T16:15:57.123456+09:00",
        "2026-11-28T07:15:57.123456",
    ],
)
def test_parse_time_honours_offsets(text: str) -> None:
    """Z, z, explicit offsets and no offset (taken as UTC) all name the same instant."""
    assert parse_time(text) == 1_795_850_157_123_456


def test_parse_time_rejects_garbage() -> None:
    """A string that is no timestamp raises ValueError."""
    with pytest.raises(ValueError):
        parse_time("yesterday")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
        ("0999-12-31T23:59:59.5Z", "0999-12-31T23:59:59.500000Z"),
        ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_the_years_0001_to_9999_round_trip(text: str, shown: str) -> None:
    """The whole range RFC 3339 can write, with four-digit years before 1000 too."""
    assert format_time(parse_time(text)) == shown


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00"])
def test_parse_time_refuses_instants_rfc3339_cannot_write(text: str) -> None:
    """Past the year 9999 or before the year 1 once in UTC: ValueError, not a stored time
    that no answer could show."""
    with pytest.raises(ValueError, match="0001 to 9999"):
        parse_time(text)


# --- ids ------------------------------------------------------------------------------------


def test_new_job_id_shape() -> None:
    """A new id is 26 Crockford base-32 characters and a valid job id."""
    job_id = new_job_id()
    assert len(job_id) == 26
    assert set(job_id) <= CROCKFORD
    assert is_valid_id(job_id)


def test_new_job_id_starts_with_its_millisecond() -> None:
    """The first 10 characters are the creation time in milliseconds, base 32 (ULID)."""
    before = time.time_ns() // 1_000_000
    job_id = new_job_id()
    after = time.time_ns() // 1_000_000
    digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    millis = 0
    for char in job_id[:10]:
        millis = millis * 32 + digits.index(char)
    assert before <= millis <= after


def test_new_job_ids_strictly_increase() -> None:
    """10,000 ids made in a row in one process are unique and strictly increasing."""
    ids = [new_job_id() for _ in range(10_000)]
    assert all(a < b for a, b in itertools.pairwise(ids))


@pytest.mark.parametrize(
    "text",
    [
        "a",
        "0",
        "Z" * 128,
        "job-1",
        "a.b:c_d-e",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "42",
        "x" + "-" * 127,
    ],
)
def test_valid_ids(text: str) -> None:
    """Ids of 1..128 characters from the allowed set, starting alphanumeric, are valid."""
    assert is_valid_id(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Z" * 129,
        "-job",
        ".job",
        ":job",
        "_job",
        "job id",
        "job/1",
        "job\n",
        "\njob",
        "jöb",
        "é",
        "ｊｏｂ",  # full-width letters
        "١٢٣",  # Arabic-Indic digits
        "job\u200b",
    ],
)
def test_invalid_ids(text: str) -> None:
    """Empty, too long, a non-alphanumeric start, spaces, slashes or non-ASCII are invalid."""
    assert not is_valid_id(text)


# --- backoff --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (7, 64.0), (8, 100.0)]
)
def test_backoff_doubles_up_to_the_cap(attempt: int, expected: float) -> None:
    """With jitter 1: base × 2^(attempt−1), capped at the maximum."""
    assert backoff_seconds(attempt, 1.0, 100.0, 1.0) == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1, 2, 5, 30, 64, 65, 1000, 10**9])
@pytest.mark.parametrize("jitter", [0.5, 1.0, 1.5])
def test_backoff_jitter_bounds(attempt: int, jitter: float) -> None:
    """The delay is the capped raw delay times the jitter, so within [0.5, 1.5] × raw, even
    for huge attempt numbers."""
    base, cap = 0.25, 300.0
    raw = cap if attempt > 40 else min(cap, base * 2 ** (attempt - 1))
    delay = backoff_seconds(attempt, base, cap, jitter)
    assert delay == pytest.approx(raw * jitter)
    assert 0.5 * raw <= delay <= 1.5 * raw


def test_backoff_first_attempt_is_the_base() -> None:
    """The first retry waits base × jitter; attempt 0 is treated like attempt 1."""
    assert backoff_seconds(1, 0.2, 10, 1.5) == pytest.approx(0.3)
    assert backoff_seconds(0, 0.2, 10, 1.0) == pytest.approx(0.2)


# --- specs and jobs -------------------------------------------------------------------------


def make_job(**changes: Any) -> Job:
    values: dict[str, Any] = {
        "id": "job-1",
        "kind": "steps",
        "params": {"n_steps": 3, "step_seconds": 1.0},
        "queue": "default",
        "priority": 0,
        "status": Status.QUEUED,
        "cancel_requested": False,
        "progress": Progress(),
        "result": None,
        "error": None,
        "attempt_errors": (),
        "attempt": 0,
        "max_attempts": 3,
        "timeout": None,
        "run_at": 1_795_850_157_123_456,
        "created_at": 1_795_850_157_123_456,
        "started_at": None,
        "finished_at": None,
        "updated_at": 1_795_850_157_123_456,
        "worker": None,
        "version": 1,
        "labels": {},
    }
    values.update(changes)
    return Job(**values)


def spec_for(job: Job, **changes: Any) -> JobSpec:
    values: dict[str, Any] = {
        "kind": job.kind,
        "params": dict(job.params),
        "id": job.id,
        "queue": job.queue,
        "priority": job.priority,
        "max_attempts": job.max_attempts,
        "timeout": job.timeout,
        "labels": dict(job.labels),
        "run_at": job.run_at,
    }
    values.update(changes)
    return JobSpec(**values)


def test_same_request_ignores_run_at() -> None:
    """A spec differing only in run_at asks for the same job."""
    job = make_job(labels={"team": "a"}, timeout=5.0)
    assert spec_for(job).same_request(job)
    assert spec_for(job, run_at=None).same_request(job)
    assert spec_for(job, run_at=job.run_at + 3_600 * MICROS).same_request(job)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "other"},
        {"params": {"n_steps": 4, "step_seconds": 1.0}},
        {"queue": "slow"},
        {"priority": 1},
        {"max_attempts": 4},
        {"timeout": 1.0},
        {"labels": {"team": "b"}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_same_request_compares_every_other_field(change: dict[str, Any]) -> None:
    """A spec differing in kind, params, queue, priority, max_attempts, timeout or labels
    asks for something else."""
    job = make_job(labels={"team": "a"})
    assert not spec_for(job, **change).same_request(job)


def test_spec_defaults() -> None:
    """A spec defaults to queue "default", priority 0, 3 attempts, no timeout, run at once."""
    spec = JobSpec(kind="steps", params={}, id="x")
    assert (spec.queue, spec.priority, spec.max_attempts, spec.timeout) == ("default", 0, 3, None)
    assert (spec.labels, spec.run_at) == ({}, None)


DESIGN_KEYS = {
    "id",
    "kind",
    "params",
    "queue",
    "priority",
    "status",
    "cancel_requested",
    "progress",
    "result",
    "error",
    "attempt_errors",
    "attempt",
    "max_attempts",
    "timeout",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "worker",
    "version",
    "labels",
}
TIME_KEYS = ("run_at", "created_at", "started_at", "finished_at", "updated_at")


def test_to_dict_of_a_queued_job() -> None:
    """A fresh job shows every DESIGN §2 key, null where nothing happened yet."""
    shown = make_job(lease_expires_at=None).to_dict()
    assert set(shown) == DESIGN_KEYS
    assert shown["status"] == "queued"
    assert shown["progress"] == {
        "current": 0,
        "total": None,
        "message": None,
        "percent": None,
        "eta_seconds": None,
    }
    assert (shown["started_at"], shown["finished_at"], shown["error"]) == (None, None, None)
    assert shown["attempt_errors"] == []
    assert shown["run_at"] == "2026-11-28T07:15:57.123456Z"


def test_to_dict_of_a_finished_job() -> None:
    """A failed job shows RFC 3339 Z times, its error and its attempt history, and no lease."""
    t = 1_795_850_157_123_456
    job = make_job(
        status=Status.FAILED,
        attempt=2,
        max_attempts=2,
        started_at=t + 1,
        finished_at=t + 2_000_001,
        updated_at=t + 2_000_001,
        worker="host:1:1",
        version=7,
        progress=Progress(3, 4, "almost"),
        error=JobError("ValueError", "bad", "Traceback ..."),
        attempt_errors=(
            AttemptError(1, "ValueError", "bad", t),
            AttemptError(2, "ValueError", "bad", t + 2_000_001),
        ),
        labels={"team": "a"},
        timeout=2.5,
        lease_expires_at=t + 30 * MICROS,
    )
    shown = job.to_dict()
    assert set(shown) == DESIGN_KEYS
    for key in TIME_KEYS:
        assert RFC3339_Z.fullmatch(shown[key]), key
    assert shown["finished_at"] == "2026-11-28T07:15:59.123457Z"
    assert shown["error"] == {"type": "ValueError", "message": "bad", "traceback": "Traceback ..."}
    assert shown["attempt_errors"] == [
        {"attempt": 1, "type": "ValueError", "message": "bad", "at": "2026-11-28T07:15:57.123456Z"},
        {"attempt": 2, "type": "ValueError", "message": "bad", "at": "2026-11-28T07:15:59.123457Z"},
    ]
    assert shown["progress"]["percent"] == 75.0
    assert shown["progress"]["eta_seconds"] is None  # not running: no estimate
    assert (shown["worker"], shown["version"], shown["timeout"]) == ("host:1:1", 7, 2.5)
    assert (shown["attempt"], shown["max_attempts"], shown["labels"]) == (2, 2, {"team": "a"})


def test_to_dict_eta_of_a_running_job() -> None:
    """A running job's eta extrapolates from its start to the given now."""
    t = 1_795_850_157_000_000
    job = make_job(status=Status.RUNNING, started_at=t, progress=Progress(25, 100), attempt=1)
    shown = job.to_dict(now=t + 10 * MICROS)
    assert shown["progress"]["percent"] == 25.0
    assert shown["progress"]["eta_seconds"] == pytest.approx(30.0)


def test_jobs_and_specs_are_immutable() -> None:
    """Jobs and specs are frozen; evolve makes a changed copy."""
    job = make_job()
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = Status.RUNNING  # type: ignore[misc]
    moved = job.evolve(status=Status.RUNNING)
    assert (job.status, moved.status) == (Status.QUEUED, Status.RUNNING)
