"""Cancels against jobs that move between ``running`` and ``queued`` all the time.

Regression test of a lost cancel on PostgreSQL (fixed in c873709): ``request_cancel`` ran
three statements (cancel if queued, ask to stop if running, read the job) without locking
the row, so a job that a retry or a rescue moved from ``running`` to ``queued`` between
them was neither cancelled nor asked to stop. The client was told 200 with the job still
``queued`` (or 202 with no stop requested), and the job went on to succeed.

Here ``jobdeck serve`` (API and embedded worker, in one busy event loop) runs ``flaky`` jobs
that fail at once and are retried after a backoff of about a millisecond, so each one
crosses ``running`` -> ``queued`` dozens of times a second. Many clients at once cancel
such jobs at random moments; each cancelled job is retried (queued again) and cancelled
again, and a job that ended by itself is replaced by a new one. Every cancel answer must
keep its promise (DESIGN §3, §4):

- 202 (a running job asked to stop) or 200 showing the job ``cancelled``: the job ends
  ``cancelled``, never ``succeeded``;
- any other 200 shows a job that had already ended by itself, and it stays that way;
- no answer shows a job still ``queued`` or ``running`` without a stop requested.

With the row lock of c873709 taken out of ``request_cancel``, about one cancel in ten
breaks its promise here on PostgreSQL (a 200 showing the job ``queued``, which then
succeeds). SQLite runs one write transaction at a time, so it never had the race; the test
runs there too, as the same promise holds on every backend.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from e2e.database import DatabaseReader
from e2e.processes import Launcher, wait_until

from .load import task_env

pytestmark = pytest.mark.e2e

#: Jobs being cancelled at any moment (one client task each).
SLOTS = 40
#: The clients cancel for this long at least, then until each kind of answer below came
#: ``ENOUGH_ANSWERS`` times (a busy machine answers fewer cancels a second), or at most
#: ``MAX_HAMMER_SECONDS``.
MIN_HAMMER_SECONDS = 3.0
MAX_HAMMER_SECONDS = 20.0
ENOUGH_ANSWERS = 60
#: Each job fails this many times (drawn per job), then succeeds, unless cancelled first.
FAIL_TIMES = (100, 300)
#: Longest pause before a cancel: spreads the cancels over the jobs' retry cycles.
MAX_PAUSE_SECONDS = 0.01
WAIT_SECONDS = 15

SETTINGS = {
    "JOBDECK_CONCURRENCY": "50",
    "JOBDECK_BACKOFF_BASE_SECONDS": "0.001",
    "JOBDECK_BACKOFF_MAX_SECONDS": "0.002",
    # The one event loop of serve is kept very busy here: no lease should run out.
    "JOBDECK_LEASE_SECONDS": "5",
}


@dataclass
class Tally:
    """What the clients were told, and every broken promise."""

    cancels: int = 0
    requested: int = 0  # 202: a running job asked to stop
    cancelled_at_once: int = 0  # 200 showing the job cancelled
    already_ended: int = 0  # 200 showing a job that ended by itself
    retries: int = 0
    jobs: int = 0
    violations: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def over(self) -> bool:
        """Whether the clients have hammered long enough."""
        elapsed = time.monotonic() - self.started
        enough = min(self.requested, self.cancelled_at_once) >= ENOUGH_ANSWERS
        return elapsed >= MAX_HAMMER_SECONDS or (elapsed >= MIN_HAMMER_SECONDS and enough)


def job_line(job: dict[str, Any]) -> str:
    """The fields of a job that matter here, for messages."""
    keys = ("id", "status", "cancel_requested", "attempt", "max_attempts", "version")
    return str({k: job.get(k) for k in keys})


async def wait_terminal(http: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    """The job once it is terminal (long-polled), or as it is after ``WAIT_SECONDS``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        answer = await http.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 5})
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        if job["status"] in {"succeeded", "failed", "cancelled"} or time.monotonic() > deadline:
            return job


async def churn(http: httpx.AsyncClient, slot: int, tally: Tally) -> None:
    """Cancel, retry and cancel again one job after another until the tally is over."""
    rng = random.Random(slot)
    n = 0
    while not tally.over():
        job_id = f"race-{slot:02d}-{n:03d}"
        n += 1
        spec = {
            "id": job_id,
            "kind": "flaky",
            "params": {"fail_times": rng.randint(*FAIL_TIMES)},
            "max_attempts": 1000,
        }
        answer = await http.post("/v1/jobs", json=spec)
        assert answer.status_code == 202, answer.text
        tally.jobs += 1
        while True:
            await asyncio.sleep(rng.uniform(0, MAX_PAUSE_SECONDS))
            answer = await http.post(f"/v1/jobs/{job_id}/cancel")
            assert answer.status_code in {200, 202}, answer.text
            told = answer.json()
            tally.cancels += 1
            said = f"cancel answered {answer.status_code} {job_line(told)}"
            if answer.status_code == 200 and told["status"] in {"succeeded", "failed"}:
                tally.already_ended += 1
                final = await wait_terminal(http, job_id)
                if final["status"] != told["status"]:
                    tally.violations.append(f"{said}, then the job was {job_line(final)}")
                break  # this job is done: the next one
            if answer.status_code == 202:
                tally.requested += 1
            elif told["status"] == "cancelled":
                tally.cancelled_at_once += 1
            else:
                # A 200 for a job neither cancelled nor ended: the cancel was lost.
                final = await wait_terminal(http, job_id)
                tally.violations.append(f"{said}; the job ended {job_line(final)}")
                break
            if answer.status_code == 202 and not told["cancel_requested"]:
                tally.violations.append(f"{said}: 202 without a stop requested")
            final = await wait_terminal(http, job_id)
            if final["status"] != "cancelled":
                tally.violations.append(f"{said}; the job ended {job_line(final)}")
                break
            if tally.over():
                return  # the last job stays cancelled
            answer = await http.post(f"/v1/jobs/{job_id}/retry")
            assert answer.status_code == 202, answer.text
            tally.retries += 1


async def hammer(base_url: str) -> Tally:
    """Run the clients of every slot together until they have hammered long enough."""
    tally = Tally()
    limits = httpx.Limits(max_connections=SLOTS, max_keepalive_connections=SLOTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as http:
        await asyncio.gather(*(churn(http, slot, tally) for slot in range(SLOTS)))
    return tally


@pytest.mark.timeout(90)
def test_every_accepted_cancel_ends_cancelled_while_jobs_are_retried(
    cluster: Launcher, db: DatabaseReader
) -> None:
    """Thousands of cancels, each landing at a random moment of a job's fail-retry cycle:
    every cancel the API accepted ends ``cancelled`` (never ``succeeded``), every other
    answer shows a job that had ended by itself, and nothing is left running."""
    cluster.settings.update(SETTINGS)
    serve = cluster.serve(env=task_env())
    assert serve.base_url is not None

    tally = asyncio.run(hammer(serve.base_url))

    assert not tally.violations, (
        f"{len(tally.violations)} of {tally.cancels} cancels broke their promise:\n"
        + "\n".join(tally.violations[:20])
    )
    # The race was run: both answers came often, and jobs really were retried meanwhile.
    assert min(tally.requested, tally.cancelled_at_once) >= ENOUGH_ANSWERS, tally

    def settled() -> dict[str, int] | None:
        counts = db.status_counts()
        return counts if not counts.get("running") and not counts.get("queued") else None

    counts = wait_until(settled, timeout=WAIT_SECONDS, what="every job ended", interval=0.1)
    assert sum(counts.values()) == tally.jobs, (counts, tally)
    retried = [row for row in db.with_prefix("race-") if row.attempt_errors]
    assert len(retried) >= tally.jobs // 2, f"only {len(retried)} of {tally.jobs} jobs failed once"
    assert serve.terminate() == 0
    assert "Traceback" not in serve.stderr()
