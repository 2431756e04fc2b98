"""The queues jobdeck's users would pick instead, measured the same way, one after the other.

    .venv-peers/bin/python bench/peers/run.py                 # or: make bench-peers
    .venv-peers/bin/python bench/peers/run.py --only huey,rq --jobs 5000 --pickup-samples 100

Runs in its own virtual environment (``.venv-peers``, from ``bench/peers/requirements.txt``)
against the local Redis and PostgreSQL servers. Each peer is a module ``peer_<name>.py`` (see
``adapter.py``); ``bench/peers/README.md`` states the method. For each peer, in turn:

1. **enqueue**: its part of the backend reset, ``jobs`` no-op jobs enqueued one call per job
   (single), timed; then reset again and the same count enqueued with its bulk call,
   ``--bulk-batch`` jobs per call, where it has one.
2. **drain**: ONE worker command with the peer's usual settings started on the full queue; the
   jobs record their own start and finish times (``jobtimes.py``); the figures are
   ``jobs / (last finish - first start)`` (steady state) and ``jobs / (last finish - spawn)``.
3. **pickup**: reset, a fresh worker, ``--warmup`` jobs thrown away, then ``--pickup-samples``
   jobs enqueued one at a time on the idle worker, each waited for, with a random 20-60 ms
   pause between (plus a random share of the poll period for a worker that polls on a fixed
   clock, arq); the figure is the job's start minus ``time.time()`` read just before the
   peer's enqueue call.

Every worker process is killed at the end of its phase (and checked gone); each peer's Redis
database number is flushed or its PostgreSQL database dropped at the end. It prints a table and
writes ``bench/results/peers.json`` (with ``--only``, the peers not run keep their earlier
entries). The exit status is 1 when a peer failed or a process was left running.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jobtimes
import servers
from adapter import PeerAdapter
from procs import Worker

PEERS_DIR = Path(__file__).resolve().parent
ROOT = PEERS_DIR.parent.parent
DEFAULT_OUTPUT = ROOT / "bench" / "results" / "peers.json"
PEERS = (
    "celery",
    "rq",
    "arq",
    "saq_redis",
    "saq_postgres",
    "procrastinate",
    "pgqueuer",
    "huey",
    "dramatiq",
)
#: Seconds between two looks at the record files while a phase waits for its jobs.
DRAIN_POLL = 0.02
PICKUP_POLL = 0.001
#: Seconds of idleness between two pickup samples, drawn uniformly.
PICKUP_PAUSE = (0.02, 0.06)
#: Seconds the first job may take (the worker starts), and any later pickup sample.
FIRST_JOB_TIMEOUT = 60.0
PICKUP_TIMEOUT = 10.0


class PeerFailed(Exception):
    """A phase could not finish; the message says why."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help=f"comma-separated peers (default: all of {', '.join(PEERS)})"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=20_000,
        help="jobs to enqueue and drain per peer (slow peers cap it: RQ 2,000, "
        "procrastinate 5,000, saq_postgres 10,000)",
    )
    parser.add_argument("--bulk-batch", type=int, default=1_000, help="jobs per bulk call")
    parser.add_argument("--pickup-samples", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10, help="pickup samples thrown away")
    parser.add_argument(
        "--drain-timeout", type=float, default=600.0, help="seconds a drain may take at most"
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--keep-logs", action="store_true", help="keep the workers' log files")
    args = parser.parse_args(argv)
    args.peers = PEERS if not args.only else tuple(p.strip() for p in args.only.split(","))
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(unknown)}")
    return args


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, kernel and load of this machine."""
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
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "kernel": platform.release(),
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }


def percentiles(values: list[float]) -> dict[str, Any]:
    """n, p50, p95, p99, mean and max of ``values`` (ms, rounded to 0.01 ms)."""
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {
        "n": len(values),
        "p50": round(cuts[49], 2),
        "p95": round(cuts[94], 2),
        "p99": round(cuts[98], 2),
        "mean": round(statistics.fmean(values), 2),
        "max": round(max(values), 2),
    }


def log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class Phase:
    """One worker run of a peer: its record directory, its log and its process."""

    def __init__(self, adapter: PeerAdapter, workdir: Path, label: str) -> None:
        self.times = workdir / f"{adapter.name}-{label}"
        self.times.mkdir()
        self.log = workdir / f"{adapter.name}-{label}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(PEERS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env[jobtimes.ENV] = str(self.times)
        self.worker = Worker(adapter.worker_argv(), PEERS_DIR, env, self.log)
        self.left_running: list[int] = []

    def wait(self, count: int, timeout: float, poll: float) -> None:
        """Wait until ``count`` jobs have recorded themselves."""
        deadline = time.monotonic() + timeout
        next_watch = 0.0
        while jobtimes.count(self.times) < count:
            now = time.monotonic()
            if now > next_watch:
                if not self.worker.alive():
                    raise PeerFailed(
                        f"worker exited with {self.worker.proc.returncode} after "
                        f"{jobtimes.count(self.times)} of {count} jobs:\n{log_tail(self.log)}"
                    )
                next_watch = now + 0.5
            if now > deadline:
                raise PeerFailed(
                    f"{jobtimes.count(self.times)} of {count} jobs done after {timeout:.0f} s:\n"
                    f"{log_tail(self.log)}"
                )
            time.sleep(poll)

    def stop(self) -> None:
        self.left_running = self.worker.stop()


def measure_enqueue(adapter: PeerAdapter, jobs: int, batch: int) -> dict[str, Any]:
    """Single then bulk enqueue rates; leaves ``jobs`` jobs queued for the drain."""
    adapter.reset()
    started = time.perf_counter()
    adapter.enqueue(jobs)
    single = jobs / (time.perf_counter() - started)
    bulk = None
    if adapter.bulk_method is not None:
        adapter.reset()
        started = time.perf_counter()
        adapter.enqueue_bulk(jobs, batch)
        bulk = jobs / (time.perf_counter() - started)
    return {
        "enqueue_single_per_s": round(single, 1),
        "enqueue_bulk_per_s": None if bulk is None else round(bulk, 1),
    }


def measure_drain(adapter: PeerAdapter, jobs: int, workdir: Path, timeout: float) -> dict:
    """Start one worker on the full queue and time how it empties it."""
    phase = Phase(adapter, workdir, "drain")
    try:
        phase.wait(jobs, timeout, DRAIN_POLL)
    finally:
        phase.stop()
    records = jobtimes.read(phase.times)
    first_start = min(start for start, _ in records)
    last_finish = max(finish for _, finish in records)
    result = {
        "drain_steady_per_s": round(jobs / (last_finish - first_start), 1),
        "drain_from_spawn_per_s": round(jobs / (last_finish - phase.worker.spawned), 1),
        "drain_seconds": round(last_finish - first_start, 3),
        "spawn_to_first_start_s": round(first_start - phase.worker.spawned, 3),
        "drain_records": len(records),
    }
    if phase.left_running:
        raise PeerFailed(f"processes left running after the drain: {phase.left_running}")
    return result


def measure_pickup(
    adapter: PeerAdapter, samples: int, warmup: int, workdir: Path
) -> dict[str, Any]:
    """Enqueue jobs one at a time on an idle worker; latency = job start - enqueue call."""
    adapter.reset()
    phase = Phase(adapter, workdir, "pickup")
    latencies: list[float] = []
    calls: list[float] = []
    try:
        for i in range(warmup + samples):
            before = adapter.enqueue_one()
            returned = time.time()
            phase.wait(i + 1, FIRST_JOB_TIMEOUT if i == 0 else PICKUP_TIMEOUT, PICKUP_POLL)
            start = max(start for start, _ in jobtimes.read(phase.times))
            if i >= warmup:
                latencies.append((start - before) * 1000)
                calls.append((returned - before) * 1000)
            time.sleep(random.uniform(*PICKUP_PAUSE) + random.uniform(0, adapter.poll_seconds))
    finally:
        phase.stop()
    if phase.left_running:
        raise PeerFailed(f"processes left running after the pickup: {phase.left_running}")
    low, high = PICKUP_PAUSE
    return {
        "pickup_ms": percentiles(latencies),
        "enqueue_call_ms": percentiles(calls),
        "pickup_pause_s": [low, round(high + adapter.poll_seconds, 3)],
    }


def run_peer(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Every measure of one peer; on failure, what was measured and why it stopped."""
    module = importlib.import_module(f"peer_{name}")
    adapter: PeerAdapter = module.Adapter()
    jobs = min(args.jobs, adapter.max_jobs or args.jobs)
    result: dict[str, Any] = {
        "version": importlib.metadata.version(adapter.package),
        "backend": adapter.backend,
        "settings": adapter.settings,
        "jobs": jobs,
        "bulk_method": adapter.bulk_method,
        "bulk_batch": args.bulk_batch if adapter.bulk_method else None,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    started = time.monotonic()
    try:
        print(f"{name}: enqueue {jobs} jobs", flush=True)
        result.update(measure_enqueue(adapter, jobs, args.bulk_batch))
        print(f"{name}: drain", flush=True)
        result.update(measure_drain(adapter, jobs, workdir, args.drain_timeout))
        print(f"{name}: pickup, {args.pickup_samples} samples", flush=True)
        result.update(measure_pickup(adapter, args.pickup_samples, args.warmup, workdir))
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        print(f"{name}: FAILED {result['error']}", file=sys.stderr, flush=True)
    finally:
        with contextlib.suppress(Exception):
            adapter.cleanup()
        with contextlib.suppress(Exception):
            adapter.close()
    result["seconds"] = round(time.monotonic() - started, 1)
    result["load_average_at_end"] = load_average()
    return result


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def print_table(peers: dict[str, dict[str, Any]]) -> None:
    header = (
        f"{'peer':<14} {'backend':<8} {'jobs':>6} {'enq/s':>8} {'bulk/s':>8} "
        f"{'drain/s':>8} {'spawn/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for name, r in peers.items():
        pickup = r.get("pickup_ms") or {}
        print(
            f"{name:<14} {r['backend']:<8} {r['jobs']:>6} "
            f"{fmt(r.get('enqueue_single_per_s')):>8} {fmt(r.get('enqueue_bulk_per_s')):>8} "
            f"{fmt(r.get('drain_steady_per_s')):>8} {fmt(r.get('drain_from_spawn_per_s')):>8} "
            f"{fmt(pickup.get('p50'), 1):>7} {fmt(pickup.get('p95'), 1):>7} "
            f"{fmt(pickup.get('p99'), 1):>7}" + ("  FAILED" if "error" in r else "")
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A SIGTERM (a make interrupted, a timeout) unwinds like Ctrl-C: workers stopped, backends
    # cleaned up.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    document: dict[str, Any] = {
        "machine": machine_info(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "servers": servers.server_versions(),
        "method": {
            "timestamps": "the no-op job writes time.time() at its start and finish (jobtimes.py)",
            "drain_steady": "jobs / (last finish - first start)",
            "drain_from_spawn": "jobs / (last finish - worker spawn)",
            "pickup": "job start - time.time() just before the enqueue call, idle worker",
            "enqueue": "jobs / seconds, one call per job (single) or per bulk batch",
        },
        "run": {
            "jobs": args.jobs,
            "bulk_batch": args.bulk_batch,
            "pickup_samples": args.pickup_samples,
            "warmup": args.warmup,
            "pickup_pause_s": list(PICKUP_PAUSE),
        },
        "peers": {},
    }
    if args.only and args.output.exists():
        with contextlib.suppress(ValueError, OSError):
            document["peers"] = json.loads(args.output.read_text()).get("peers", {})
    workdir = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    failed = False
    try:
        for name in args.peers:
            result = run_peer(name, args, workdir)
            document["peers"][name] = result
            failed |= "error" in result
    finally:
        document["machine"]["load_average_end"] = load_average()
        if args.keep_logs or failed:
            print(f"worker logs: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document["peers"] = {p: document["peers"][p] for p in PEERS if p in document["peers"]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print()
    print_table(document["peers"])
    print(f"\nload average: {document['machine']['load_average_end']}; wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
