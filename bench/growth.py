"""Growth: does jobdeck slow down as the jobs table grows? 10,000 vs 1,000,000 rows.

    .venv/bin/python bench/growth.py [--backends sqlite,postgres] [--quick]

For each backend and table size, a fresh database is pre-filled with finished jobs by one bulk
``INSERT ... SELECT`` straight into the table the migrations create (``succeeded`` ``steps``
jobs, created over the last hours, finished well within the retention period so that the
worker's purge leaves them alone; PostgreSQL is ``ANALYZE``d afterwards, as autovacuum would
do, and SQLite's WAL is checkpointed). Then 10,000 queued no-op jobs are drained by one
default ``jobdeck worker`` (as in ``bench/drain.py``), so that the table holds 10,000 or
1,000,000 rows, and ``jobdeck serve --no-worker`` answers, one request at a time on one
keep-alive connection:

- ``GET /v1/jobs/{id}`` of ids drawn at random from the whole table;
- ``GET /v1/jobs`` (the first page, 100 newest) and ``GET /v1/stats``.

The headline is the ratio of the drain rates (large / small table); latencies are ms.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from common import Database, log, scenario_main, summarize
from drain import drain, ensure_schema
from processes import Fleet, start_serve

SIZES = (10_000, 1_000_000)
QUICK_SIZES = (2_000, 200_000)
DRAINED = 10_000
QUICK_DRAINED = 2_000
GET_SAMPLES = 300
LIST_SAMPLES = 100
WARMUP = 10
#: Pre-filled jobs were created this many microseconds apart, ending an hour ago.
SPACING_US = 5_000
COLUMNS = (
    "id, kind, params, queue, priority, status, progress_current, progress_total, result, "
    "attempt, max_attempts, run_at, created_at, started_at, finished_at, updated_at, worker, "
    "version"
)
PREFILL = {
    "sqlite": f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
        INSERT INTO jobs ({COLUMNS})
        SELECT printf('00000000000000FILL%08d', i), 'steps',
               '{{"n_steps":0,"step_seconds":1.0}}', 'default', 0, 'succeeded', 0, 0,
               '{{"steps":0}}', 1, 3, t, t, t + 1000, t + 2000, t + 2000, 'fill:0:1', 3
        FROM (SELECT i, ? + i * ? AS t FROM n)
    """,
    "postgres": f"""
        INSERT INTO {{jobs}} ({COLUMNS})
        SELECT '00000000000000FILL' || lpad(i::text, 8, '0'), 'steps',
               '{{"n_steps":0,"step_seconds":1.0}}', 'default', 0, 'succeeded', 0, 0,
               '{{"steps":0}}', 1, 3, t, t, t + 1000, t + 2000, t + 2000, 'fill:0:1', 3
        FROM (SELECT i, ?::bigint + i * ?::bigint AS t FROM generate_series(1, ?) AS i) AS s
    """,
}


def prefill(database: Database, rows: int) -> float:
    """Insert ``rows`` finished jobs in one statement; the seconds it took (upkeep included)."""
    start = time.perf_counter()
    if rows > 0:
        first = int(time.time() * 1e6) - 3_600_000_000 - rows * SPACING_US
        with database.connect() as conn:
            if database.backend == "sqlite":
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(PREFILL["sqlite"], (rows, first, SPACING_US))
                conn.execute("COMMIT")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                conn.execute(database.sql(PREFILL["postgres"]), (first, SPACING_US, rows))
                conn.execute(database.sql("ANALYZE {jobs}"))
    return time.perf_counter() - start


def sample_ids(database: Database, count: int) -> list[str]:
    """``count`` ids drawn at random from the whole table."""
    with database.connect() as conn:
        rows = conn.execute(
            database.sql("SELECT id FROM {jobs} ORDER BY random() LIMIT ?"), (count,)
        ).fetchall()
    return [row[0] for row in rows]


def timed_gets(http: httpx.Client, paths: Sequence[str]) -> dict[str, float]:
    """Latency (ms) of ``GET`` of each path in turn, after a few thrown away."""
    values = []
    for index, path in enumerate([*paths[:WARMUP], *paths]):
        start = time.perf_counter()
        answer = http.get(path)
        elapsed = (time.perf_counter() - start) * 1000
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:200]}")
        if index >= WARMUP:
            values.append(elapsed)
    return summarize(values, digits=2)


def read_latency(database: Database, workdir: Path, quick: bool) -> dict[str, Any]:
    """``GET`` of one job, of the first page and of the stats, against ``serve --no-worker``."""
    ids = sample_ids(database, GET_SAMPLES // (3 if quick else 1))
    lists = LIST_SAMPLES // (3 if quick else 1)
    with Fleet() as fleet:
        base_url = start_serve(fleet, database.env(), workdir, ["--no-worker"], runs_jobs=False)
        with httpx.Client(base_url=base_url, timeout=60.0) as http:
            figures = {
                "get_ms": timed_gets(http, [f"/v1/jobs/{job_id}" for job_id in ids]),
                "list_first_page_ms": timed_gets(http, ["/v1/jobs"] * lists),
                "stats_ms": timed_gets(http, ["/v1/stats"] * lists),
            }
        figures["exit_statuses"] = fleet.stop()
    return figures


def measure(backend: str, postgres_url: str, rows: int, drained: int, quick: bool) -> dict:
    """Pre-fill, drain and read on a fresh database whose table ends with ``rows`` rows."""
    log(f"growth: {backend}, {rows} rows ...")
    with (
        tempfile.TemporaryDirectory(prefix=f"jobdeck-growth-{backend}-") as tmp,
        Database(backend, Path(tmp), postgres_url) as database,
    ):
        ensure_schema(database)
        prefill_seconds = prefill(database, rows - drained)
        result: dict[str, Any] = {
            "rows": rows,
            "prefilled": rows - drained,
            "prefill_seconds": round(prefill_seconds, 1),
        }
        result["drain"] = drain(database, Path(tmp), drained)
        result.update(read_latency(database, Path(tmp), quick))
        (result["rows_at_end"],) = database.one("SELECT count(*) FROM {jobs}")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both table sizes on every backend of ``args``."""
    sizes, drained = (QUICK_SIZES, QUICK_DRAINED) if args.quick else (SIZES, DRAINED)
    backends: dict[str, Any] = {}
    for backend in args.backends:
        small, large = (measure(backend, args.postgres_url, n, drained, args.quick) for n in sizes)
        small_rate = small["drain"]["drain_steady_per_s"]
        large_rate = large["drain"]["drain_steady_per_s"]
        backends[backend] = {
            "small": small,
            "large": large,
            "drain_ratio": round(large_rate / small_rate, 3) if small_rate and large_rate else None,
        }
    return {
        "method": f"tables of {sizes[0]:,} and {sizes[1]:,} rows: finished jobs bulk-inserted, "
        f"then {drained:,} no-op jobs drained by one default worker; reads over HTTP on one "
        "keep-alive connection to `serve --no-worker`. The queue itself never holds more "
        f"than {drained:,} jobs: this is a big table, not a deep queue",
        "backends": backends,
    }


def main(argv: Sequence[str] | None = None) -> int:
    return scenario_main(__doc__, run, argv, quick="200,000 rows instead of 1,000,000")


if __name__ == "__main__":
    sys.exit(main())
