"""The cost of ``ctx.progress`` in a hot loop: nanoseconds per call, in a sync and an async task.

    .venv/bin/python bench/progress.py [--backends sqlite,postgres] [--quick]

A default ``jobdeck worker`` runs jobs of ``progress_sync`` (in its thread pool) and
``progress_async`` (on its event loop) from ``bench/bench_tasks.py``. Each job times, with
``time.perf_counter_ns``, three loops of ``calls`` rounds (1,000,000): an empty loop, a loop
calling a no-op function with the loop variable, and a loop calling ``ctx.progress(i)``.
The figure is ``(progress loop − empty loop) / calls``: what one call adds to a loop; the
no-op call beside it is the price of any Python function call on this machine. Each kind
runs ``--repeats`` times (default 3); the median is reported. The worker writes the
progress out meanwhile (coalesced, a few times a second), as it always does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import Database, log, scenario_main
from processes import Fleet, start_worker

CALLS = 1_000_000
KINDS = ("progress_sync", "progress_async")
REPEATS = 3
TIMEOUT_SECONDS = 120.0


async def run_jobs(database: Database, kind: str, calls: int, repeats: int) -> list[dict]:
    """Run ``repeats`` jobs of ``kind`` one after the other; their results."""
    from jobdeck import Deck

    deck = Deck(database.settings())
    results = []
    async with deck.running(worker=False):
        for _ in range(repeats):
            job = await deck.enqueue(kind, {"calls": calls})
            deadline = time.monotonic() + TIMEOUT_SECONDS
            while not job.is_terminal:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{kind} job {job.id} still {job.status}")
                await asyncio.sleep(0.05)
                latest = await deck.store.get(job.id)
                assert latest is not None
                job = latest
            if job.status.value != "succeeded":
                raise RuntimeError(f"{kind} job {job.id} {job.status}: {job.error}")
            results.append(job.result)
    return results


def per_call(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the runs, in ns per call."""

    def median(key: str) -> float:
        return statistics.median(r[key] / r["calls"] for r in results)

    empty = median("empty_ns")
    return {
        "runs": len(results),
        "calls": results[0]["calls"],
        "progress_ns_per_call": round(median("progress_ns") - empty, 1),
        "noop_call_ns_per_call": round(median("noop_call_ns") - empty, 1),
        "empty_loop_ns_per_round": round(empty, 1),
        "raw": results,
    }


def measure_backend(backend: str, postgres_url: str, calls: int, repeats: int) -> dict:
    """Both kinds against one default worker on a fresh database."""
    log(f"progress: {backend} ...")
    result: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix=f"jobdeck-progress-{backend}-") as tmp,
        Database(backend, Path(tmp), postgres_url) as database,
        Fleet() as fleet,
    ):
        start_worker(fleet, database.env(), Path(tmp), name="worker")
        for kind in KINDS:
            result[kind] = per_call(asyncio.run(run_jobs(database, kind, calls, repeats)))
        result["exit_statuses"] = fleet.stop()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario on every backend of ``args``."""
    repeats = 1 if args.quick else REPEATS
    return {
        "method": f"{CALLS:,} calls of ctx.progress(i) in one job, minus an empty loop of "
        f"as many rounds; median of {repeats} jobs per kind; one default `jobdeck worker`",
        "backends": {
            b: measure_backend(b, args.postgres_url, CALLS, repeats) for b in args.backends
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    return scenario_main(__doc__, run, argv, quick="one job per kind")


if __name__ == "__main__":
    sys.exit(main())
