"""SQLite only: several processes claim from one database file, and no job is claimed twice.

It stays SQLite-only on purpose: it opens ``SQLiteStore`` on a file by path in child
processes, to test SQLite's locking across processes. Several store objects claiming from
one database at once, on every backend, is ``test_conformance_claim.py::
test_store_objects_claiming_at_once_never_share_a_job``.

The test runs this file as a script in each child process (``python this_file.py DB WORKER``):
the child opens its own SQLiteStore, says ``ready``, waits for ``go`` on stdin, then claims and
completes jobs until the queue is empty, and prints what it claimed as JSON on its last line.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import jobdeck
from jobdeck.model import JobSpec, Outcome, OutcomeKind, Status, new_job_id, now_us
from jobdeck.settings import Settings
from jobdeck.store.base import JobFilter, NewLogLine, ProgressUpdate, WorkerBatch
from jobdeck.store.sqlite import SQLiteStore

PROCESSES = 4
JOBS = 400
QUEUE = "mp"
KIND = "steps"
#: A child gives up on draining the queue after this long.
CHILD_DEADLINE = 30.0
#: The whole test, processes included, ends within this.
TEST_DEADLINE = 60.0


def settings_for(path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{path}",
        lease_seconds=30.0,
        poll_seconds=0.01,
        cancel_check_seconds=0.05,
    )


# --- the child process ------------------------------------------------------------------------


async def drain(path: Path, worker: str) -> dict[str, Any]:
    """Claim (1-10 at a time) and complete jobs until none is left; report what was claimed."""
    claimed: list[str] = []
    errors: list[str] = []
    store = SQLiteStore(str(path), settings_for(path))
    try:
        await store.open()
        print("ready", flush=True)
        if (await asyncio.to_thread(sys.stdin.readline)).strip() != "go":
            raise RuntimeError("the test did not say go")
        rng = random.Random(worker)
        deadline = time.monotonic() + CHILD_DEADLINE
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not drained within {CHILD_DEADLINE} s")
            await store.heartbeat(worker, [], 60.0)
            jobs = await store.claim(worker, [QUEUE], [KIND], rng.randint(1, 10), 60.0)
            if not jobs:
                break
            claimed.extend(job.id for job in jobs)
            for job in jobs:
                seen = await store.get(job.id)
                if seen is None or seen.worker != worker or seen.status is not Status.RUNNING:
                    raise AssertionError(f"{job.id} claimed by {worker} but stored as {seen}")
            now = now_us()
            await store.record(
                WorkerBatch(
                    worker,
                    progress=[ProgressUpdate(job.id, 1, 1, None) for job in jobs],
                    logs=[NewLogLine(job.id, now, "info", worker) for job in jobs],
                    outcomes=[
                        Outcome(
                            job.id, worker, OutcomeKind.SUCCEEDED, result=worker, finished_at=now
                        )
                        for job in jobs
                    ],
                ),
                100,
            )
        await store.unregister_worker(worker)
    except Exception:
        errors.append(traceback.format_exc())
    finally:
        try:
            await store.close()
        except Exception:
            errors.append(traceback.format_exc())
    return {"worker": worker, "claimed": claimed, "errors": errors}


def child_main(argv: list[str]) -> int:
    path, worker = Path(argv[0]), argv[1]
    report = asyncio.run(drain(path, worker))
    print(json.dumps(report), flush=True)
    return 1 if report["errors"] else 0


# --- the test ---------------------------------------------------------------------------------


async def fill(path: Path) -> set[str]:
    """Create the database and queue the shared pool of jobs."""
    store = SQLiteStore(str(path), settings_for(path))
    await store.open()
    try:
        specs = [JobSpec(KIND, {"n_steps": 0}, new_job_id(), queue=QUEUE) for _ in range(JOBS)]
        entries = await store.enqueue(specs)
        assert all(entry.created for entry in entries)
        return {spec.id for spec in specs}
    finally:
        await store.close()


async def final_jobs(path: Path) -> dict[str, tuple[Status, str | None, Any]]:
    """Status, worker and result of every job, read through a fresh store."""
    store = SQLiteStore(str(path), settings_for(path))
    await store.open()
    try:
        result: dict[str, tuple[Status, str | None, Any]] = {}
        cursor: str | None = None
        for _ in range(10):
            page = await store.list(JobFilter(), 1000, cursor)
            result.update({j.id: (j.status, j.worker, j.result) for j in page.items})
            cursor = page.next_cursor
            if cursor is None:
                break
        return result
    finally:
        await store.close()


@pytest.mark.e2e
async def test_processes_sharing_one_file_never_claim_a_job_twice(tmp_path: Path) -> None:
    """Four processes drain 400 jobs from one file: each job claimed exactly once, no errors."""
    path = tmp_path / "shared.db"
    ids = await fill(path)

    env = dict(os.environ)
    source = str(Path(jobdeck.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    procs: list[asyncio.subprocess.Process] = []
    try:
        async with asyncio.timeout(TEST_DEADLINE):
            for n in range(PROCESSES):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        str(path),
                        f"mp:{n}",
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                        env=env,
                    )
                )
            for proc in procs:
                assert proc.stdout is not None
                line = await proc.stdout.readline()
                if line.strip() != b"ready":
                    _, err = await proc.communicate()
                    pytest.fail(f"child did not get ready: {line!r}\n{err.decode()}")
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            outputs = await asyncio.gather(*(proc.communicate() for proc in procs))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    reports: list[dict[str, Any]] = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        lines = out.decode().strip().splitlines()
        assert lines, f"no report from a child (exit {proc.returncode}):\n{err.decode()}"
        report = json.loads(lines[-1])
        assert report["errors"] == [], "\n".join(report["errors"])
        assert proc.returncode == 0, err.decode()
        reports.append(report)

    claims = Counter(job_id for report in reports for job_id in report["claimed"])
    twice = {job_id: n for job_id, n in claims.items() if n > 1}
    assert twice == {}, f"claimed more than once: {twice}"
    assert set(claims) == ids
    per_worker = {report["worker"]: len(report["claimed"]) for report in reports}
    assert sum(per_worker.values()) == JOBS, per_worker

    claimant = {job_id: report["worker"] for report in reports for job_id in report["claimed"]}
    stored = await final_jobs(path)
    assert stored == {job_id: (Status.SUCCEEDED, w, w) for job_id, w in claimant.items()}


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
