"""Event fan-out: 500 open server-sent event streams on 500 running jobs.

    .venv/bin/python bench/fanout.py [--backends sqlite,postgres] [--quick]

``jobdeck serve --no-worker`` (one API process) and one ``jobdeck worker`` with
``JOBDECK_CONCURRENCY=510`` (so that all 500 jobs run at once; every other setting is the
default) share a fresh database. 500 ``ticker`` jobs (``bench/bench_tasks.py``) report
progress once a second, each at its own phase, the progress message holding the wall-clock
time of the ``ctx.progress`` call. The benchmark then opens one ``GET /v1/jobs/{id}/events``
stream per job (httpx, asyncio, one connection each, spread over five loopback source
addresses since jobdeck allows 100 streams per client address by default), keeps them open
for ``--seconds`` (20), and measures:

- the API process's resident memory (``VmRSS`` of ``/proc/<pid>/status``) with the jobs
  running and no stream, then at its peak with the streams open, and after they closed;
- **change → delivery**: the receipt time of each event minus the time in its progress
  message (the worker's coalescing of progress writes, a few per second, is part of it);
- **stored → delivery**: the receipt time minus the event's ``updated_at`` (written by the
  worker as it stores the progress): the API's share.

The client shares the machine: its CPU share while the streams are held is reported too
(near 1.0 means the client, not jobdeck, set the pace).

The first event of each stream (the job's state when the stream opened) is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from common import Database, log, micros, scenario_main, summarize, wait_for
from processes import Fleet, rss_kib, start_serve, start_worker

STREAMS = 500
SECONDS = 20.0
QUICK_SECONDS = 8.0
TICK_SECONDS = 1.0
SOURCE_ADDRESSES = tuple(f"127.0.0.{n}" for n in range(2, 7))
RSS_EVERY_SECONDS = 0.5
UNLIMITED = httpx.Limits(max_connections=None, max_keepalive_connections=0)


class Receiver:
    """What the streams received."""

    def __init__(self) -> None:
        self.change_ms: list[float] = []
        self.stored_ms: list[float] = []
        self.events = 0
        self.open_streams = 0
        self.errors: list[str] = []

    def event(self, data: str, first: bool) -> None:
        """One ``data:`` line, received just now."""
        received = time.time()
        self.events += 1
        if first:
            return
        job = json.loads(data)
        message = job["progress"]["message"]
        if message:
            self.change_ms.append((received - float(message)) * 1000)
        self.stored_ms.append((received - micros(job["updated_at"]) / 1e6) * 1000)


async def follow(client: httpx.AsyncClient, job_id: str, receiver: Receiver) -> None:
    """Read one job's event stream until cancelled."""
    try:
        async with client.stream("GET", f"/v1/jobs/{job_id}/events") as answer:
            if answer.status_code != 200:
                receiver.errors.append(f"{job_id}: {answer.status_code}")
                return
            receiver.open_streams += 1
            first = True
            async for line in answer.aiter_lines():
                if line.startswith("data: "):
                    receiver.event(line[6:], first)
                    first = False
    except httpx.HTTPError as exc:
        receiver.errors.append(f"{job_id}: {type(exc).__name__}: {exc}")


async def fan_out(base_url: str, job_ids: list[str], api_pid: int, seconds: float) -> dict:
    """Open a stream per job, hold them ``seconds``, sample the API's memory meanwhile."""
    receiver = Receiver()
    clients = [
        httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(60.0),
            transport=httpx.AsyncHTTPTransport(local_address=address, limits=UNLIMITED),
        )
        for address in SOURCE_ADDRESSES
    ]
    tasks = [
        asyncio.create_task(follow(clients[i % len(clients)], job_id, receiver))
        for i, job_id in enumerate(job_ids)
    ]
    opened = time.monotonic()
    while receiver.open_streams + len(receiver.errors) < len(job_ids):
        if time.monotonic() - opened > 60:
            break
        await asyncio.sleep(0.05)
    open_seconds = time.monotonic() - opened
    rss_samples = []
    client_cpu = time.process_time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rss_samples.append(rss_kib(api_pid) or 0)
        await asyncio.sleep(RSS_EVERY_SECONDS)
    client_cpu = time.process_time() - client_cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.aclose()
    return {
        "streams_open": receiver.open_streams,
        "open_all_seconds": round(open_seconds, 2),
        "events": receiver.events,
        "events_per_s": round(receiver.events / (seconds + open_seconds), 1),
        "errors": receiver.errors[:20],
        "client_cpu_share": round(client_cpu / seconds, 2),
        "rss_peak_kib": max(rss_samples, default=None),
        "change_to_delivery_ms": summarize(receiver.change_ms),
        "stored_to_delivery_ms": summarize(receiver.stored_ms),
    }


def running_jobs(database: Database) -> int:
    (count,) = database.one("SELECT count(*) FROM {jobs} WHERE status = 'running'")
    return int(count)


def measure_backend(backend: str, postgres_url: str, seconds: float) -> dict[str, Any]:
    """The fan-out on a fresh database of one backend."""
    log(f"fan-out: {backend}, {STREAMS} streams ...")
    with (
        tempfile.TemporaryDirectory(prefix=f"jobdeck-fanout-{backend}-") as tmp,
        Database(backend, Path(tmp), postgres_url) as database,
        Fleet() as fleet,
    ):
        workdir = Path(tmp)
        env = database.env(concurrency=STREAMS + 10)
        base_url = start_serve(fleet, env, workdir, ["--no-worker"], runs_jobs=False)
        api_pid = fleet.processes[0].pid
        start_worker(fleet, env, workdir, name="worker")
        rss_idle = rss_kib(api_pid)
        spec = {"kind": "ticker", "params": {"ticks": 100_000, "interval": TICK_SECONDS}}
        with httpx.Client(base_url=base_url, timeout=60.0) as http:
            answer = http.post("/v1/jobs:batch", json={"jobs": [spec] * STREAMS})
            answer.raise_for_status()
            job_ids = [job["id"] for job in answer.json()["items"]]
            wait_for(lambda: running_jobs(database) == STREAMS, timeout=60.0, what="jobs running")
            time.sleep(2 * TICK_SECONDS)
            rss_before = rss_kib(api_pid)
            result = asyncio.run(fan_out(base_url, job_ids, api_pid, seconds))
            time.sleep(1.0)
            rss_after = rss_kib(api_pid)
            for job_id in job_ids:
                http.post(f"/v1/jobs/{job_id}/cancel")
        result |= {
            "rss_api_idle_kib": rss_idle,
            "rss_jobs_running_kib": rss_before,
            "rss_after_close_kib": rss_after,
            "rss_per_stream_kib": round((result["rss_peak_kib"] - rss_before) / STREAMS, 1)
            if result["rss_peak_kib"] and rss_before
            else None,
        }
        result["exit_statuses"] = fleet.stop()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario on every backend of ``args``."""
    seconds = QUICK_SECONDS if args.quick else SECONDS
    return {
        "method": f"{STREAMS} ticker jobs (progress every {TICK_SECONDS:g} s) in one worker, "
        f"one SSE stream each to `serve --no-worker`, held {seconds:g} s; RSS of the API "
        "process; receipt − progress call (change) and receipt − updated_at (stored)",
        "backends": {b: measure_backend(b, args.postgres_url, seconds) for b in args.backends},
    }


def main(argv: Sequence[str] | None = None) -> int:
    return scenario_main(__doc__, run, argv, quick=f"hold {QUICK_SECONDS:g} s")


if __name__ == "__main__":
    sys.exit(main())
