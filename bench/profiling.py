"""Sampling profiles of jobdeck's processes during a benchmark, and where their time goes.

    .venv/bin/python bench/drain.py --backends postgres --profile /tmp/profiles
    .venv/bin/python bench/http_submit.py --backends sqlite --profile /tmp/profiles
    .venv/bin/python bench/profiling.py /tmp/profiles/*.txt     # the summary of each file
    .venv/bin/python bench/profiling.py --store-calls --jobs 5000  # a drain's store calls

``attach`` starts ``py-spy record`` (non-blocking sampling, collapsed stacks) on a running
process and its children; py-spy is not a dependency of jobdeck (``pip install py-spy``).
``where_time_goes`` sorts the samples of such a file by process, then by category (the
innermost frame that names one: SQLite, psycopg, logging, JSON, pydantic, asyncio, ...), and
lists the functions most often on top of the stack. Samples of idle threads (waiting in
``select``, on a lock or a queue) are counted apart, so the shares are of busy time.

``--store-calls`` drains no-op jobs with a default worker in this process whose store counts
and times every operation (claim, record, heartbeat...): calls per job and their latency.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import Database, add_common_args, usable_backends

RATE = 250
#: Categories by frame text, tried on the innermost frame first.
CATEGORIES = (
    ("SQLite (statements, commits)", ("sqlite3", "(jobdeck/store/sqlite.py")),
    ("psycopg (PostgreSQL driver)", ("psycopg",)),
    ("logging", ("logging/",)),
    ("JSON", ("json/",)),
    ("pydantic (validation, serialisation)", ("pydantic",)),
    ("HTTP server (uvicorn, h11, httptools)", ("uvicorn", "h11", "httptools")),
    ("FastAPI / Starlette routing", ("fastapi", "starlette")),
    ("jobdeck API (api/)", ("jobdeck/api/",)),
    ("rows → Job (store/rows.py, model.py)", ("jobdeck/store/rows.py", "jobdeck/model.py")),
    ("jobdeck store (postgres.py, base.py)", ("jobdeck/store/",)),
    ("jobdeck worker and tasks", ("jobdeck/worker.py", "jobdeck/tasks.py", "jobdeck/deck.py")),
    ("asyncio event loop", ("asyncio/",)),
    ("threads (executor hand-off)", ("threading.py", "concurrent/futures")),
)
#: Innermost frames of a thread that waits rather than works.
IDLE = (
    "select (selectors.py",
    "_worker (concurrent/futures/thread.py",
    "wait (threading.py",
    "_wait_for_tstate_lock",
    "get (queue.py",
)


def py_spy() -> str:
    """The py-spy next to this interpreter, or on the PATH."""
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("profiling needs py-spy: .venv/bin/pip install py-spy")
    return found


def attach(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` on ``pid`` and its children until they exit; stacks into ``out``."""
    command = [py_spy(), "record", "--nonblocking", "--subprocesses", "-r", str(RATE)]
    command += ["-f", "raw", "-o", str(out), "--pid", str(pid)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def category(frames: Sequence[str]) -> str:
    """The category of the innermost frame that has one."""
    for frame in reversed(frames):
        for name, keys in CATEGORIES:
            if any(key in frame for key in keys):
                return name
    return "other"


def where_time_goes(path: Path, *, top: int = 12) -> dict[str, Any]:
    """Per process (the innermost of py-spy's ``process ...`` frames): busy samples, their
    shares by category, and the innermost functions most often seen."""
    busy: dict[str, Counter[str]] = defaultdict(Counter)
    leaves: dict[str, Counter[str]] = defaultdict(Counter)
    idle: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        nested = [f for f in frames if f.startswith("process ")]
        process = nested[-1] if nested else "process"
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        if any(mark in frames[-1] for mark in IDLE):
            idle[process] += int(count_text)
            continue
        busy[process][category(frames)] += int(count_text)
        leaves[process][frames[-1]] += int(count_text)
    result = {}
    for process, counts in sorted(busy.items(), key=lambda item: -item[1].total()):
        total = counts.total()
        result[process[:120]] = {
            "busy_samples": total,
            "idle_samples": idle[process],
            "busy_seconds": round(total / RATE, 2),
            "by_category": {k: round(v / total, 3) for k, v in counts.most_common()},
            "top_functions": [
                (k, round(v / total, 3)) for k, v in leaves[process].most_common(top)
            ],
        }
    return result


# --- store calls --------------------------------------------------------------------------


class TimedStore:
    """A store whose coroutine methods count their calls and add up their wall time."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()
        self.seconds: dict[str, float] = defaultdict(float)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not inspect.iscoroutinefunction(value):
            return value

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await value(*args, **kwargs)
            finally:
                self.calls[name] += 1
                self.seconds[name] += time.perf_counter() - start

        return timed


async def _drain_in_process(database: Database, log_file: Path) -> tuple[TimedStore, float]:
    from jobdeck import Deck
    from jobdeck.worker import Worker

    handler = logging.FileHandler(log_file)
    logging.getLogger("jobdeck").addHandler(handler)
    logging.getLogger("jobdeck").setLevel(logging.INFO)
    deck = Deck(database.settings())
    try:
        async with deck.running(worker=False):
            store = TimedStore(deck.store)
            worker = Worker(store, deck.registry, deck.settings)  # type: ignore[arg-type]
            start = time.perf_counter()
            await worker.run_until_idle(timeout=900)
            return store, time.perf_counter() - start
    finally:
        logging.getLogger("jobdeck").removeHandler(handler)
        handler.close()


def store_calls(backend: str, postgres_url: str, jobs: int) -> dict[str, Any]:
    """Drain ``jobs`` no-ops with a default worker in this process, its store timed: calls
    per job and mean wall time of each store operation."""
    from drain import fill_queue

    with (
        tempfile.TemporaryDirectory(prefix=f"jobdeck-calls-{backend}-") as tmp,
        Database(backend, Path(tmp), postgres_url) as database,
    ):
        fill_queue(database, jobs)
        store, seconds = asyncio.run(_drain_in_process(database, Path(tmp) / "worker.log"))
    return {
        "jobs": jobs,
        "seconds": round(seconds, 2),
        "jobs_per_s": round(jobs / seconds, 1),
        "operations": {
            name: {
                "calls": count,
                "per_job": round(count / jobs, 3),
                "mean_ms": round(store.seconds[name] / count * 1000, 3),
                "share_of_wall": round(store.seconds[name] / seconds, 3),
            }
            for name, count in store.calls.most_common()
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Summarise profiles, or (``--store-calls``) time the store operations of a drain."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("profiles", nargs="*", type=Path, help="py-spy raw files to summarise")
    parser.add_argument("--store-calls", action="store_true", help="time a drain's store calls")
    parser.add_argument("--jobs", type=int, default=5000)
    args = parser.parse_args(argv)
    for path in args.profiles:
        print(f"== {path}")
        print(json.dumps(where_time_goes(path), indent=2, ensure_ascii=False))
    if args.store_calls:
        for backend in usable_backends(args.backends, args.postgres_url):
            figures = store_calls(backend, args.postgres_url, args.jobs)
            print(f"== store calls, {backend}")
            print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
