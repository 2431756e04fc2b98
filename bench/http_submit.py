"""HTTP submit throughput: ``jobdeck serve --workers 2`` beside the original recipe app.

    .venv/bin/python bench/http_submit.py [--backends sqlite,postgres] [--quick]

Both are served the same way, two API processes under gunicorn with uvicorn workers, and
loaded the same way: ``wrk -t 2 -c 32 -d 10s`` (after a 3 s warm-up run) with
``bench/submit.lua``, which makes every request start a new job with a unique id.

- **original**: ``bench/original_app.py`` (FastAPI ``BackgroundTasks``, jobs in a dict in
  memory, nothing stored) under ``gunicorn -w 2 -k uvicorn.workers.UvicornWorker``;
  ``POST /start_job/{id}?n_steps=1``.
- **jobdeck**: ``jobdeck serve --workers 2`` as shipped: two API processes and its one
  ``jobdeck worker`` process, which runs the jobs meanwhile (as the original runs them in
  its API processes); default settings on a fresh database; the same
  ``POST /start_job/{id}?n_steps=1`` (the compatible route) and ``POST /v1/jobs``.

Every job has one step of one second (the original's job fails at ``n_steps=0``: it reads
its loop variable after an empty loop), so in both the jobs pile up behind the ones running:
what is measured is how fast each accepts work. The original is measured again before each
backend, so every ratio compares runs made minutes apart. After each jobdeck run the stored
jobs are counted: every 2xx answer must be a stored job. Needs ``wrk`` (Debian: ``apt-get
install wrk``). ``--profile DIR`` samples jobdeck's processes with py-spy meanwhile
(``bench/profiling.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import BENCH_DIR, START_SECONDS, Database, free_port, log, scenario_main, wait_for
from processes import Fleet, Process, healthy, start_serve
from profiling import attach

THREADS = 2
CONNECTIONS = 32
SECONDS = 10
QUICK_SECONDS = 4
WARMUP_SECONDS = 3
N_STEPS = 1
LUA = BENCH_DIR / "submit.lua"
#: Seconds the original gets to stop; its queued background jobs would keep it for minutes.
ORIGINAL_STOP_SECONDS = 5.0
_RESULT = re.compile(r"^SUBMIT_RESULT (\{.*\})$", re.MULTILINE)


def wrk(base_url: str, route: str, base_id: int, seconds: int) -> dict[str, Any]:
    """One wrk run; its figures (``SUBMIT_RESULT`` of ``submit.lua``) and requests/s."""
    executable = shutil.which("wrk")
    if executable is None:
        raise SystemExit("the HTTP submit benchmark needs wrk: apt-get install wrk")
    command = [executable, "-t", str(THREADS), "-c", str(CONNECTIONS), "-d", f"{seconds}s"]
    command += ["-s", str(LUA), base_url]
    env = {
        **os.environ,
        "SUBMIT_ROUTE": route,
        "SUBMIT_N_STEPS": str(N_STEPS),
        "SUBMIT_BASE_ID": str(base_id),
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
    found = _RESULT.search(done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(found.group(1))
    ok = figures["requests"] - figures["non_2xx"]
    figures["requests_per_s"] = round(figures["requests"] / (figures["duration_us"] / 1e6), 1)
    figures["ok_per_s"] = round(ok / (figures["duration_us"] / 1e6), 1)
    return figures


def load(base_url: str, route: str, run: int, seconds: int) -> dict[str, Any]:
    """A warm-up run, then the measured one (ids of each run apart from the others')."""
    warmup = wrk(base_url, route, (2 * run) * 1_000_000_000, WARMUP_SECONDS)
    figures = wrk(base_url, route, (2 * run + 1) * 1_000_000_000, seconds)
    figures["answered_2xx_with_warmup"] = (
        warmup["requests"] - warmup["non_2xx"] + figures["requests"] - figures["non_2xx"]
    )
    return figures


def measure_original(workdir: Path, run: int, seconds: int) -> dict[str, Any]:
    """The recipe app under gunicorn, 2 uvicorn workers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-k", "uvicorn.workers.UvicornWorker"]
    command += ["-b", f"127.0.0.1:{port}", "--no-control-socket", "original_app:app"]
    with Fleet() as fleet:
        server = fleet.add(Process(f"original-{run}", command, env, workdir))
        base_url = f"http://127.0.0.1:{port}"
        server.wait_for_log("Booting worker", 2)
        wait_for(lambda: healthy(base_url, server), timeout=START_SECONDS, what="original up")
        figures = load(base_url, "compat", run, seconds)
        figures["exit_statuses"] = fleet.stop(ORIGINAL_STOP_SECONDS)
    return figures


def measure_jobdeck(
    database: Database, workdir: Path, run: int, seconds: int, profile: Path | None = None
) -> dict[str, Any]:
    """``jobdeck serve --workers 2`` with its worker, both routes, on a fresh database."""
    figures: dict[str, Any] = {}
    profiler = None
    with Fleet() as fleet:
        base_url = start_serve(fleet, database.env(), workdir, ["--workers", "2"], api_processes=2)
        if profile is not None:
            profiler = attach(fleet.processes[0].pid, profile / f"http-{database.backend}.txt")
        for offset, route in enumerate(("compat", "v1")):
            (before,) = database.one("SELECT count(*) FROM {jobs}")
            figures[route] = load(base_url, route, run + offset, seconds)
            (after,) = database.one("SELECT count(*) FROM {jobs}")
            figures[route]["jobs_stored_during_runs"] = after - before
        figures["exit_statuses"] = fleet.stop()
    if profiler is not None:
        profiler.wait(60)
    return figures


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The original, then jobdeck, on every backend of ``args``."""
    seconds = QUICK_SECONDS if args.quick else SECONDS
    backends: dict[str, Any] = {}
    for number, backend in enumerate(args.backends):
        with (
            tempfile.TemporaryDirectory(prefix=f"jobdeck-submit-{backend}-") as tmp,
            Database(backend, Path(tmp), args.postgres_url) as database,
        ):
            log(f"http submit: the original app (before {backend}) ...")
            original = measure_original(Path(tmp), 10 * number, seconds)
            log(f"http submit: jobdeck serve --workers 2 on {backend} ...")
            jobdeck = measure_jobdeck(
                database, Path(tmp), 10 * number + 2, seconds, getattr(args, "profile", None)
            )
        base = original["ok_per_s"]
        backends[backend] = {
            "original": original,
            "jobdeck": jobdeck,
            "ratio_compat": round(jobdeck["compat"]["ok_per_s"] / base, 3) if base else None,
            "ratio_v1": round(jobdeck["v1"]["ok_per_s"] / base, 3) if base else None,
        }
    return {
        "method": f"wrk -t {THREADS} -c {CONNECTIONS} -d {seconds}s after a {WARMUP_SECONDS} s "
        f"warm-up; n_steps={N_STEPS} jobs; original app under gunicorn -w 2 (uvicorn workers) "
        "vs jobdeck serve --workers 2 with its worker process; ratios of 2xx answers per second",
        "backends": backends,
    }


def main(argv: Sequence[str] | None = None) -> int:
    quick = f"{QUICK_SECONDS} s runs"
    return scenario_main(__doc__, run, argv, quick=quick, profile_file="http-{backend}.txt")


if __name__ == "__main__":
    sys.exit(main())
