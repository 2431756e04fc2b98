"""The original tutorial's routes: /, /metadata, /get_job, /start_job, /stop_job."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from jobdeck.api import create_app
from jobdeck.deck import Deck

pytestmark = pytest.mark.timeout(30)

Eventually = Callable[..., Awaitable[Any]]
ProblemCheck = Callable[[httpx.Response, int], dict[str, Any]]


def get_job_shape(body: dict) -> None:
    assert set(body) == {"job_id", "n_steps", "job_status", "is_cancelled", "step"}
    assert isinstance(body["job_id"], int)
    assert isinstance(body["n_steps"], int)
    assert isinstance(body["step"], int)
    assert body["job_status"] in {"QUEUED", "RUNNING", "FINISHED", "FAILED", "CANCELLED"}


async def compat_status(client: httpx.AsyncClient, job_id: int) -> str:
    return (await client.get(f"/get_job/{job_id}")).json()["job_status"]


async def test_greeting(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.json() == "Hello Flask-API Server!\n"
    assert (await client.get("/health")).json() == {"health": "ok"}


async def test_unknown_ids_are_404_with_the_original_message(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    for response in (await client.get("/get_job/5"), await client.post("/stop_job/5")):
        document = problem(response, 404)
        assert document["message"] == "ジョブID : 5 のジョブは実行されていません"


async def test_start_job_stores_a_steps_job_with_the_integer_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/start_job/7?n_steps=3&step_seconds=0.5")
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "ジョブID : 7 のジョブを開始しました"
    assert body["job"] == {
        "job_id": 7,
        "n_steps": 3,
        "job_status": "QUEUED",
        "is_cancelled": False,
        "step": 0,
    }
    assert response.headers["retry-after"] == "1"
    v1 = (await client.get("/v1/jobs/7")).json()  # original id N is v1 id "N"
    assert (v1["kind"], v1["params"]) == ("steps", {"n_steps": 3, "step_seconds": 0.5})
    fetched = await client.get("/get_job/007")
    assert fetched.json() == body["job"]
    get_job_shape(fetched.json())


async def test_starting_an_active_id_is_409(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    assert (await client.post("/start_job/1?n_steps=5")).status_code == 200
    document = problem(await client.post("/start_job/1?n_steps=5"), 409)
    assert document["message"] == "ジョブID : 1 のジョブは既に実行中です"
    assert "index" not in document


async def test_a_running_job_is_stopped_and_stays_cancelled(
    wclient: httpx.AsyncClient, deck: Deck, eventually: Eventually
) -> None:
    await wclient.post("/start_job/2?n_steps=1000&step_seconds=0.01")

    async def stepping() -> bool:
        body = (await wclient.get("/get_job/2")).json()
        return body["job_status"] == "RUNNING" and body["step"] >= 1

    await eventually(stepping, what="job 2 stepping")
    response = await wclient.post("/stop_job/2")
    assert response.status_code == 200
    assert response.json()["message"] == "ジョブID : 2 のジョブを中断しました"
    assert response.json()["job"]["is_cancelled"] is True

    async def cancelled() -> bool:
        return await compat_status(wclient, 2) == "CANCELLED"

    await eventually(cancelled, what="job 2 cancelled")

    async def worker_idle() -> bool:
        return deck.worker is not None and not deck.worker.runs

    await eventually(worker_idle, what="the worker let go of job 2")
    body = (await wclient.get("/get_job/2")).json()
    assert body["job_status"] == "CANCELLED"
    assert body["is_cancelled"] is True
    assert 1 <= body["step"] < 1000

    again = await wclient.post("/stop_job/2")
    assert again.status_code == 200
    assert again.json() == {"message": "ジョブID : 2 のジョブは既に終了しています", "job": body}


async def test_stopping_a_queued_job_cancels_it_at_once(client: httpx.AsyncClient) -> None:
    await client.post("/start_job/3?n_steps=5")
    response = await client.post("/stop_job/3")
    assert response.json()["message"] == "ジョブID : 3 のジョブを中断しました"
    assert response.json()["job"]["job_status"] == "CANCELLED"
    assert "retry-after" not in response.headers


async def test_a_finished_id_runs_anew(wclient: httpx.AsyncClient, eventually: Eventually) -> None:
    assert (await wclient.post("/start_job/4?n_steps=2&step_seconds=0")).status_code == 200

    async def finished() -> bool:
        return await compat_status(wclient, 4) == "FINISHED"

    await eventually(finished, what="first run finished")
    first = (await wclient.get("/v1/jobs/4")).json()

    response = await wclient.post("/start_job/4?n_steps=3&step_seconds=0")
    assert response.status_code == 200
    assert response.json()["job"]["job_status"] in ("QUEUED", "RUNNING")
    assert response.json()["job"]["n_steps"] == 3
    await eventually(finished, what="second run finished")
    second = (await wclient.get("/v1/jobs/4")).json()
    assert second["created_at"] > first["created_at"]
    assert (await wclient.get("/get_job/4")).json()["step"] == 3


async def test_a_cancelled_id_runs_anew(client: httpx.AsyncClient) -> None:
    await client.post("/start_job/5?n_steps=5")
    await client.post("/stop_job/5")
    response = await client.post("/start_job/5?n_steps=6")
    assert response.status_code == 200
    assert response.json()["job"]["job_status"] == "QUEUED"
    assert response.json()["job"]["is_cancelled"] is False


async def test_metadata_lists_integer_steps_jobs_newest_first(client: httpx.AsyncClient) -> None:
    for job_id in (3, 10, 0):
        await client.post(f"/start_job/{job_id}?n_steps={job_id}")
    for spec in (
        {"kind": "steps", "id": "abc"},
        {"kind": "steps", "id": "07"},  # not canonical: not an original id
        {"kind": "add", "id": "11", "params": {"a": 1, "b": 1}},  # not a steps job
        {"kind": "steps", "id": "12"},  # a v1 job with an integer id is the same job
    ):
        assert (await client.post("/v1/jobs", json=spec)).status_code == 202
    await client.post("/stop_job/10")

    body = (await client.get("/metadata")).json()
    assert list(body) == ["12", "0", "10", "3"]
    assert body["10"]["job_status"] == "CANCELLED"
    assert body["3"]["n_steps"] == 3
    for job in body.values():
        get_job_shape(job)
    assert list((await client.get("/metadata?limit=2")).json()) == ["12", "0"]


async def test_metadata_of_nothing_and_bad_limits(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    assert (await client.get("/metadata")).json() == {}
    for bad in ("0", "1001", "x"):
        problem(await client.get(f"/metadata?limit={bad}"), 422)


async def test_compat_routes_are_optional(deck: Deck) -> None:
    app = create_app(deck, compat=False)
    async with (
        deck.running(worker=False),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        assert (await client.get("/get_job/1")).status_code == 404
        assert (await client.post("/start_job/1?n_steps=1")).status_code == 404
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/v1/jobs")).status_code == 200
