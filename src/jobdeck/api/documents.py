"""What the OpenAPI document says the routes answer: success bodies and problems.

The routes build their answers by hand (``JSONResponse``), so FastAPI cannot see their shape;
the models here describe them for the document only and are never used to serialise. Routes
take ``response_model=None`` and declare their answers with :func:`body` and
:func:`problems`, which also replace FastAPI's default 422 (``application/json``) with the
``application/problem+json`` one the API really sends.

The problem schemas are inlined in each answer, so that the document stays whole when
``deck.router`` is mounted in a host app whose document jobdeck does not build. In the app of
:func:`jobdeck.api.create_app`, :func:`install` moves them to ``components/schemas`` and
names the registered kinds.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from jobdeck.model import Status

from .problems import PROBLEM_MEDIA_TYPE

if TYPE_CHECKING:
    from jobdeck.deck import Deck

# --- problems ----------------------------------------------------------------------------

_STRING = {"type": "string"}

#: ``{"type", "title", "status", "detail"}`` and maybe extension members (RFC 9457).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {**_STRING, "description": "a URN naming the problem, or about:blank"},
        "title": _STRING,
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": _STRING,
        "job_id": {**_STRING, "description": "the job the problem is about"},
        "index": {"type": "integer", "description": "the batch entry at fault"},
    },
}

#: A problem listing what is wrong with the request.
VALIDATION_PROBLEM_SCHEMA: dict[str, Any] = {
    **PROBLEM_SCHEMA,
    "title": "ValidationProblem",
    "required": [*PROBLEM_SCHEMA["required"], "errors"],
    "properties": {
        **PROBLEM_SCHEMA["properties"],
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {
                        "type": "array",
                        "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                        "description": "where: body, query, path or header, then names",
                    },
                    "msg": _STRING,
                    "type": _STRING,
                },
            },
        },
    },
}

#: A problem of the original routes, which keeps their ``message``.
COMPAT_PROBLEM_SCHEMA: dict[str, Any] = {
    **PROBLEM_SCHEMA,
    "title": "CompatProblem",
    "required": [*PROBLEM_SCHEMA["required"], "message"],
    "properties": {**PROBLEM_SCHEMA["properties"], "message": _STRING},
}

#: The problem schemas :func:`install` moves to ``components/schemas``, by name.
SHARED_SCHEMAS = {
    "Problem": PROBLEM_SCHEMA,
    "ValidationProblem": VALIDATION_PROBLEM_SCHEMA,
    "CompatProblem": COMPAT_PROBLEM_SCHEMA,
}

#: What a status means when a route does not say more.
DESCRIPTIONS = {
    400: "the request cannot be served",
    404: "no such job",
    409: "the request does not fit the job's state",
    413: "the request body is too large",
    422: "the request is not valid",
    429: "too many requests",
    503: "the store does not answer",
}


def problem(
    status: int, description: str | None = None, *, message: bool = False
) -> dict[str, Any]:
    """The document of one problem answer; ``message`` adds the member the original routes
    add to their 404 and 409 problems."""
    if message:
        schema = COMPAT_PROBLEM_SCHEMA
    else:
        schema = VALIDATION_PROBLEM_SCHEMA if status == 422 else PROBLEM_SCHEMA
    return {
        "description": description or DESCRIPTIONS.get(status, "an error"),
        # A copy: FastAPI puts the very dict in the document, which its users may change.
        "content": {PROBLEM_MEDIA_TYPE: {"schema": copy.deepcopy(schema)}},
    }


def problems(statuses: dict[int, str | None]) -> dict[int | str, Any]:
    """Problem answers by status, each with its description (None: the default one).

    A route with parameters or a body must name 422: FastAPI would otherwise document its own
    ``application/json`` answer, which the API never sends.
    """
    return {status: problem(status, description) for status, description in statuses.items()}


# --- success answers ---------------------------------------------------------------------

#: ``Location`` of a created job, for the answers that carry it.
LOCATION_HEADER = {
    "Location": {"description": "the job's URL", "schema": {"type": "string"}, "required": True}
}
#: ``Retry-After`` while a job is not terminal.
RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "seconds before polling again, while a job is not terminal",
        "schema": {"type": "integer", "minimum": 1},
    }
}


def body(model: Any, description: str, *, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A success answer whose JSON body ``model`` describes."""
    doc: dict[str, Any] = {"description": description, "model": model}
    if headers:
        doc["headers"] = headers
    return doc


def job_body(description: str, *, location: bool = False) -> dict[str, Any]:
    """A success answer carrying one job, with ``Retry-After`` while it is not terminal and
    its ``Location`` when ``location``."""
    headers = {**RETRY_AFTER_HEADER, **(LOCATION_HEADER if location else {})}
    return body(Job, description, headers=headers)


def jobs_body(model: Any, description: str) -> dict[str, Any]:
    """A success answer carrying several jobs, with ``Retry-After`` while one is active."""
    return body(model, description, headers=RETRY_AFTER_HEADER)


# --- success bodies ----------------------------------------------------------------------

Timestamp = Annotated[
    str,
    Field(json_schema_extra={"format": "date-time"}, examples=["2026-11-28T07:15:57.123456Z"]),
]


class _Document(BaseModel):
    """A body the API sends; members may be added in later versions."""

    model_config = ConfigDict(extra="allow")


class Progress(_Document):
    """How far a job has come."""

    current: float
    total: float | None
    message: str | None
    percent: Annotated[float | None, Field(ge=0, le=100)]
    eta_seconds: Annotated[float | None, Field(ge=0)]


class JobError(_Document):
    """The last failure of a job."""

    type: str
    message: str
    traceback: str | None


class AttemptError(_Document):
    """One failed attempt."""

    attempt: int
    type: str
    message: str
    at: Timestamp


class Job(_Document):
    """A job as the v1 API shows it (DESIGN §2)."""

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
    attempt_errors: list[AttemptError]
    attempt: Annotated[int, Field(ge=0)]
    max_attempts: Annotated[int, Field(ge=1)]
    timeout: float | None
    run_at: Timestamp
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    updated_at: Timestamp
    worker: str | None
    version: Annotated[int, Field(ge=1)]
    labels: dict[str, str]


class JobPage(_Document):
    """One page of ``GET /v1/jobs``."""

    items: list[Job]
    next_cursor: Annotated[str | None, Field(description="null on the last page")]


class JobBatch(_Document):
    """The jobs of a batch, in request order."""

    items: list[Job]


class LogLine(_Document):
    """One log line of a job."""

    seq: int
    at: Timestamp
    level: str
    message: str


class LogPage(_Document):
    """One page of a job's log lines, oldest first."""

    items: list[LogLine]
    next_cursor: str | None


class Kind(_Document):
    """A registered task kind."""

    name: str
    queue: str
    max_attempts: int
    timeout: float | None
    isolation: Annotated[
        Literal["thread", "process"],
        Field(description="process: each job runs in a child process that can be killed"),
    ]
    description: str | None
    params_schema: Annotated[dict[str, Any], Field(description="JSON schema of the params")]


class Kinds(_Document):
    """Every registered kind, by name."""

    items: list[Kind]


class QueueCounts(_Document):
    """Jobs of one queue by status."""

    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class Stats(_Document):
    """Counts per queue and status."""

    queues: dict[str, QueueCounts]
    workers: int
    finished_last_minute: int


class Health(_Document):
    """Liveness."""

    health: Literal["ok"]


class Ready(_Document):
    """Readiness."""

    ready: Literal[True]


# --- the original routes -----------------------------------------------------------------


class CompatJob(_Document):
    """A job in the original shape."""

    job_id: Annotated[int | str, Field(description="an integer for integer ids")]
    n_steps: int
    job_status: Literal["QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED"]
    is_cancelled: bool
    step: int


class CompatAnswer(_Document):
    """The original answer to ``/start_job`` and ``/stop_job``."""

    message: str
    job: CompatJob


#: ``/metadata``: jobs keyed by their integer id.
CompatJobs = dict[str, CompatJob]


# --- the document of create_app ----------------------------------------------------------


def install(app: FastAPI, deck: Deck) -> None:
    """Make ``app.openapi()`` share the problem schemas in ``components/schemas`` and name
    the kinds registered on ``deck`` when the document is first built (``kind`` becomes an
    enum; kinds registered later are still accepted, the document does not know them)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()  # FastAPI keeps it in app.openapi_schema
        _name_kinds(document, sorted(kind.name for kind in deck.registry))
        _share_problem_schemas(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _name_kinds(document: dict[str, Any], kinds: list[str]) -> None:
    request = document.get("components", {}).get("schemas", {}).get("JobRequest")
    if request is not None and kinds:
        request["properties"]["kind"]["enum"] = kinds


def _share_problem_schemas(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for answer in operation.get("responses", {}).values():
                media = answer.get("content", {}).get(PROBLEM_MEDIA_TYPE)
                for name, schema in SHARED_SCHEMAS.items():
                    if media is not None and media.get("schema") == schema:
                        components[name] = copy.deepcopy(schema)
                        media["schema"] = {"$ref": f"#/components/schemas/{name}"}
                        break
