"""Hostile input: schemathesis against the app's own ``/openapi.json``.

Requests generated from the OpenAPI document, valid ones and deliberately invalid ones, go to
the real app in-process; every answer must be documented (status code, content type, body
schema, headers), no answer may be a 5xx, invalid input must be refused with a 4xx, and a
405 must name the methods the path has.

The app runs on one SQLite file, without a worker. The store is not what is tested here (the
conformance suite runs every adapter on both backends, and the API reaches them through the
same port), so one backend is enough, and durability is not wanted either (``synchronous``
is off). Without a worker the runs are reproducible, jobs stay where the API puts them
(queued, cancelled, retried, deleted), and no job made from generated params (a million
hour-long steps) keeps running. Two routes need bounds:

- ``GET /v1/jobs/{job_id}/events`` is left out: the stream of a job that never ends (no
  worker) stays open; the streams and their limit per client are tested in ``test_events.py``.
- ``GET /v1/jobs/{job_id}/wait`` would hold a request for a queued job ``timeout`` seconds
  (30 by default, up to 60): a valid timeout is sent as 10 ms instead; an invalid one is sent
  as generated and must answer 422.

The run is bounded and reproducible: derandomized with a fixed seed and no example database,
80 generated examples per operation (plus the boundary cases of the coverage phase), no
deadline per example: about 20 to 40 seconds in all. Stateful runs (chains of requests
following links) are not part of it.
"""

from __future__ import annotations

import httpx
import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck

from jobdeck.api import create_app
from jobdeck.api.render import MAX_WAIT_SECONDS
from jobdeck.deck import Deck
from jobdeck.settings import Settings

pytestmark = [pytest.mark.timeout(120)]

#: The longest wait a generated ``/wait`` request may ask for, in seconds.
SHORT_WAIT = 0.01
WAIT_PATH = "/v1/jobs/{job_id}/wait"

#: The checks that matter here. Left out: positive_data_acceptance (a request the document
#: allows may still be refused for what only the server knows: params that fail the kind's
#: own schema, a cursor it did not make), and the checks about authentication and about
#: resources made by earlier requests (no keys are configured; no stateful runs).
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
]

CONFIG = {
    "seed": 4,
    "generation": {"mode": "all"},
    "checks": {
        "enabled": False,
        **{name: {"enabled": True} for name in CHECKS},
    },
    "operations": [
        {"include-path": "/v1/jobs/{job_id}/events", "enabled": False},
    ],
}


def build_app(database_url: str) -> FastAPI:
    """The app of ``jobdeck serve --no-worker`` on ``database_url``."""
    settings = Settings(database_url=database_url, embedded_worker=False, sqlite_synchronous="OFF")
    return create_app(Deck(settings))


# The document comes from an app that is never started (create_app builds it from the routes
# alone, whatever the database); the requests go to ``served_app``, checked to serve the same.
DOCUMENT = build_app("sqlite:///never-opened.db").openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=schemathesis.Config.from_dict(CONFIG))


@pytest.fixture(scope="module")
def served_app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The app on a fresh SQLite file; schemathesis runs its lifespan around each test."""
    directory = tmp_path_factory.mktemp("schemathesis")
    app = build_app(f"sqlite:///{directory / 'jobdeck.db'}")
    assert app.openapi() == DOCUMENT
    return app


def _short_wait(case: schemathesis.Case) -> dict[str, str] | None:
    """The ``timeout`` to send instead of a valid one (0 to 60, or none: 30), which would hold
    the request that long for a queued job; None to send the case as generated (an invalid
    timeout must answer 422). The case itself is left alone: its checks judge what was drawn.
    """
    if case.operation.path != WAIT_PATH:
        return None
    value = (case.query or {}).get("timeout", "30")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if 0 <= seconds <= MAX_WAIT_SECONDS:
        return {"timeout": str(min(seconds, SHORT_WAIT))}
    return None


@schema.parametrize()
@hypothesis.settings(
    max_examples=80,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_the_api_keeps_its_documented_promises(
    case: schemathesis.Case, served_app: FastAPI
) -> None:
    case.call_and_validate(app=served_app, params=_short_wait(case))


# --- what the run above relies on, checked directly --------------------------------------

ERROR_MEDIA_TYPES = {"application/problem+json"}


def test_every_error_answer_is_documented_as_a_problem() -> None:
    """No 4xx or 5xx of the document is ``application/json`` (FastAPI's default 422), and
    every operation that takes input documents its 422."""
    for path, operations in DOCUMENT["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if status.isdigit() and int(status) >= 400:
                    assert set(answer["content"]) == ERROR_MEDIA_TYPES, (method, path, status)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "422" in operation["responses"], (method, path)


def test_the_document_names_the_registered_kinds() -> None:
    kind = DOCUMENT["components"]["schemas"]["JobRequest"]["properties"]["kind"]
    assert kind["enum"] == ["steps"]


async def test_integers_may_carry_a_zero_fraction(client: httpx.AsyncClient) -> None:
    """JSON Schema counts 3.0 as an integer, and so does the API."""
    response = await client.post(
        "/v1/jobs", json={"kind": "steps", "priority": 3.0, "max_attempts": 2.0}
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert (job["priority"], job["max_attempts"]) == (3, 2)
    assert isinstance(job["priority"], int)


async def test_early_years_keep_four_digits(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", json={"kind": "steps", "id": "early", "run_at": "0005-01-08T00:36:00Z"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["run_at"] == "0005-01-08T00:36:00.000000Z"
    listed = (await client.get("/v1/jobs")).json()["items"]
    assert [job["run_at"] for job in listed] == ["0005-01-08T00:36:00.000000Z"]
