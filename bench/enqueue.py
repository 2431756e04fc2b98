"""Enqueue throughput of jobdeck: one job at a time and in batches, through the Python API and
over HTTP, on SQLite and PostgreSQL.

    .venv/bin/python bench/enqueue.py [--backends sqlite,postgres] [--quick]

Each backend gets a fresh database and no worker, so that nothing but enqueueing runs:

- **Python API, single**: ``await deck.enqueue("steps", {"n_steps": 0})`` in a loop, one
  transaction per job (what a web handler does);
- **Python API, batch**: ``deck.enqueue_many`` of 1,000 specs made by ``deck.build_spec``
  (validation included), one transaction per batch;
- **HTTP, single**: ``POST /v1/jobs`` one after the other on one keep-alive connection to
  ``jobdeck serve --no-worker`` (one API process);
- **HTTP, batch**: ``POST /v1/jobs:batch`` with 1,000 jobs each, the same way;
- **bare driver**: the floor, the same rows written by ``sqlite3`` / ``psycopg`` alone (one
  ``INSERT`` per transaction, then ``executemany`` of 1,000 per transaction) into the same
  table, with the same durability settings (SQLite ``synchronous=FULL``, PostgreSQL's own).

The figures are jobs per second of wall-clock time, a few warm-up calls excluded. Prints the
figures as JSON; ``bench/run.py`` stores them in ``bench/results/jobdeck.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from common import Database, log, rate, scenario_main
from processes import Fleet, start_serve

NOOP = {"kind": "steps", "params": {"n_steps": 0}}
METHOD = (
    "no worker; Python API in the benchmark process, HTTP to `serve --no-worker` on one "
    "keep-alive connection; batches of 1,000; bare driver: the same rows written by "
    "sqlite3 / psycopg alone, one transaction per row or per batch"
)
BATCH_SIZE = 1000
WARMUP = 20
#: (single jobs, batches) per path, full and ``--quick``.
COUNTS = {"python": (2000, 20), "http": (1000, 10)}
QUICK_COUNTS = {"python": (300, 4), "http": (200, 3)}


def figures(
    single: int, single_seconds: float, batches: int, batch_seconds: float
) -> dict[str, Any]:
    """Rates of ``single`` jobs one at a time and ``batches`` batches of :data:`BATCH_SIZE`."""
    return {
        "single_jobs": single,
        "single_per_s": rate(single, single_seconds),
        "single_ms_per_job": round(single_seconds / single * 1000, 3),
        "batch_jobs": batches * BATCH_SIZE,
        "batch_size": BATCH_SIZE,
        "batch_per_s": rate(batches * BATCH_SIZE, batch_seconds),
    }


async def python_api(database: Database, single: int, batches: int) -> dict[str, Any]:
    """Jobs per second of ``deck.enqueue`` and ``deck.enqueue_many`` in this process."""
    from jobdeck import Deck

    deck = Deck(database.settings())
    async with deck.running(worker=False):
        for _ in range(WARMUP):
            await deck.enqueue(NOOP["kind"], NOOP["params"])
        start = time.perf_counter()
        for _ in range(single):
            await deck.enqueue(NOOP["kind"], NOOP["params"])
        single_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(batches):
            specs = [deck.build_spec(NOOP["kind"], NOOP["params"]) for _ in range(BATCH_SIZE)]
            await deck.enqueue_many(specs)
        batch_seconds = time.perf_counter() - start
    return figures(single, single_seconds, batches, batch_seconds)


BARE_INSERT = (
    "INSERT INTO {jobs} (id, kind, params, queue, priority, status, max_attempts, run_at,"
    " created_at, updated_at, labels) VALUES (?, 'steps', '{\"n_steps\":0,\"step_seconds\":1.0}',"
    " 'default', 0, 'queued', 3, ?, ?, ?, '{}')"
)


def bare_driver(database: Database, single: int, batches: int) -> dict[str, Any]:
    """The floor: the same rows inserted with the driver alone (sqlite3 or psycopg), one
    transaction per row, then per batch; no validation, no Job objects, no notification."""
    sql = database.sql(BARE_INSERT)
    serial = iter(range(10**9))

    def row() -> tuple[Any, ...]:
        now = int(time.time() * 1e6)
        return (f"bare-{next(serial):012d}", now, now, now)

    with database.connect() as conn:
        begin = "BEGIN IMMEDIATE" if database.backend == "sqlite" else "BEGIN"
        start = time.perf_counter()
        for _ in range(single):
            conn.execute(begin)
            conn.execute(sql, row())
            conn.execute("COMMIT")
        single_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(batches):
            conn.execute(begin)
            conn.cursor().executemany(sql, [row() for _ in range(BATCH_SIZE)])
            conn.execute("COMMIT")
        batch_seconds = time.perf_counter() - start
    return figures(single, single_seconds, batches, batch_seconds)


def over_http(base_url: str, single: int, batches: int) -> dict[str, Any]:
    """Jobs per second of ``POST /v1/jobs`` and ``POST /v1/jobs:batch`` on one connection."""
    batch = {"jobs": [NOOP] * BATCH_SIZE}
    with httpx.Client(base_url=base_url, timeout=60.0) as http:
        for _ in range(WARMUP):
            http.post("/v1/jobs", json=NOOP).raise_for_status()
        single_seconds = timed_posts(http, "/v1/jobs", NOOP, single)
        batch_seconds = timed_posts(http, "/v1/jobs:batch", batch, batches)
    return figures(single, single_seconds, batches, batch_seconds)


def timed_posts(http: httpx.Client, path: str, body: Any, count: int) -> float:
    """Seconds taken by ``count`` POSTs of ``body`` to ``path``, one after the other; each
    must be accepted (202)."""
    start = time.perf_counter()
    for _ in range(count):
        answer = http.post(path, json=body)
        if answer.status_code != 202:
            raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text[:200]}")
    return time.perf_counter() - start


def measure_backend(backend: str, postgres_url: str, quick: bool) -> dict[str, Any]:
    """Both paths on fresh databases of one backend."""
    counts = QUICK_COUNTS if quick else COUNTS
    result: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix=f"jobdeck-enqueue-{backend}-") as tmp,
        Database(backend, Path(tmp), postgres_url) as database,
    ):
        log(f"enqueue: {backend}, Python API ...")
        result["python"] = asyncio.run(python_api(database, *counts["python"]))
        result["bare_driver"] = bare_driver(database, *counts["python"])
    with (
        tempfile.TemporaryDirectory(prefix=f"jobdeck-enqueue-{backend}-") as tmp,
        Database(backend, Path(tmp), postgres_url) as database,
        Fleet() as fleet,
    ):
        log(f"enqueue: {backend}, HTTP ...")
        base_url = start_serve(fleet, database.env(), Path(tmp), ["--no-worker"], runs_jobs=False)
        result["http"] = over_http(base_url, *counts["http"])
        result["exit_statuses"] = fleet.stop()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario on every backend of ``args``."""
    return {
        "method": METHOD,
        "backends": {b: measure_backend(b, args.postgres_url, args.quick) for b in args.backends},
    }


def main(argv: Sequence[str] | None = None) -> int:
    return scenario_main(__doc__, run, argv, quick="fewer jobs")


if __name__ == "__main__":
    sys.exit(main())
