"""Exceptions jobdeck raises.

    JobdeckError
    ├── JobNotFound            no job with that id
    ├── JobConflict            the request does not fit the job's current state
    │   ├── JobIdTaken         the id is used by a job with another spec (idempotent create)
    │   └── JobActive          the id is used by a job still queued or running
    ├── UnknownKind            no task kind of that name is registered
    ├── InvalidParams          params fail the kind's schema (``errors`` lists why)
    ├── TooLarge               a document exceeds a configured size limit
    ├── StoreUnavailable       the database did not answer (after retries)
    └── SchemaTooNew           the database was migrated by a newer jobdeck

Task code sees two more, raised by :class:`jobdeck.tasks.JobContext`:

    JobInterrupted
    ├── JobCancelled           cancel was requested
    ├── JobTimedOut            the job's timeout passed
    └── LeaseLost              the worker could not keep its lease
"""

from __future__ import annotations

from typing import Any


class JobdeckError(Exception):
    """Base of every error jobdeck raises on purpose."""


class JobNotFound(JobdeckError):
    """No job has the given id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")
        self.job_id = job_id


class JobConflict(JobdeckError):
    """The request does not fit the job's current state."""

    def __init__(self, message: str, job_id: str, index: int | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.index = index


class JobIdTaken(JobConflict):
    """The id belongs to a job with another spec."""


class JobActive(JobConflict):
    """The id belongs to a job that is still queued or running."""


class UnknownKind(JobdeckError):
    """No task kind of that name is registered."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown job kind {kind!r}")
        self.kind = kind


class InvalidParams(JobdeckError):
    """Params fail the kind's schema."""

    def __init__(self, kind: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"invalid params for kind {kind!r}")
        self.kind = kind
        self.errors = errors


class TooLarge(JobdeckError):
    """A document exceeds a configured size limit."""


class StoreUnavailable(JobdeckError):
    """The database did not answer, even after retries."""


class SchemaTooNew(JobdeckError):
    """The database schema is newer than this version of jobdeck knows."""


class JobInterrupted(BaseException):
    """Raised inside task code to stop a run. Derives from BaseException so that a
    task's ``except Exception`` does not swallow it."""


class JobCancelled(JobInterrupted):
    """Cancel was requested for the running job."""


class JobTimedOut(JobInterrupted):
    """The job ran past its timeout."""


class LeaseLost(JobInterrupted):
    """The worker could not renew its lease; another worker may take the job."""
