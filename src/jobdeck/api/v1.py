"""The v1 REST API (DESIGN §4): ``build_router(deck)``, mountable in any FastAPI app.

Every route speaks to the store through the :class:`~jobdeck.store.base.Store` port and to
the task registry only to validate params; the API never runs job code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import StringConstraints, ValidationError
from starlette.responses import JSONResponse, Response

from jobdeck.deck import Deck
from jobdeck.errors import JobConflict, JobNotFound
from jobdeck.model import JobSpec, Status, format_time
from jobdeck.store.base import CancelEffect, JobFilter

from . import documents as docs
from .events import KEEPALIVE_SECONDS, add_event_routes, watch_until_terminal
from .problems import Problem, ProblemRoute, error_problem, pydantic_problem, validation_problem
from .render import job_response, jobs_response, log_change, prefer_wait
from .schemas import LABEL_FILTER_REGEX, NAME_REGEX, BatchRequest, JobIdPath, JobRequest

MAX_PAGE = 1000
#: At most this many values per repeatable filter of ``GET /v1/jobs``.
MAX_FILTER_VALUES = 100
MAX_CURSOR = 512
#: The placeholder id of the cached ``Location`` path, and at most this many paths cached.
_LOCATION_ID = "jobdeck-location-placeholder-id"
MAX_LOCATIONS = 64

Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR, description="from next_cursor")]


def _label_pairs(labels: Sequence[str]) -> tuple[tuple[str, str], ...]:
    # Each is key:value already (LABEL_FILTER_REGEX); the value may hold colons.
    return tuple((key, value) for key, _, value in (text.partition(":") for text in labels))


def build_router(deck: Deck, *, keepalive_seconds: float = KEEPALIVE_SECONDS) -> APIRouter:
    """The v1 routes of ``deck``: jobs, batches, listing, cancel/retry/delete, wait, events,
    logs, kinds and stats. Errors answer as problem+json wherever the router is mounted."""
    router = APIRouter(route_class=ProblemRoute, tags=["v1"])
    store = deck.store

    # The path of a job by (router, root path): url_for knows the prefix the router is
    # mounted under, but looking it up is slow, so it is done once and split at the id.
    # Routers are not hashable: keyed by id, and the entry keeps the router (so the id
    # cannot be reused by another object meanwhile).
    locations: dict[tuple[int, str], tuple[Any, tuple[str, str] | None]] = {}

    def location(request: Request, job_id: str) -> str:
        scope = request.scope
        provider = scope.get("router") or scope.get("app")
        key = (id(provider), scope.get("app_root_path", scope.get("root_path", "")))
        entry = locations.get(key)
        if entry is None or entry[0] is not provider:
            path = request.url_for("jobdeck_get_job", job_id=_LOCATION_ID).path
            before, found, after = path.partition(_LOCATION_ID)
            entry = (provider, (before, after) if found and _LOCATION_ID not in after else None)
            if len(locations) < MAX_LOCATIONS:
                locations[key] = entry
        parts = entry[1]
        if parts is None:  # pragma: no cover - a prefix that holds the placeholder
            return request.url_for("jobdeck_get_job", job_id=job_id).path
        return f"{parts[0]}{job_id}{parts[1]}"

    @router.post(
        "/v1/jobs",
        name="jobdeck_create_job",
        status_code=202,
        summary="Start a job",
        response_model=None,
        responses={
            200: docs.job_body(
                "the job exists already with this spec, or ended within Prefer: wait",
                location=True,
            ),
            202: docs.job_body("stored; it runs in the background", location=True),
            **docs.problems(
                {
                    400: "the body is not UTF-8 text",
                    409: "the id belongs to a job with another spec",
                    413: "the body or the params are too large",
                    422: "unknown kind, bad params or a malformed request",
                    503: None,
                }
            ),
        },
    )
    async def create_job(request: Request, body: Annotated[JobRequest, Body()]) -> Response:
        """Store a job and answer at once: 202 + the job + ``Location``. The same ``id`` with
        the same spec again answers 200 with the existing job. Honours ``Prefer: wait=N``."""
        spec = body.to_spec(deck)
        wait = prefer_wait(request.headers.getlist("prefer"))
        headers = {"Location": location(request, spec.id)}
        if wait is None:
            (entry,) = await store.enqueue([spec])
            if entry.created:
                log_change(entry.job, "created")
            job = entry.job
        else:
            # Subscribe before storing, so that no change between the two goes unnoticed.
            with store.hub.subscribe(spec.id) as subscription:
                (entry,) = await store.enqueue([spec])
                if entry.created:
                    log_change(entry.job, "created")
                latest = await watch_until_terminal(store, subscription, entry.job, wait)
                job = latest if latest is not None else entry.job
                headers["Preference-Applied"] = f"wait={wait}"
        status = 202 if entry.created and not job.is_terminal else 200
        return job_response(job, status, headers)

    @router.post(
        "/v1/jobs:batch",
        name="jobdeck_create_jobs",
        status_code=202,
        summary="Start up to 1000 jobs, all or none",
        response_model=None,
        responses={
            200: docs.jobs_body(docs.JobBatch, "every job existed already with the same spec"),
            202: docs.jobs_body(docs.JobBatch, "stored; they run in the background"),
            **docs.problems(
                {
                    400: "the body is not UTF-8 text",
                    409: "an entry's id belongs to a job with another spec (see index)",
                    413: "the body or an entry's params are too large (see index)",
                    422: "an entry is not valid (see index)",
                    503: None,
                }
            ),
        },
    )
    async def create_jobs(body: Annotated[BatchRequest, Body()]) -> Response:
        """Store every job or none: 202 + ``{"items": [job, ...]}`` in request order
        (200 when every job existed already with the same spec)."""
        specs: list[JobSpec] = []
        for index, entry in enumerate(body.jobs):
            loc = ("body", "jobs", index)
            try:
                request = JobRequest.model_validate(entry)
            except ValidationError as exc:
                problem = pydantic_problem(exc, prefix=loc, index=index)
                problem.detail = f"jobs[{index}]: {problem.detail}"
                raise problem from None
            try:
                specs.append(request.to_spec(deck, loc=loc, index=index))
            except Problem as problem:
                problem.detail = f"jobs[{index}]: {problem.detail}"
                raise
        try:
            entries = await store.enqueue(specs)
        except JobConflict as exc:
            if exc.index is None:  # pragma: no cover - the store names the entry
                raise
            problem = error_problem(exc, index=exc.index)
            problem.detail = f"jobs[{exc.index}]: {problem.detail}"
            raise problem from exc
        for entry in entries:
            if entry.created:
                log_change(entry.job, "created")
        jobs = [entry.job for entry in entries]
        status = 202 if any(entry.created for entry in entries) else 200
        return jobs_response({"items": [job.to_dict() for job in jobs]}, jobs, status)

    @router.get(
        "/v1/jobs",
        name="jobdeck_list_jobs",
        summary="List jobs, newest first",
        response_model=None,
        responses={
            200: docs.jobs_body(docs.JobPage, "one page of jobs"),
            **docs.problems({422: "a filter, the limit or the cursor is not valid", 503: None}),
        },
    )
    async def list_jobs(
        status: Annotated[list[Status] | None, Query(max_length=MAX_FILTER_VALUES)] = None,
        kind: Annotated[list[str] | None, Query(max_length=MAX_FILTER_VALUES)] = None,
        queue: Annotated[list[str] | None, Query(max_length=MAX_FILTER_VALUES)] = None,
        label: Annotated[
            list[Annotated[str, StringConstraints(pattern=LABEL_FILTER_REGEX)]] | None,
            Query(max_length=MAX_FILTER_VALUES, description="key:value, repeatable"),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        cursor: Cursor = None,
    ) -> Response:
        """``{"items": [job, ...], "next_cursor"}``; ``next_cursor`` is null on the last page.
        Filters of one name are ORed, filters of different names ANDed."""
        flt = JobFilter(
            statuses=tuple(status or ()),
            kinds=tuple(kind or ()),
            queues=tuple(queue or ()),
            labels=_label_pairs(label or ()),
        )
        try:
            page = await store.list(flt, limit, cursor)
        except ValueError as exc:
            raise _bad_cursor(exc) from exc
        return jobs_response(
            {"items": [job.to_dict() for job in page.items], "next_cursor": page.next_cursor},
            page.items,
        )

    @router.get(
        "/v1/jobs/{job_id}",
        name="jobdeck_get_job",
        summary="One job",
        response_model=None,
        responses={
            200: docs.job_body("the job"),
            **docs.problems({404: None, 422: "not a job id", 503: None}),
        },
    )
    async def get_job(job_id: JobIdPath) -> Response:
        """The job, with ``Retry-After`` while it is not terminal."""
        job = await store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job_response(job)

    @router.post(
        "/v1/jobs/{job_id}/cancel",
        name="jobdeck_cancel_job",
        summary="Cancel a job",
        response_model=None,
        responses={
            200: docs.job_body("cancelled (it was queued), or already terminal"),
            202: docs.job_body("the running job was asked to stop"),
            **docs.problems({404: None, 422: "not a job id", 503: None}),
        },
    )
    async def cancel_job(job_id: JobIdPath) -> Response:
        """A queued job is cancelled at once (200), a running one asked to stop (202);
        a terminal one stays as it is (200)."""
        job, effect = await store.request_cancel(job_id)
        if effect is CancelEffect.CANCELLED:
            log_change(job, "cancelled")
        elif effect is CancelEffect.REQUESTED:
            log_change(job, "cancel requested")
        # A running job asked to stop again is still being stopped: 202 as the first time.
        stopping = effect is CancelEffect.REQUESTED or (
            job.status is Status.RUNNING and job.cancel_requested
        )
        return job_response(job, 202 if stopping else 200)

    @router.post(
        "/v1/jobs/{job_id}/retry",
        name="jobdeck_retry_job",
        status_code=202,
        summary="Run a failed or cancelled job again",
        response_model=None,
        responses={
            202: docs.job_body("queued to run now"),
            **docs.problems(
                {
                    404: None,
                    409: "the job is queued, running or succeeded",
                    422: "not a job id",
                    503: None,
                }
            ),
        },
    )
    async def retry_job(job_id: JobIdPath) -> Response:
        """Queue the job to run now, keeping its history: 202 + the job."""
        job = await store.retry(job_id)
        log_change(job, "retried")
        return job_response(job, 202)

    @router.delete(
        "/v1/jobs/{job_id}",
        name="jobdeck_delete_job",
        status_code=204,
        summary="Forget a terminal job",
        response_model=None,
        responses={
            204: {"description": "deleted, with its logs"},
            **docs.problems(
                {404: None, 409: "the job is queued or running", 422: "not a job id", 503: None}
            ),
        },
    )
    async def delete_job(job_id: JobIdPath) -> Response:
        """Delete the job and its logs: 204."""
        job = await store.get(job_id)
        await store.delete(job_id)
        if job is not None:
            log_change(job, "deleted")
        return Response(status_code=204)

    @router.get(
        "/v1/jobs/{job_id}/logs",
        name="jobdeck_job_logs",
        summary="A job's log lines, oldest first",
        response_model=None,
        responses={
            200: docs.body(docs.LogPage, "one page of log lines"),
            **docs.problems({404: None, 422: "not a job id, or a bad cursor or limit", 503: None}),
        },
    )
    async def job_logs(
        job_id: JobIdPath,
        cursor: Cursor = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Response:
        """``{"items": [{"seq", "at", "level", "message"}, ...], "next_cursor"}``."""
        try:
            page = await store.logs(job_id, cursor, limit)
        except ValueError as exc:
            raise _bad_cursor(exc) from exc
        items = [
            {
                "seq": line.seq,
                "at": format_time(line.at),
                "level": line.level,
                "message": line.message,
            }
            for line in page.items
        ]
        return JSONResponse({"items": items, "next_cursor": page.next_cursor})

    add_event_routes(router, deck, keepalive_seconds=keepalive_seconds)

    @router.get(
        "/v1/kinds",
        name="jobdeck_kinds",
        summary="Registered task kinds",
        response_model=None,
        responses={200: docs.body(docs.Kinds, "every registered kind, by name")},
    )
    async def kinds() -> dict[str, Any]:
        """``{"items": [{"name", "queue", "max_attempts", "timeout", "isolation",
        "description", "params_schema"}, ...]}``, by name."""
        items = [
            {
                "name": kind.name,
                "queue": kind.queue,
                "max_attempts": kind.max_attempts,
                "timeout": kind.timeout,
                "isolation": kind.isolation,
                "description": kind.description,
                "params_schema": kind.params_schema(),
            }
            for kind in sorted(deck.registry, key=lambda kind: kind.name)
        ]
        return {"items": items}

    @router.get(
        "/v1/stats",
        name="jobdeck_stats",
        summary="Counts per queue and status",
        response_model=None,
        responses={200: docs.body(docs.Stats, "current counts"), **docs.problems({503: None})},
    )
    async def stats() -> dict[str, Any]:
        """``{"queues": {name: {status: n}}, "workers": n, "finished_last_minute": n}``."""
        current = await store.stats()
        return {
            "queues": current.queues,
            "workers": current.workers,
            "finished_last_minute": current.finished_last_minute,
        }

    return router


def _bad_cursor(exc: ValueError) -> Problem:
    return validation_problem(
        [{"loc": ["query", "cursor"], "msg": f"invalid cursor: {exc}", "type": "cursor"}],
        detail="invalid cursor",
    )


__all__ = ["NAME_REGEX", "build_router"]
