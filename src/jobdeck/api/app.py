"""``create_app(deck)``: the FastAPI app of ``jobdeck serve``.

It serves the v1 API (``deck.router``), the original routes (opt-out with ``compat=False``),
``/health`` and ``/ready``; every error answers as problem+json; request bodies are bounded
by ``JOBDECK_MAX_BODY_BYTES``; ``deck.lifespan`` opens the store and runs the embedded worker.
"""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter, FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jobdeck.deck import Deck

from . import documents as docs
from .compat import build_compat_router
from .problems import Problem, ProblemRoute, install_problem_handlers


class BodyTooLarge(StarletteHTTPException):
    """A request body over the limit (raised while the body is read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body exceeds {limit} bytes")


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before the app runs; a body
    streamed without one is counted as it is read, and reading past the limit raises
    :class:`BodyTooLarge` (an ``HTTPException``, so the app answers it as a 413 problem).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request with its body bounded."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(413, f"the request body exceeds {self.max_bytes} bytes")
        problem.headers["Connection"] = "close"
        await problem.response()(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def build_probe_router(deck: Deck) -> APIRouter:
    """``GET /health`` (liveness) and ``GET /ready`` (the store answers)."""
    router = APIRouter(route_class=ProblemRoute, tags=["probes"])

    @router.get(
        "/health",
        name="jobdeck_health",
        summary="Liveness",
        response_model=None,
        responses={200: docs.body(docs.Health, "the process serves")},
    )
    async def health() -> dict[str, str]:
        """Always ``{"health": "ok"}`` while the process serves."""
        return {"health": "ok"}

    @router.get(
        "/ready",
        name="jobdeck_ready",
        summary="Readiness: the store answers",
        response_model=None,
        responses={200: docs.body(docs.Ready, "the store answers"), **docs.problems({503: None})},
    )
    async def ready() -> Response:
        """``{"ready": true}``, or a 503 problem when the store does not answer."""
        try:
            await deck.store.ping()
        except Exception as exc:  # any failure of the store means "not ready"
            return Problem(
                503,
                f"the store does not answer: {exc}",
                slug="store-unavailable",
                title="Store unavailable",
                headers={"Retry-After": "5"},
            ).response()
        return JSONResponse({"ready": True})

    return router


def _version() -> str:
    try:
        return metadata.version("jobdeck")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


def create_app(deck: Deck | None = None, *, compat: bool = True) -> FastAPI:
    """The jobdeck app for ``deck`` (a :class:`Deck` configured from the environment when
    none is given); ``compat`` adds the original tutorial's routes."""
    deck = deck if deck is not None else Deck()
    app = FastAPI(title="jobdeck", version=_version(), lifespan=deck.lifespan)
    app.state.deck = deck
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=deck.settings.max_body_bytes)
    app.include_router(build_probe_router(deck))
    app.include_router(deck.router)
    if compat:
        app.include_router(build_compat_router(deck))
    docs.install(app, deck)
    return app
