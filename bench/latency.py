"""Pickup and cancel latency of jobdeck, on SQLite and PostgreSQL, over real processes.

    .venv/bin/python bench/latency.py            # or: make bench-latency
    .venv/bin/python bench/latency.py --backends sqlite --runs 1 --pickup-samples 100

For each backend and topology it starts fresh processes on a fresh database with jobdeck's
default settings (a SQLite file in a temporary directory; a PostgreSQL schema of its own,
dropped afterwards) and measures over HTTP:

- **pickup**: ``steps`` jobs with ``n_steps=0`` submitted one at a time to idle workers
  (``POST /v1/jobs`` with ``Prefer: wait``, then a short random pause so that the workers
  are idle again); the figure is the job's ``started_at - created_at``.
- **cancel**: a long job (``step_seconds=1``) is started, seen ``running``, left alone for a
  random 50-250 ms, then ``POST /v1/jobs/{id}/cancel`` goes to the API; the figures are the
  job's ``finished_at`` minus the moment the client sent the cancel (the worker's decision),
  and the moment ``GET /v1/jobs/{id}/wait`` answered ``cancelled`` minus the same (what a
  client sees). Both for the async built-in ``steps`` and the sync ``sync_steps`` of
  ``bench/latency_tasks.py`` (``ctx.sleep`` in a loop, run in a thread).

Topologies: ``scale-out`` is ``jobdeck serve --workers 4`` (four API processes under
gunicorn and one worker process) plus two ``jobdeck worker`` processes; ``single`` is
``jobdeck serve`` with its embedded worker. Requests go over a fresh connection each, so
that gunicorn spreads them over its API processes.

The whole set runs ``--runs`` times (default 2, to show the machine's noise). It prints a
table, writes ``bench/results/latency.json`` (figures of every run, raw samples included, and
the machine) and replaces the latency section of ``docs/benchmarks.md`` (``--report-only``
rewrites that section from the JSON file without measuring). The exit status is 1 when a
sample failed (a job that did not end as it should) or a process did not exit with 0.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import random
import re
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
DEFAULT_JSON = BENCH_DIR / "results" / "latency.json"
DEFAULT_DOCS = ROOT / "docs" / "benchmarks.md"
#: The console script of the jobdeck installed next to this interpreter.
JOBDECK = Path(sys.executable).with_name("jobdeck")
#: The PostgreSQL server (the one the tests use, unless ``--postgres-url`` says otherwise).
POSTGRES_URL_ENV = "JOBDECK_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TASKS_MODULE = "latency_tasks"
BACKENDS = ("sqlite", "postgres")
KINDS = ("steps", "sync_steps")
#: Samples taken first and thrown away (connection pools, imports, caches warm up).
WARMUP = 10
#: Seconds of idleness between two pickup samples, drawn uniformly.
PICKUP_PAUSE = (0.02, 0.06)
#: Seconds a long job runs before it is cancelled, drawn uniformly.
CANCEL_AFTER = (0.05, 0.25)
START_SECONDS = 30.0
STOP_SECONDS = 60.0
TERMINAL = {"succeeded", "failed", "cancelled"}
#: The issue's targets, in ms at the median: pickup on either backend, cancel per backend.
TARGETS = {("pickup", "sqlite"): 50.0, ("pickup", "postgres"): 50.0}
TARGETS |= {("cancel", "sqlite"): 400.0, ("cancel", "postgres"): 100.0}
#: The metrics the targets apply to; the others explain them.
TARGETED_METRICS = {"started_at − created_at", "finished_at − sent"}
ANSWERED = "cancel answered − sent"
SECTION_BEGIN = "<!-- bench/latency.py: begin -->"
SECTION_END = "<!-- bench/latency.py: end -->"


@dataclass(frozen=True)
class Topology:
    """How the processes are laid out."""

    name: str
    label: str
    serve_args: tuple[str, ...]
    extra_workers: int
    api_processes: int


TOPOLOGIES = {
    "scale-out": Topology(
        "scale-out", "serve --workers 4 + 2 × jobdeck worker", ("--workers", "4"), 2, 4
    ),
    "single": Topology("single", "serve (embedded worker)", (), 0, 1),
}


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``check()`` until it returns something truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


class Process:
    """One ``jobdeck`` command in a session of its own, its output in files."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.args = list(args)
        self.stderr_path = workdir / f"{name}.stderr"
        with (workdir / f"{name}.stdout").open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [str(JOBDECK), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )

    def stderr(self) -> str:
        """What it wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        """Whether it still runs; raise with its output if it died."""
        if self.popen.poll() is not None:
            tail = "\n".join(self.stderr().splitlines()[-40:])
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")
        return True

    def wait_for_log(self, pattern: str, count: int = 1) -> None:
        """Wait until ``count`` lines of stderr match ``pattern``."""
        regex = re.compile(pattern)
        wait_for(
            lambda: self.alive() and len(regex.findall(self.stderr())) >= count,
            timeout=START_SECONDS,
            what=f"{self.name} logs {pattern!r} ×{count}",
        )

    def stop(self) -> int:
        """SIGTERM and the exit status (SIGKILL if it does not stop in time: status < 0)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()


class Cluster:
    """The processes of one topology on a fresh database of one backend."""

    def __init__(self, backend: str, topology: Topology, workdir: Path, postgres_url: str) -> None:
        self.backend = backend
        self.topology = topology
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.schema: str | None = None
        self.processes: list[Process] = []
        self.exit_statuses: dict[str, int] = {}

    def env(self) -> dict[str, str]:
        """This environment without ``JOBDECK_*``, then the database and the task module;
        every other setting keeps its default."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBDECK_")}
        python_path = [str(BENCH_DIR), *filter(None, [env.get("PYTHONPATH")])]
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(python_path),
                "PYTHONUNBUFFERED": "1",
                "JOBDECK_TASKS": TASKS_MODULE,
            }
        )
        if self.backend == "sqlite":
            env["JOBDECK_DATABASE_URL"] = f"sqlite:///{self.workdir / 'jobdeck.db'}"
        else:
            assert self.schema is not None
            env["JOBDECK_DATABASE_URL"] = self.postgres_url
            env["JOBDECK_PG_SCHEMA"] = self.schema
        return env

    def __enter__(self) -> Cluster:
        if self.backend == "postgres":
            self.schema = f"jobdeck_bench_{secrets.token_hex(4)}"
        env = self.env()
        try:
            command = ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
            command += self.topology.serve_args
            serve = Process("serve", command, env, self.workdir)
            self.processes.append(serve)
            serve.wait_for_log(r"worker \S+ started")
            if self.topology.api_processes > 1:
                serve.wait_for_log("Application startup complete", self.topology.api_processes)
            wait_for(self._healthy, timeout=START_SECONDS, what="GET /health")
            for n in range(self.topology.extra_workers):
                worker = Process(f"worker-{n + 1}", ["worker"], env, self.workdir)
                self.processes.append(worker)
                worker.wait_for_log(r"worker \S+ started")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _healthy(self) -> bool:
        self.processes[0].alive()
        try:
            return httpx.get(f"{self.base_url}/health", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    def __exit__(self, *_: object) -> None:
        for process in self.processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        self.exit_statuses = {p.name: p.stop() for p in self.processes}
        if self.schema is not None:
            drop_schema(self.postgres_url, self.schema)

    def worker_pids(self) -> set[int]:
        """Process ids of the processes that run jobs."""
        text = self.processes[0].stderr()
        pids = {int(pid) for pid in re.findall(r"worker \S+?:(\d+):\d+ started", text)}
        for process in self.processes[1:]:
            pids.add(process.popen.pid)
        return pids


def drop_schema(url: str, schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` of a benchmark's schema."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def postgres_problem(url: str) -> str | None:
    """None when PostgreSQL at ``url`` answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return None


# --- measuring -------------------------------------------------------------------------------


def fresh_client(base_url: str) -> httpx.Client:
    """A new connection for every request, so that requests spread over API processes."""
    return httpx.Client(
        base_url=base_url,
        timeout=60.0,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"Connection": "close"},
    )


def micros(stamp: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time as the API writes it."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _MICROSECOND


_MICROSECOND = timedelta(microseconds=1)


def await_terminal(http: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    """The job once it has ended (long-polling ``/wait``)."""
    while job["status"] not in TERMINAL:
        answer = http.get(f"/v1/jobs/{job['id']}/wait", params={"timeout": 30})
        answer.raise_for_status()
        job = answer.json()
    return job


@dataclass
class Samples:
    """Figures of one measure (ms), and what went wrong."""

    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    worker_pids: Counter[int] = field(default_factory=Counter)


def measure_pickup(cluster: Cluster, samples: int, rng: random.Random) -> Samples:
    """``started_at - created_at`` of ``n_steps=0`` jobs submitted one at a time to idle
    workers (each waited for with ``Prefer: wait``, then a pause)."""
    out = Samples()
    with fresh_client(cluster.base_url) as http:
        for i in range(WARMUP + samples):
            time.sleep(rng.uniform(*PICKUP_PAUSE))
            answer = http.post(
                "/v1/jobs",
                json={"kind": "steps", "params": {"n_steps": 0}},
                headers={"Prefer": "wait=30"},
            )
            if answer.status_code not in (200, 202):
                out.errors.append(f"POST /v1/jobs: {answer.status_code} {answer.text[:200]}")
                continue
            job = await_terminal(http, answer.json())
            if job["status"] != "succeeded":
                out.errors.append(f"job {job['id']} {job['status']}")
                continue
            if i < WARMUP:
                continue
            out.values.append((micros(job["started_at"]) - micros(job["created_at"])) / 1000)
            out.worker_pids[int(job["worker"].rsplit(":", 2)[1])] += 1
    return out


def measure_cancel(
    cluster: Cluster, kind: str, samples: int, rng: random.Random
) -> tuple[Samples, Samples, Samples]:
    """Cancel a running long job of ``kind``, ``samples`` times: (``finished_at`` − sent,
    client saw ``cancelled`` − sent, the cancel's answer − sent), in ms."""
    decided, seen, answered = Samples(), Samples(), Samples()
    spec = {"kind": kind, "params": {"n_steps": 1000, "step_seconds": 1.0}}
    with (
        fresh_client(cluster.base_url) as fresh,
        httpx.Client(base_url=cluster.base_url, timeout=60.0) as poll,
    ):
        for i in range(WARMUP + samples):
            answer = fresh.post("/v1/jobs", json=spec)
            if answer.status_code != 202:
                decided.errors.append(f"POST /v1/jobs: {answer.status_code} {answer.text[:200]}")
                continue
            job_id = answer.json()["id"]

            def running(job_id: str = job_id) -> dict[str, Any] | None:
                job: dict[str, Any] = poll.get(f"/v1/jobs/{job_id}").json()
                return job if job["status"] == "running" else None

            job = wait_for(running, timeout=30.0, what=f"{job_id} running", interval=0.005)
            time.sleep(rng.uniform(*CANCEL_AFTER))
            sent = time.time()
            answer = fresh.post(f"/v1/jobs/{job_id}/cancel")
            answered_at = time.time()
            if answer.status_code != 202:
                decided.errors.append(f"cancel {job_id}: {answer.status_code} {answer.text[:200]}")
                continue
            job = await_terminal(poll, answer.json())
            arrived = time.time()
            if job["status"] != "cancelled":
                decided.errors.append(f"job {job_id} {job['status']} after cancel")
                continue
            if i < WARMUP:
                continue
            decided.values.append(micros(job["finished_at"]) / 1000 - sent * 1000)
            seen.values.append((arrived - sent) * 1000)
            answered.values.append((answered_at - sent) * 1000)
            decided.worker_pids[int(job["worker"].rsplit(":", 2)[1])] += 1
    return decided, seen, answered


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, p50, p95, p99, mean, min and max of ``values`` (ms, rounded to 0.1 ms)."""
    if not values:
        return {"n": 0}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else []
    figures = {
        "p50": statistics.median(values),
        "p95": cuts[94] if cuts else values[0],
        "p99": cuts[98] if cuts else values[0],
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }
    return {"n": len(values), **{k: round(v, 1) for k, v in figures.items()}}


def entry(
    backend: str,
    topology: Topology,
    measure: str,
    kind: str,
    metric: str,
    samples: Samples,
) -> dict[str, Any]:
    """One line of results."""
    figures = summarize(samples.values)
    target = TARGETS[(measure, backend)] if metric in TARGETED_METRICS else None
    return {
        "backend": backend,
        "topology": topology.name,
        "measure": measure,
        "kind": kind,
        "metric": metric,
        **figures,
        "target_p50": target,
        "met": None if target is None or not samples.values else figures["p50"] <= target,
        "errors": samples.errors,
        "runs_by_worker_pid": {str(pid): n for pid, n in sorted(samples.worker_pids.items())},
        "samples_ms": [round(v, 2) for v in samples.values],
    }


def run_once(args: argparse.Namespace, number: int, rng: random.Random) -> dict[str, Any]:
    """Every measure on every backend and topology, once."""
    started = datetime.now(UTC)
    results: list[dict[str, Any]] = []
    shutdowns: list[dict[str, Any]] = []
    for backend in args.backends:
        for name in args.topologies:
            topology = TOPOLOGIES[name]
            with tempfile.TemporaryDirectory(prefix=f"jobdeck-bench-{backend}-") as tmp:
                print(f"run {number}: {backend}, {topology.label} ...", file=sys.stderr)
                with Cluster(backend, topology, Path(tmp), args.postgres_url) as cluster:
                    if args.pickup_samples:
                        pickup = measure_pickup(cluster, args.pickup_samples, rng)
                        results.append(
                            entry(
                                backend,
                                topology,
                                "pickup",
                                "steps",
                                "started_at − created_at",
                                pickup,
                            )
                        )
                    for kind in KINDS if name in args.cancel_topologies else ():
                        if not args.cancel_samples:
                            break
                        decided, seen, answered = measure_cancel(
                            cluster, kind, args.cancel_samples, rng
                        )
                        results.append(
                            entry(backend, topology, "cancel", kind, "finished_at − sent", decided)
                        )
                        results.append(
                            entry(
                                backend,
                                topology,
                                "cancel",
                                kind,
                                "client saw cancelled − sent",
                                seen,
                            )
                        )
                        results.append(entry(backend, topology, "cancel", kind, ANSWERED, answered))
                shutdowns.append(
                    {
                        "backend": backend,
                        "topology": topology.name,
                        "exit_statuses": cluster.exit_statuses,
                    }
                )
                bad = {k: v for k, v in cluster.exit_statuses.items() if v != 0}
                if bad:
                    print(f"WARNING: exit statuses {bad} ({backend}, {name})", file=sys.stderr)
    return {
        "run": number,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "shutdowns": shutdowns,
    }


# --- reporting -------------------------------------------------------------------------------


def machine_info(postgres_url: str | None) -> dict[str, Any]:
    """Where the figures were measured: platform, CPUs, versions, date."""
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory_gb = round(kib / 1024 / 1024, 1)
    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for package in ("jobdeck", "fastapi", "uvicorn", "gunicorn", "httpx", "psycopg"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    if postgres_url is not None:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(postgres_url, connect_timeout=3) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                versions["postgresql"] = row[0] if row else None
    commit = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gb": memory_gb,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
        "git": commit,
    }


def row_key(result: dict[str, Any]) -> tuple[str, ...]:
    """What identifies a line across runs."""
    return tuple(result[k] for k in ("backend", "topology", "measure", "kind", "metric"))


def print_table(run: dict[str, Any]) -> None:
    """The figures of one run, as a text table."""
    print(f"\nrun {run['run']} ({run['started']}, {run['seconds']} s)")
    header = (
        f"{'backend':9} {'topology':10} {'measure':7} {'kind':10} {'metric':28} "
        f"{'n':>4} {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}  target p50"
    )
    print(header)
    print("-" * len(header))
    for r in run["results"]:
        target = "" if r["target_p50"] is None else f"<= {r['target_p50']:.0f} ms"
        verdict = {True: " ok", False: " MISSED", None: ""}[r["met"]]
        errors = f"  ({len(r['errors'])} errors)" if r["errors"] else ""
        print(
            f"{r['backend']:9} {r['topology']:10} {r['measure']:7} {r['kind']:10} "
            f"{r['metric']:28} {r['n']:>4} {r.get('p50', float('nan')):>7.1f} "
            f"{r.get('p95', float('nan')):>7.1f} {r.get('p99', float('nan')):>7.1f} "
            f"{r.get('max', float('nan')):>7.1f}  {target}{verdict}{errors}"
        )


def markdown(report: dict[str, Any]) -> str:
    """The latency section of ``docs/benchmarks.md``."""
    machine = report["machine"]
    versions = machine["versions"]
    runs = report["runs"]
    lines = [
        SECTION_BEGIN,
        "## Latency: pickup and cancel",
        "",
        f"Measured by `bench/latency.py` on {machine['date'][:10]}: {len(runs)} runs, one after "
        "the other, each on fresh processes and a fresh database with jobdeck's default "
        "settings (`JOBDECK_POLL_SECONDS=0.05`, `JOBDECK_CANCEL_CHECK_SECONDS=0.2`, "
        "`JOBDECK_NOTIFY=on`). Figures are milliseconds.",
        "",
        f"- Machine: {machine['platform']}, {machine['cpu_model']}, "
        f"{machine['cpu_count']} CPUs, {machine['memory_gb']} GB; load average at the start "
        f"{machine['load_average']}.",
        f"- Versions: Python {versions.get('python')}, SQLite {versions.get('sqlite')}, "
        f"PostgreSQL {versions.get('postgresql', 'n/a')} (same machine, over TCP), "
        f"gunicorn {versions.get('gunicorn')}, uvicorn {versions.get('uvicorn')}, "
        f"psycopg {versions.get('psycopg')}, jobdeck {versions.get('jobdeck')} "
        f"(`{machine['git']}`).",
        "- Topologies: **scale-out** is `jobdeck serve --workers 4` (four API processes under "
        "gunicorn, one worker process) plus two `jobdeck worker` processes; **single** is "
        "`jobdeck serve` with its embedded worker. Every request opens a new connection, so "
        "gunicorn spreads them over its API processes.",
        "- **pickup**: `started_at − created_at` of `steps` jobs with `n_steps=0`, submitted "
        "one at a time over HTTP to idle workers (each waited for, then a 20-60 ms pause).",
        "- **cancel**: a long job (`step_seconds=1`) seen `running`, left for 50-250 ms, then "
        "`POST /v1/jobs/{id}/cancel`; `finished_at − sent` is when the worker stopped it, "
        "`client saw cancelled − sent` is when `GET /v1/jobs/{id}/wait` answered `cancelled` "
        "(the cancel's own round trip included), `cancel answered − sent` is that round "
        "trip alone (HTTP on a new connection, the API's write). `steps` is async "
        "(cancelled outright), `sync_steps` (`bench/latency_tasks.py`) sleeps with "
        "`ctx.sleep` in a thread.",
        "- Targets (the issue's, at the median): pickup ≤ 50 ms on either backend; cancel "
        "≤ 100 ms on PostgreSQL, ≤ 400 ms on SQLite.",
        "",
    ]
    header = "| backend | topology | measure | kind | metric | n |"
    rule = "| --- | --- | --- | --- | --- | ---: |"
    for run in runs:
        header += f" run {run['run']} p50 / p95 / p99 |"
        rule += " ---: |"
    header += " target p50 |"
    rule += " --- |"
    lines += [header, rule]
    by_run = [{row_key(r): r for r in run["results"]} for run in runs]
    for key in by_run[0] if by_run else []:
        first = by_run[0][key]
        cells = [*key, str(first["n"])]
        for results in by_run:
            r = results.get(key)
            if r is None or not r["n"]:
                cells.append("–")
                continue
            errors = f" ({len(r['errors'])} errors)" if r["errors"] else ""
            cells.append(f"{r['p50']:.1f} / {r['p95']:.1f} / {r['p99']:.1f}{errors}")
        target = first["target_p50"]
        if target is None:
            cells.append("")
        else:
            met = all(results.get(key, {}).get("met") for results in by_run)
            cells.append(f"≤ {target:.0f} {'met' if met else '**missed**'}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [""]
    for run in runs:
        lines.append(
            f"- Run {run['run']}: started {run['started']}, took {run['seconds']} s, "
            f"load average at its end {run.get('load_average_at_end')}."
        )
    lines += ["", noise_note(by_run), "", "Rerun:", "", "```sh"]
    lines += [
        "make bench-latency                     # both backends, 2 runs (a few minutes)",
        ".venv/bin/python bench/latency.py --backends sqlite --runs 1",
        f"# PostgreSQL: {POSTGRES_URL_ENV}=postgresql://user@host:5432/db (default "
        f"{DEFAULT_POSTGRES_URL}); the benchmark makes a schema of its own and drops it",
        "```",
        "",
        "Every run's figures (mean, min, max, which worker process ran each job, the "
        "processes' exit statuses) are in `bench/results/latency.json`.",
        SECTION_END,
    ]
    return "\n".join(lines)


def noise_note(by_run: list[dict[tuple[str, ...], dict[str, Any]]]) -> str:
    """How far the runs' medians lie apart: the machine's noise."""
    if len(by_run) < 2:
        return "One run only: no figure of the machine's noise."
    spreads = []
    for key in by_run[0]:
        medians = [r[key]["p50"] for r in by_run if key in r and r[key]["n"]]
        if len(medians) == len(by_run) and min(medians) > 0:
            spreads.append((max(medians) / min(medians) - 1, key, medians))
    if not spreads:
        return ""
    spreads.sort()
    typical = statistics.median(s for s, _, _ in spreads)
    worst, key, medians = spreads[-1]
    shown = " vs ".join(f"{m:.1f}" for m in medians)
    return (
        f"Noise: between runs the medians differ by {typical:.0%} typically and by "
        f"{worst:.0%} at most ({' '.join(key[:4])}, {key[4]}: {shown} ms). The tails "
        "(p95, p99) move "
        "more: this is a small shared virtual machine running every process, the database "
        "and the client at once."
    )


def write_docs(path: Path, section: str) -> None:
    """Replace the latency section of ``path`` (or add it; create the file if needed)."""
    if path.exists():
        text = path.read_text(encoding="utf-8")
    else:
        text = (
            "# Benchmarks\n\n"
            "Figures measured on real processes with the scripts in `bench/`; each section "
            "says on which machine, when, and how to rerun it.\n"
        )
    pattern = re.compile(re.escape(SECTION_BEGIN) + ".*?" + re.escape(SECTION_END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def names(allowed: Sequence[str]) -> Callable[[str], list[str]]:
        def parse(text: str) -> list[str]:
            chosen = [part.strip() for part in text.split(",") if part.strip()]
            unknown = set(chosen) - set(allowed)
            if unknown or not chosen:
                raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}")
            return chosen

        return parse

    parser.add_argument("--backends", type=names(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--topologies", type=names(list(TOPOLOGIES)), default=list(TOPOLOGIES))
    parser.add_argument(
        "--cancel-topologies",
        type=names(list(TOPOLOGIES)),
        default=list(TOPOLOGIES),
        help="topologies the cancel latency is measured on (default: all)",
    )
    parser.add_argument("--pickup-samples", type=int, default=300)
    parser.add_argument("--cancel-samples", type=int, default=50)
    parser.add_argument("--runs", type=int, default=2, help="the whole set this many times")
    parser.add_argument("--seed", type=int, default=1128)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_URL_ENV, "").strip() or DEFAULT_POSTGRES_URL,
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write figures")
    parser.add_argument(
        "--docs", type=Path, default=DEFAULT_DOCS, help="markdown file whose section is replaced"
    )
    parser.add_argument("--no-docs", action="store_true", help="leave the markdown file alone")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: print the tables of --json and rewrite the markdown section",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print, write the JSON file and the markdown section."""
    args = parse_args(argv)
    if args.report_only:
        report = json.loads(args.json.read_text())
        for run in report["runs"]:
            print_table(run)
        if not args.no_docs:
            write_docs(args.docs, markdown(report))
            print(f"\nwrote the latency section of {args.docs}")
        return 0
    if "postgres" in args.backends:
        problem = postgres_problem(args.postgres_url)
        if problem is not None:
            print(
                f"!!! PostgreSQL at {args.postgres_url} does not answer ({problem}): "
                f"measuring SQLite only. Set {POSTGRES_URL_ENV} or --postgres-url.",
                file=sys.stderr,
            )
            args.backends = [b for b in args.backends if b != "postgres"]
    if not args.backends:
        return 1
    rng = random.Random(args.seed)
    machine = machine_info(args.postgres_url if "postgres" in args.backends else None)
    runs = []
    for number in range(1, args.runs + 1):
        run = run_once(args, number, rng)
        print_table(run)
        runs.append(run)
    report = {
        "machine": machine,
        "settings": {
            "pickup_samples": args.pickup_samples,
            "cancel_samples": args.cancel_samples,
            "warmup_samples": WARMUP,
            "pickup_pause_seconds": PICKUP_PAUSE,
            "cancel_after_seconds": CANCEL_AFTER,
            "jobdeck_settings": "defaults (only JOBDECK_DATABASE_URL, JOBDECK_PG_SCHEMA, "
            "JOBDECK_TASKS set)",
        },
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.json}")
    if not args.no_docs:
        write_docs(args.docs, markdown(report))
        print(f"wrote the latency section of {args.docs}")
    failures = [r for run in runs for r in run["results"] if r["errors"]]
    unclean = [
        s for run in runs for s in run["shutdowns"] if set(s["exit_statuses"].values()) != {0}
    ]
    return 1 if failures or unclean else 0


if __name__ == "__main__":
    sys.exit(main())
