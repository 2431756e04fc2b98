"""Errors as ``application/problem+json`` (RFC 9457).

Every error answer of the API is a problem document ``{"type", "title", "status", "detail"}``,
plus ``errors`` (``[{"loc", "msg", "type"}]``) for validation failures and a few extension
members (``job_id``, ``index``, ``message``) where they help a client.

Two ways in, so that the routes answer the same whether they are served by
:func:`jobdeck.api.create_app` or mounted into a host app (``app.include_router(deck.router)``):

- :class:`ProblemRoute`, the route class of every jobdeck router, turns the errors of its
  routes (request validation, ``HTTPException``, :class:`Problem`, jobdeck errors) into
  problem answers itself;
- :func:`install_problem_handlers` does the same for a whole app, including what no route
  sees (unknown paths, wrong methods, unexpected failures).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from jobdeck.errors import (
    InvalidParams,
    JobActive,
    JobConflict,
    JobdeckError,
    JobIdTaken,
    JobNotFound,
    SchemaTooNew,
    StoreUnavailable,
    TooLarge,
    UnknownKind,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
#: Problem types of jobdeck are URNs under this prefix, e.g. ``urn:jobdeck:problem:job-not-found``.
TYPE_PREFIX = "urn:jobdeck:problem:"
#: The largest number of validation errors one problem lists.
MAX_ERRORS = 50

Loc = tuple[str | int, ...]


class ProblemResponse(JSONResponse):
    """A JSON response with the ``application/problem+json`` media type."""

    media_type = PROBLEM_MEDIA_TYPE


class Problem(Exception):
    """An error answer. Raise it in a route, or build one and call :meth:`response`.

    ``slug`` names the problem type (``urn:jobdeck:problem:<slug>``); without one the type
    is ``about:blank`` and the title the HTTP status phrase, as RFC 9457 asks.
    """

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        slug: str | None = None,
        title: str | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
        **members: Any,
    ) -> None:
        super().__init__(detail or title or HTTPStatus(status).phrase)
        self.status = status
        self.type = f"{TYPE_PREFIX}{slug}" if slug else "about:blank"
        self.title = title if title is not None and slug else HTTPStatus(status).phrase
        self.detail = detail if detail is not None else self.title
        self.errors = [dict(e) for e in errors] if errors is not None else None
        self.headers = dict(headers or {})
        self.members = members

    def to_dict(self) -> dict[str, Any]:
        """The problem document."""
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.members)
        return body

    def response(self) -> ProblemResponse:
        """The answer to send."""
        return ProblemResponse(self.to_dict(), status_code=self.status, headers=self.headers)


# --- building problems -------------------------------------------------------------------


def clean_errors(errors: Iterable[Mapping[str, Any]], prefix: Loc = ()) -> list[dict[str, Any]]:
    """Validation errors as ``{"loc", "msg", "type"}``, without the (maybe huge) input."""
    cleaned = []
    for error in errors:
        loc = [*prefix, *(part if isinstance(part, int) else str(part) for part in error["loc"])]
        cleaned.append({"loc": loc, "msg": str(error["msg"]), "type": str(error["type"])})
        if len(cleaned) >= MAX_ERRORS:
            break
    return cleaned


def _summary(errors: Sequence[Mapping[str, Any]]) -> str:
    if not errors:
        return "the request is not valid"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def validation_problem(
    errors: Sequence[Mapping[str, Any]],
    *,
    detail: str | None = None,
    prefix: Loc = (),
    **members: Any,
) -> Problem:
    """A 422 problem listing validation errors."""
    cleaned = clean_errors(errors, prefix)
    return Problem(
        422,
        detail if detail is not None else _summary(cleaned),
        slug="validation-error",
        title="Request validation failed",
        errors=cleaned,
        **members,
    )


def pydantic_problem(exc: ValidationError, *, prefix: Loc = (), **members: Any) -> Problem:
    """A 422 problem from a pydantic :class:`ValidationError`."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return validation_problem(errors, prefix=prefix, **members)  # type: ignore[arg-type]


def error_problem(exc: JobdeckError, *, loc: Loc = ("body",), **members: Any) -> Problem:
    """The problem answering a jobdeck error.

    ``loc`` is where the offending document sits in the request (used for the ``errors`` of
    an unknown kind or invalid params, e.g. ``("body", "jobs", 3)`` in a batch).
    """
    if isinstance(exc, JobNotFound):
        return Problem(
            404,
            str(exc),
            slug="job-not-found",
            title="Job not found",
            job_id=exc.job_id,
            **members,
        )
    if isinstance(exc, JobConflict):
        if isinstance(exc, JobIdTaken):
            slug, title = "job-id-taken", "Job id taken"
        elif isinstance(exc, JobActive):
            slug, title = "job-active", "Job is active"
        else:
            slug, title = "job-conflict", "Job conflict"
        return Problem(409, str(exc), slug=slug, title=title, job_id=exc.job_id, **members)
    if isinstance(exc, UnknownKind):
        errors = [{"loc": [*loc, "kind"], "msg": str(exc), "type": "unknown_kind"}]
        return Problem(
            422, str(exc), slug="unknown-kind", title="Unknown job kind", errors=errors, **members
        )
    if isinstance(exc, InvalidParams):
        errors = clean_errors(exc.errors, loc)
        return Problem(
            422,
            f"{exc}: {_summary(errors)}",
            slug="invalid-params",
            title="Invalid params",
            errors=errors,
            **members,
        )
    if isinstance(exc, TooLarge):
        return Problem(413, str(exc), slug="too-large", title="Content too large", **members)
    if isinstance(exc, StoreUnavailable | SchemaTooNew):
        return Problem(
            503,
            str(exc),
            slug="store-unavailable",
            title="Store unavailable",
            headers={"Retry-After": "5"},
            **members,
        )
    return Problem(400, str(exc), slug="bad-request", title="Bad request", **members)


def http_problem(exc: StarletteHTTPException) -> Problem:
    """The problem answering an ``HTTPException`` (unknown route, wrong method, ...)."""
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return Problem(exc.status_code, detail, headers=exc.headers)


def problem_for(exc: Exception) -> Problem | None:
    """The problem answering ``exc``, or None when it is not an error the API expects."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, RequestValidationError):
        return validation_problem(exc.errors())
    if isinstance(exc, StarletteHTTPException):
        return http_problem(exc)
    if isinstance(exc, JobdeckError):
        return error_problem(exc)
    return None


def _bodyless(problem: Problem) -> Response | None:
    # 1xx, 204 and 304 carry no body; an HTTPException may use them.
    if problem.status < 200 or problem.status in (204, 304):
        return Response(status_code=problem.status, headers=problem.headers)
    return None


def problem_response(exc: Exception) -> Response | None:
    """The answer to ``exc`` as problem+json, or None when ``exc`` is unexpected."""
    problem = problem_for(exc)
    if problem is None:
        return None
    return _bodyless(problem) or problem.response()


# --- wiring ------------------------------------------------------------------------------


class ProblemRoute(APIRoute):
    """A route whose errors answer as problem+json, wherever the router is mounted."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The handler of :class:`APIRoute`, with expected errors turned into problems."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except (Problem, RequestValidationError, StarletteHTTPException, JobdeckError) as exc:
                response = problem_response(exc)
                assert response is not None
                return response

        return handle


async def _handle(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StarletteHTTPException) and exc.status_code == 405:
        methods = allowed_methods(request)
        if methods:
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(methods)}
    response = problem_response(exc)
    if response is None:  # pragma: no cover - only registered for expected errors
        raise exc
    return response


def allowed_methods(request: Request) -> list[str]:
    """The methods the app's OpenAPI document gives the request's path.

    Starlette's 405 names the methods of the first route matching the path only, while
    ``GET`` and ``POST /v1/jobs`` (say) are two routes.
    """
    path = request.url.path.removeprefix(request.scope.get("root_path", "")) or "/"
    methods: set[str] = set()
    for template, operations in request.app.openapi().get("paths", {}).items():
        if _template_regex(template).fullmatch(path):
            methods.update(method.upper() for method in operations if method in _METHODS)
    return sorted(methods)


_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.lru_cache(maxsize=256)
def _template_regex(template: str) -> re.Pattern[str]:
    # "/v1/jobs/{job_id}/wait" -> "/v1/jobs/[^/]+/wait"
    parts = re.split(r"(\{[^}]*\})", template)
    return re.compile(
        "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    )


async def _handle_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware sends this, then re-raises for the server to log.
    return Problem(500, "an unexpected error occurred").response()


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error answer of ``app`` problem+json (unknown routes, 405, validation,
    jobdeck errors, and a 500 for anything unexpected)."""
    for exc_class in (Problem, RequestValidationError, StarletteHTTPException, JobdeckError):
        app.add_exception_handler(exc_class, _handle)
    app.add_exception_handler(Exception, _handle_unexpected)
