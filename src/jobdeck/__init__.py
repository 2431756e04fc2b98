"""jobdeck: durable background jobs for Python web services."""

from jobdeck.deck import Deck
from jobdeck.errors import (
    InvalidParams,
    JobActive,
    JobCancelled,
    JobConflict,
    JobdeckError,
    JobIdTaken,
    JobInterrupted,
    JobNotFound,
    JobTimedOut,
    LeaseLost,
    UnknownKind,
)
from jobdeck.model import Job, JobSpec, Status
from jobdeck.settings import Settings
from jobdeck.tasks import JobContext, task

__version__ = "0.1.0"

__all__ = [
    "Deck",
    "InvalidParams",
    "Job",
    "JobActive",
    "JobCancelled",
    "JobConflict",
    "JobContext",
    "JobIdTaken",
    "JobInterrupted",
    "JobNotFound",
    "JobSpec",
    "JobTimedOut",
    "JobdeckError",
    "LeaseLost",
    "Settings",
    "Status",
    "UnknownKind",
    "__version__",
    "task",
]
