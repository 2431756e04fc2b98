"""Small helpers the routes share: job answers, ``Retry-After`` hints, ``Prefer: wait``,
the log line of a change."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from starlette.responses import JSONResponse

from jobdeck.model import MICROS, Job, Status, now_us

log = logging.getLogger("jobdeck")

#: ``Prefer: wait=N`` and ``/wait?timeout=`` are clamped to / bounded by this many seconds.
MAX_WAIT_SECONDS = 60
#: The longest ``Retry-After`` hint given for a job that waits for its ``run_at``.
MAX_RETRY_AFTER_SECONDS = 60

_PREFER_WAIT = re.compile(r'\s*wait\s*=\s*"?(\d{1,9}(?:\.\d{1,6})?)"?\s*', re.IGNORECASE)


def retry_after(job: Job, now: int | None = None) -> int | None:
    """Seconds a poller should wait before asking about ``job`` again; None once terminal.

    A running job changes often: 1 s. A queued job runs as soon as a worker is free (1 s),
    or at its ``run_at`` (the time until then, at most a minute).
    """
    if job.is_terminal:
        return None
    if job.status is Status.QUEUED:
        due = (job.run_at - (now if now is not None else now_us())) / MICROS
        return max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(due)))
    return 1


def retry_after_any(jobs: Iterable[Job]) -> int | None:
    """The shortest hint among ``jobs`` (None when all are terminal)."""
    now = now_us()
    hints = [hint for job in jobs if (hint := retry_after(job, now)) is not None]
    return min(hints) if hints else None


def hint_headers(jobs: Iterable[Job], headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """``headers`` plus ``Retry-After`` when one of ``jobs`` is not terminal."""
    result = dict(headers or {})
    hint = retry_after_any(jobs)
    if hint is not None:
        result["Retry-After"] = str(hint)
    return result


def job_response(
    job: Job, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """One job as the v1 API shows it, with ``Retry-After`` while it is not terminal."""
    return JSONResponse(
        job.to_dict(), status_code=status_code, headers=hint_headers([job], headers)
    )


def jobs_response(body: dict[str, Any], jobs: list[Job], status_code: int = 200) -> JSONResponse:
    """A document about several jobs, with ``Retry-After`` when one is not terminal."""
    return JSONResponse(body, status_code=status_code, headers=hint_headers(jobs))


def prefer_wait(values: Iterable[str]) -> int | float | None:
    """The ``wait`` preference (RFC 7240) among ``Prefer`` header values, clamped to
    :data:`MAX_WAIT_SECONDS`; None when absent, zero or not understood (then ignored)."""
    for value in values:
        for preference in value.split(","):
            token = preference.split(";", 1)[0]
            match = _PREFER_WAIT.fullmatch(token)
            if match is None:
                continue
            seconds = min(float(match.group(1)), float(MAX_WAIT_SECONDS))
            if seconds <= 0:
                return None
            return int(seconds) if seconds.is_integer() else seconds
    return None


def log_change(job: Job, change: str) -> None:
    """One log line per state change the API makes, in the worker's format."""
    log.info("job %s kind=%s %s", job.id, job.kind, change)
