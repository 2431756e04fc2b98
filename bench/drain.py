"""Drain rate of one ``jobdeck worker`` with default settings, on SQLite and PostgreSQL.

    .venv/bin/python bench/drain.py [--backends sqlite,postgres] [--jobs 20000]
    .venv/bin/python bench/drain.py --backends postgres --profile /tmp/profiles   # py-spy

A fresh database gets ``--jobs`` queued no-op jobs (``steps`` with ``n_steps=0``, enqueued in
batches through the Python API); then ONE ``jobdeck worker`` process starts with jobdeck's
default settings (concurrency 10, logging at INFO to a file) and runs until the queue is
empty. Figures, read from the database afterwards:

- **steady state**: jobs / (last ``finished_at`` − first ``started_at``);
- **from spawn**: jobs / (last ``finished_at`` − the moment the process was spawned), so
  interpreter start, imports and the first claim count too;
- the worker's CPU time per job (user + system, from ``/proc``) and its resident memory.

``--profile DIR`` samples the worker with py-spy (``bench/profiling.py``) into
``DIR/drain-<backend>.txt`` and prints where its time went.
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

from common import Database, log, rate, scenario_main, wait_for
from processes import Fleet, Process, cpu_seconds, rss_kib
from profiling import attach

JOBS = 20_000
QUICK_JOBS = 3_000
FILL_BATCH = 1_000
#: The queue is polled this often while the worker drains it.
WATCH_SECONDS = 0.2


async def _fill(database: Database, jobs: int) -> None:
    from jobdeck import Deck

    deck = Deck(database.settings())
    async with deck.running(worker=False):
        for start in range(0, jobs, FILL_BATCH):
            count = min(FILL_BATCH, jobs - start)
            await deck.enqueue_many(
                [deck.build_spec("steps", {"n_steps": 0}) for _ in range(count)]
            )


def ensure_schema(database: Database) -> None:
    """Create jobdeck's tables (as every process does when it opens the store)."""
    asyncio.run(_fill(database, 0))


def fill_queue(database: Database, jobs: int) -> float:
    """Enqueue ``jobs`` no-op jobs (the schema is created first); the seconds it took."""
    start = time.perf_counter()
    asyncio.run(_fill(database, jobs))
    return time.perf_counter() - start


def active_jobs(database: Database) -> int:
    """Jobs still queued or running."""
    (count,) = database.one("SELECT count(*) FROM {jobs} WHERE status IN ('queued', 'running')")
    return int(count)


def drain(
    database: Database, workdir: Path, jobs: int, *, profile: Path | None = None
) -> dict[str, Any]:
    """Fill the queue with ``jobs`` no-ops, drain it with one default ``jobdeck worker``."""
    since_us = int(time.time() * 1_000_000)
    fill_seconds = fill_queue(database, jobs)
    with Fleet() as fleet:
        spawned_us = int(time.time() * 1_000_000)
        worker = fleet.add(Process.jobdeck("worker", ["worker"], database.env(), workdir))
        profiler = None
        if profile is not None:
            worker.wait_for_log(r"worker \S+ started")
            profiler = attach(worker.pid, profile / f"drain-{database.backend}.txt")
        wait_for(
            lambda: worker.alive() and active_jobs(database) == 0,
            timeout=max(120.0, jobs / 20),
            what=f"{jobs} jobs drained",
            interval=WATCH_SECONDS,
        )
        cpu = cpu_seconds(worker.pid)
        rss = rss_kib(worker.pid)
        statuses = fleet.stop()
        if profiler is not None:
            profiler.wait(30)
    count, first_start, last_finish = database.one(
        "SELECT count(*), min(started_at), max(finished_at) FROM {jobs}"
        " WHERE status = 'succeeded' AND created_at >= ?",
        (since_us,),
    )
    (others,) = database.one(
        "SELECT count(*) FROM {jobs} WHERE status <> 'succeeded' AND created_at >= ?",
        (since_us,),
    )
    return {
        "jobs": jobs,
        "succeeded": count,
        "not_succeeded": others,
        "fill_seconds": round(fill_seconds, 2),
        "steady_seconds": round((last_finish - first_start) / 1e6, 3),
        "drain_steady_per_s": rate(count, (last_finish - first_start) / 1e6),
        "drain_from_spawn_per_s": rate(count, (last_finish - spawned_us) / 1e6),
        "first_start_after_spawn_s": round((first_start - spawned_us) / 1e6, 3),
        "worker_cpu_seconds": cpu,
        "worker_cpu_us_per_job": round(cpu / count * 1e6, 1) if cpu and count else None,
        "worker_rss_mib": round(rss / 1024, 1) if rss else None,
        "exit_statuses": statuses,
    }


def measure_backend(
    backend: str, postgres_url: str, jobs: int, profile: Path | None = None
) -> dict[str, Any]:
    """The drain on a fresh database of one backend."""
    log(f"drain: {backend}, {jobs} jobs ...")
    with (
        tempfile.TemporaryDirectory(prefix=f"jobdeck-drain-{backend}-") as tmp,
        Database(backend, Path(tmp), postgres_url) as database,
    ):
        return drain(database, Path(tmp), jobs, profile=profile)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario on every backend of ``args``."""
    jobs = args.jobs if args.jobs else (QUICK_JOBS if args.quick else JOBS)
    return {
        "method": f"{jobs} queued `steps` n_steps=0 jobs, then one `jobdeck worker` with "
        "default settings; steady = jobs / (last finished_at − first started_at), "
        "from spawn = jobs / (last finished_at − process spawn)",
        "backends": {
            b: measure_backend(b, args.postgres_url, jobs, getattr(args, "profile", None))
            for b in args.backends
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    def extend(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--jobs", type=int, help=f"jobs to drain (default {JOBS})")

    quick = f"{QUICK_JOBS} jobs"
    return scenario_main(
        __doc__, run, argv, quick=quick, extend=extend, profile_file="drain-{backend}.txt"
    )


if __name__ == "__main__":
    sys.exit(main())
