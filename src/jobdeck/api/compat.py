"""The original tutorial's routes (DESIGN §4, second table), a thin layer on the same core.

Original job id ``N`` (a non-negative integer) is v1 job id ``"N"`` of kind ``steps``.
Messages keep the original Japanese wording; errors are problem+json with the same
``message`` member added. Opt-in: ``/`` belongs to the host app when jobdeck is mounted.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BeforeValidator
from starlette.responses import JSONResponse, Response

from jobdeck.deck import Deck
from jobdeck.errors import JobActive, JobNotFound
from jobdeck.model import Job, Status
from jobdeck.store.base import CancelEffect, JobFilter

from . import documents as docs
from .problems import Problem, ProblemRoute, error_problem
from .render import hint_headers, log_change

GREETING = "Hello Flask-API Server!\n"
STEPS_KIND = "steps"
MAX_METADATA = 1000
#: ``/metadata`` looks through at most this many ``steps`` jobs for integer ids.
MAX_METADATA_SCAN = 20_000

_CANONICAL_INT = re.compile(r"0|[1-9][0-9]*")

STATUS_WORDS = {
    Status.QUEUED: "QUEUED",
    Status.RUNNING: "RUNNING",
    Status.SUCCEEDED: "FINISHED",
    Status.FAILED: "FAILED",
    Status.CANCELLED: "CANCELLED",
}


def msg_started(job_id: int) -> str:
    """The original answer to ``/start_job``."""
    return f"ジョブID : {job_id} のジョブを開始しました"


def msg_stopped(job_id: int) -> str:
    """The original answer to ``/stop_job``."""
    return f"ジョブID : {job_id} のジョブを中断しました"


def msg_not_running(job_id: int) -> str:
    """The original answer about an unknown job."""
    return f"ジョブID : {job_id} のジョブは実行されていません"


def msg_already_running(job_id: int) -> str:
    """Starting an id that is queued or running."""
    return f"ジョブID : {job_id} のジョブは既に実行中です"


def msg_already_finished(job_id: int) -> str:
    """Stopping a job that has ended."""
    return f"ジョブID : {job_id} のジョブは既に終了しています"


def compat_job(job: Job) -> dict[str, Any]:
    """A job in the original shape: ``{job_id, n_steps, job_status, is_cancelled, step}``."""
    n_steps = job.params.get("n_steps")
    if not isinstance(n_steps, int) or isinstance(n_steps, bool):
        n_steps = int(job.progress.total or 0)
    return {
        "job_id": int(job.id) if _CANONICAL_INT.fullmatch(job.id) else job.id,
        "n_steps": n_steps,
        "job_status": STATUS_WORDS[job.status],
        "is_cancelled": job.cancel_requested or job.status is Status.CANCELLED,
        "step": int(job.progress.current),
    }


def _not_found(job_id: int, exc: JobNotFound | None = None) -> Problem:
    return error_problem(exc or JobNotFound(str(job_id)), message=msg_not_running(job_id))


def _integer_text(value: Any) -> Any:
    # Query and path values are text; pydantic would take "1.0" for 1. Only digits here.
    if isinstance(value, str) and not _INTEGER_TEXT.fullmatch(value):
        raise ValueError("must be an integer")
    return value


_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,30}")

# The constraints come before the validator, or they are left out of the OpenAPI document.
JobIdPath = Annotated[
    int, Path(ge=0, description="the original integer job id"), BeforeValidator(_integer_text)
]
NSteps = Annotated[
    int, Query(ge=0, le=1_000_000, description="steps to run"), BeforeValidator(_integer_text)
]


def build_compat_router(deck: Deck) -> APIRouter:
    """The original routes: ``/``, ``/metadata``, ``/get_job``, ``/start_job``, ``/stop_job``."""
    router = APIRouter(route_class=ProblemRoute, tags=["compat"])
    store = deck.store

    def answer(job: Job, body: dict[str, Any]) -> JSONResponse:
        return JSONResponse(body, headers=hint_headers([job]))

    @router.get(
        "/",
        name="jobdeck_compat_root",
        summary="Greeting",
        response_model=None,
        responses={200: docs.body(str, "the original greeting")},
    )
    async def root() -> str:
        """The original greeting."""
        return GREETING

    @router.get(
        "/metadata",
        name="jobdeck_compat_metadata",
        summary="Jobs by integer id",
        response_model=None,
        responses={
            200: docs.body(docs.CompatJobs, "jobs of kind steps with integer ids, keyed by id"),
            **docs.problems({422: "limit out of range", 503: None}),
        },
    )
    async def metadata(
        limit: Annotated[int, Query(ge=1, le=MAX_METADATA)] = MAX_METADATA,
    ) -> dict[str, Any]:
        """The newest ``limit`` jobs of kind ``steps`` with integer ids, keyed by id."""
        found: dict[str, Any] = {}
        cursor: str | None = None
        scanned = 0
        while len(found) < limit and scanned < MAX_METADATA_SCAN:
            page = await store.list(JobFilter(kinds=(STEPS_KIND,)), MAX_METADATA, cursor)
            scanned += len(page.items)
            for job in page.items:
                if _CANONICAL_INT.fullmatch(job.id):
                    found[job.id] = compat_job(job)
                    if len(found) >= limit:
                        break
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return found

    @router.get(
        "/get_job/{job_id}",
        name="jobdeck_compat_get_job",
        summary="One job, original shape",
        response_model=None,
        responses={
            200: docs.jobs_body(docs.CompatJob, "the job in the original shape"),
            404: docs.problem(404, "no such job", message=True),
            **docs.problems({422: "not a non-negative integer id", 503: None}),
        },
    )
    async def get_job(job_id: JobIdPath) -> Response:
        """``{job_id, n_steps, job_status, is_cancelled, step}``."""
        job = await store.get(str(job_id))
        if job is None:
            raise _not_found(job_id)
        return answer(job, compat_job(job))

    @router.post(
        "/start_job/{job_id}",
        name="jobdeck_compat_start_job",
        summary="Start a steps job",
        response_model=None,
        responses={
            200: docs.jobs_body(docs.CompatAnswer, "started"),
            409: docs.problem(409, "that id is queued or running", message=True),
            **docs.problems({422: "a bad id, n_steps or step_seconds", 503: None}),
        },
    )
    async def start_job(
        job_id: JobIdPath,
        n_steps: NSteps,
        step_seconds: Annotated[float | None, Query(ge=0, le=3600, allow_inf_nan=False)] = None,
    ) -> Response:
        """Start kind ``steps`` with id ``"N"``; a terminal job of that id is replaced."""
        params: dict[str, Any] = {"n_steps": n_steps}
        if step_seconds is not None:
            params["step_seconds"] = step_seconds
        try:
            spec = deck.build_spec(STEPS_KIND, params, id=str(job_id))
        except ValueError as exc:
            raise Problem(
                422,
                str(exc),
                slug="validation-error",
                title="Request validation failed",
                errors=[{"loc": ["path", "job_id"], "msg": str(exc), "type": "value_error"}],
            ) from exc
        try:
            (entry,) = await store.enqueue([spec], replace_terminal=True)
        except JobActive as exc:
            raise error_problem(exc, message=msg_already_running(job_id)) from exc
        log_change(entry.job, "created")
        return answer(entry.job, {"message": msg_started(job_id), "job": compat_job(entry.job)})

    @router.post(
        "/stop_job/{job_id}",
        name="jobdeck_compat_stop_job",
        summary="Cancel a job",
        response_model=None,
        responses={
            200: docs.jobs_body(docs.CompatAnswer, "stopped, or already ended"),
            404: docs.problem(404, "no such job", message=True),
            **docs.problems({422: "not a non-negative integer id", 503: None}),
        },
    )
    async def stop_job(job_id: JobIdPath) -> Response:
        """Cancel: a queued job at once, a running one at its next step."""
        try:
            job, effect = await store.request_cancel(str(job_id))
        except JobNotFound as exc:
            raise _not_found(job_id, exc) from exc
        if effect is CancelEffect.CANCELLED:
            log_change(job, "cancelled")
        elif effect is CancelEffect.REQUESTED:
            log_change(job, "cancel requested")
        message = (
            msg_already_finished(job_id)
            if (effect is CancelEffect.UNCHANGED and job.is_terminal)
            else msg_stopped(job_id)
        )
        return answer(job, {"message": message, "job": compat_job(job)})

    return router
