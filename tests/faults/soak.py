"""The soak driver: many jobs of mixed length and outcome while worker processes are killed.

:func:`plan` draws the jobs (deterministically, from their index): half async, half
cooperative sync (:mod:`faults.soak_tasks`); about half succeed, a fifth raise, some run past
their timeout, some are cancelled over HTTP (some at once, most once seen running).
:class:`Soak` runs them on ``jobdeck serve --no-worker`` (never killed) and three
``jobdeck worker`` processes, SIGKILLs one of those at random every 1.5-2.5 s and starts a
replacement at once (two or three alive), until every job is terminal. Every 5-8 s, while a
cancel job runs, it also stalls the database (:class:`DatabaseStall`) for 1.3 leases, with
no cancels and no kills meanwhile: the workers cannot renew their leases, and the runs in
flight must abandon themselves (self-fencing) before anyone may rescue their jobs. At the end
it stops the survivors (SIGTERM, exit 0) and :func:`analyse` compares the jobs, the ledger
the tasks wrote (:mod:`faults.soak_ledger`) and the kills.

The test runs about 200 jobs (``JOBDECK_SOAK_JOBS``, default :data:`DEFAULT_JOBS`);
``make soak`` runs 2,000 and writes the figures to ``JOBDECK_SOAK_RESULTS``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends import Database
from e2e.database import DatabaseReader
from e2e.processes import JobdeckProcess, Launcher, all_jobs

from .soak_ledger import LEDGER_ENV, LedgerRun, create_ledger, read_ledger

SOAK_JOBS_ENV = "JOBDECK_SOAK_JOBS"
SOAK_RESULTS_ENV = "JOBDECK_SOAK_RESULTS"
DEFAULT_JOBS = 200
SEED = 20261128

#: Worker processes alive (less one while a replacement starts), and job slots in each:
#: the tasks mostly sleep, so 12 slots suit a 2-core machine.
WORKERS = 3
CONCURRENCY = 4
#: Short enough for a killed worker's jobs to be rescued well inside the soak, long enough
#: for heartbeats to get through on a busy 2-core machine.
LEASE_SECONDS = 2.0
KILL_EVERY_SECONDS = (1.5, 2.5)
#: Now and then the database stalls: the driver holds the jobs table's write lock for longer
#: than a lease, so that live workers cannot renew and must abandon their runs themselves.
#: The first stall comes early, while the queue is full.
FIRST_STALL_SECONDS = (2.0, 4.0)
STALL_EVERY_SECONDS = (5.0, 8.0)
STALL_SECONDS = 1.3 * LEASE_SECONDS
POLL_SECONDS = 0.1
BATCH_SIZE = 500
#: Every process reads the same CLOCK_REALTIME; this only covers its resolution.
CLOCK_TOLERANCE_SECONDS = 0.005
#: How many problems of each sort the report spells out.
SHOWN = 5

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
#: The error type a job's own failures have, by outcome.
OWN_ERROR = {"raise": "SoakError", "time_out": "TimeoutError"}
#: How the final run of a job ended, when the job ended by what its task did.
FINAL_ENDING = {
    "succeed": "returned",
    "raise": "raised",
    "time_out": "interrupted:JobTimedOut",
}
TESTS_DIR = Path(__file__).resolve().parent.parent
STARTED = re.compile(r"worker \S+ started")


def soak_jobs() -> int:
    """How many jobs to run: ``$JOBDECK_SOAK_JOBS`` or :data:`DEFAULT_JOBS`."""
    return int(os.environ.get(SOAK_JOBS_ENV, "").strip() or DEFAULT_JOBS)


def soak_deadline(n_jobs: int) -> float:
    """Seconds the soak may take before it is declared stuck (generous: 2-core machine)."""
    return 60.0 + 0.15 * n_jobs


# --- the jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedJob:
    """One job of the soak and what its task will do."""

    id: str
    kind: str
    outcome: str
    seconds: float
    value: int
    max_attempts: int
    timeout: float | None = None
    #: Cancel it right after submitting it (else once it is seen running); cancel jobs only.
    cancel_at_once: bool = False

    def spec(self) -> dict[str, Any]:
        """The ``POST /v1/jobs:batch`` entry."""
        spec: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "params": {"outcome": self.outcome, "seconds": self.seconds, "value": self.value},
            "max_attempts": self.max_attempts,
            "labels": {"outcome": self.outcome},
        }
        if self.timeout is not None:
            spec["timeout"] = self.timeout
        return spec


def plan(n_jobs: int, seed: int = SEED) -> list[PlannedJob]:
    """``n_jobs`` jobs, each drawn from its own index (the same list every time)."""
    jobs = []
    for i in range(n_jobs):
        rng = random.Random(f"{seed}:{i}")
        kind = rng.choice(["soak_async", "soak_sync"])
        outcome = rng.choices(["succeed", "raise", "time_out", "cancel"], [50, 20, 15, 15])[0]
        job_id = f"soak-{i:05d}"
        if outcome == "succeed":
            seconds = rng.choices([0.0, 0.02, 0.1, 0.3, 0.6, 1.2, 3.0], [2, 2, 3, 3, 3, 2, 1])[0]
            job = PlannedJob(job_id, kind, outcome, seconds, i, max_attempts=3)
        elif outcome == "raise":
            seconds = rng.choice([0.0, 0.05, 0.2, 0.5])
            job = PlannedJob(job_id, kind, outcome, seconds, i, max_attempts=2)
        elif outcome == "time_out":
            timeout = rng.choice([0.2, 0.5])
            job = PlannedJob(job_id, kind, outcome, 60.0, i, max_attempts=2, timeout=timeout)
        else:
            at_once = rng.random() < 0.3
            job = PlannedJob(job_id, kind, outcome, 600.0, i, 3, cancel_at_once=at_once)
        jobs.append(job)
    return jobs


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kill:
    """A worker process the driver killed with SIGKILL: when it was dead and reaped."""

    pid: int
    at: float


class Soak:
    """Runs the planned jobs on ``cluster`` while killing worker processes."""

    def __init__(
        self,
        cluster: Launcher,
        db: DatabaseReader,
        jobs: Sequence[PlannedJob],
        *,
        seed: int = SEED,
    ) -> None:
        self.cluster = cluster
        self.db = db
        self.jobs = list(jobs)
        self.rng = random.Random(seed)
        self.ledger_path = cluster.dir / "ledger.db"
        self.kills: list[Kill] = []
        self.stalls = 0
        self.workers: list[JobdeckProcess] = []
        self._started: set[int] = set()
        self._cancelled: set[str] = set()
        paths = [str(TESTS_DIR), os.environ.get("PYTHONPATH")]
        self.env = {
            "PYTHONPATH": os.pathsep.join(filter(None, paths)),
            LEDGER_ENV: str(self.ledger_path),
        }

    def run(self) -> SoakReport:
        """Run the soak to the end and compare what happened with what should have."""
        create_ledger(self.ledger_path)
        self.cluster.settings.update(
            {
                "JOBDECK_TASKS": "faults.soak_tasks",
                "JOBDECK_LEASE_SECONDS": str(LEASE_SECONDS),
                "JOBDECK_CONCURRENCY": str(CONCURRENCY),
            }
        )
        api = self.cluster.serve("--no-worker", env=self.env)
        assert api.base_url is not None
        self.workers = [self.cluster.worker(env=self.env) for _ in range(WORKERS)]
        self._started = {w.pid for w in self.workers}
        began = time.monotonic()
        with httpx.Client(base_url=api.base_url, timeout=30.0) as http:
            accepted = self._submit(http)
            self._kill_until_done(http, began)
            seconds = time.monotonic() - began
            for worker in self.workers:
                # A replacement still starting up has no SIGTERM handler yet.
                worker.wait_for_stderr(STARTED.pattern)
                assert worker.terminate() == 0, worker.describe()
            rows = all_jobs(http)
        assert api.terminate() == 0, api.describe()
        return analyse(
            self.jobs,
            accepted,
            rows,
            read_ledger(self.ledger_path),
            self.kills,
            seconds=seconds,
            stalls=self.stalls,
        )

    def _submit(self, http: httpx.Client) -> list[str]:
        """Submit every job in batches; cancel the cancel-at-once ones right after."""
        accepted: list[str] = []
        for start in range(0, len(self.jobs), BATCH_SIZE):
            chunk = self.jobs[start : start + BATCH_SIZE]
            answer = http.post("/v1/jobs:batch", json={"jobs": [job.spec() for job in chunk]})
            assert answer.status_code == 202, answer.text
            accepted += [item["id"] for item in answer.json()["items"]]
            for job in chunk:
                if job.cancel_at_once:
                    self._cancel(http, job.id)
        return accepted

    def _cancel(self, http: httpx.Client, job_id: str) -> None:
        answer = http.post(f"/v1/jobs/{job_id}/cancel")
        assert answer.status_code in (200, 202), answer.text
        self._cancelled.add(job_id)

    def _running_cancel_jobs(self, http: httpx.Client) -> list[str]:
        """The cancel jobs seen running that were not cancelled yet."""
        answer = http.get(
            "/v1/jobs", params={"label": "outcome:cancel", "status": "running", "limit": 1000}
        )
        assert answer.status_code == 200, answer.text
        return [job["id"] for job in answer.json()["items"] if job["id"] not in self._cancelled]

    def _kill_until_done(self, http: httpx.Client, began: float) -> None:
        """Until every job is terminal: cancel the cancel jobs seen running (from the first
        stall on), kill and replace a worker every 1.5-2.5 s, and every 5-8 s stall the
        database while a cancel job runs (no cancels and no kills meanwhile: the runs in
        flight must fence themselves)."""
        deadline = began + soak_deadline(len(self.jobs))
        next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY_SECONDS)
        next_stall = time.monotonic() + self.rng.uniform(*FIRST_STALL_SECONDS)
        stall = DatabaseStall(self.db.database)
        try:
            while True:
                now = time.monotonic()
                counts = self.db.status_counts()
                if sum(counts.values()) == len(self.jobs) and set(counts) <= TERMINAL:
                    return
                if now > deadline:
                    pytest.fail(
                        f"soak not done after {soak_deadline(len(self.jobs)):.0f} s: {counts}, "
                        f"{len(self.kills)} kills, {stall.count} stalls"
                    )
                if stall.held:
                    if now >= stall.until:
                        stall.release()
                        next_stall = now + self.rng.uniform(*STALL_EVERY_SECONDS)
                else:
                    running = self._running_cancel_jobs(http)
                    if running and now >= next_stall:
                        stall.hold(STALL_SECONDS)  # those keep running: their runs are fenced
                    else:
                        # Not before the first stall: it needs cancel jobs running, and
                        # workers claiming ahead may have started every one of them by then.
                        for job_id in running if stall.count else ():
                            self._cancel(http, job_id)
                        if now >= next_kill:
                            self._kill_one()
                            next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY_SECONDS)
                time.sleep(POLL_SECONDS)  # pacing of the loop, not a wait for anything
        finally:
            stall.close()
            self.stalls = stall.count

    def _kill_one(self) -> None:
        """SIGKILL a random worker that has started, and start its replacement at once."""
        for worker in self.workers:
            if worker.pid not in self._started and STARTED.search(worker.stderr()):
                self._started.add(worker.pid)
        for worker in self.workers:
            assert worker.returncode is None, f"a worker died by itself\n{worker.describe()}"
        candidates = [w for w in self.workers if w.pid in self._started]
        if not candidates:
            return
        victim = self.rng.choice(candidates)
        victim.send(signal.SIGKILL)
        assert victim.popen.wait(10) == -signal.SIGKILL
        self.kills.append(Kill(victim.pid, time.time()))
        self.workers.remove(victim)
        self.workers.append(self.cluster.start("worker", env=self.env))


class DatabaseStall:
    """Holds the write lock of the jobs table for a while: ``BEGIN IMMEDIATE`` on the SQLite
    file, ``LOCK TABLE jobs IN EXCLUSIVE MODE`` on PostgreSQL. Reads go on (WAL; the lock mode
    lets plain SELECTs through); every write, heartbeats included, waits."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.count = 0
        self.until = 0.0
        self._conn: Any = None

    @property
    def held(self) -> bool:
        """Whether the lock is held right now."""
        return self._conn is not None

    def hold(self, seconds: float) -> None:
        """Take the lock (waiting for the writer that has it, if any) for ``seconds``."""
        if self.database.pg_schema is None:
            path = self.database.database_url.removeprefix("sqlite:///")
            conn: Any = sqlite3.connect(path, timeout=30, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            conn = psycopg.connect(self.database.database_url)
            conn.execute(f'LOCK TABLE "{self.database.pg_schema}".jobs IN EXCLUSIVE MODE')
        self._conn = conn
        self.until = time.monotonic() + seconds
        self.count += 1

    def release(self) -> None:
        """Let the writes through."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.rollback()
            conn.close()

    def close(self) -> None:
        """Release the lock if it is held."""
        self.release()


# --- the checks ----------------------------------------------------------------------------


@dataclass
class SoakReport:
    """The soak's figures, and the problems found (none, when all is well)."""

    jobs: int
    kills: int
    stalls: int
    seconds: float
    statuses: dict[str, int]
    runs: int
    lost: list[str] = field(default_factory=list)
    not_terminal: list[str] = field(default_factory=list)
    wrong_status: list[str] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)
    open_runs: list[str] = field(default_factory=list)
    duplicate_attempts: list[str] = field(default_factory=list)
    unknown_runs: list[str] = field(default_factory=list)
    run_more_than_once: int = 0
    rerun_after_loss: int = 0
    fenced_runs: int = 0
    worker_lost_attempts: int = 0
    ended_worker_lost: int = 0

    def problems(self) -> dict[str, list[str]]:
        """The non-empty problem lists, by name."""
        named = {
            "lost": self.lost,
            "not terminal": self.not_terminal,
            "wrong status": self.wrong_status,
            "overlapping runs": self.overlapping,
            "runs without an end": self.open_runs,
            "attempts run twice": self.duplicate_attempts,
            "runs of unknown attempts": self.unknown_runs,
        }
        return {name: items for name, items in named.items() if items}

    def line(self) -> str:
        """The one-line summary."""
        return (
            f"{self.jobs} jobs in {self.seconds:.1f} s, {self.kills} kills, "
            f"{self.stalls} database stalls: "
            f"{len(self.lost)} lost, {len(self.not_terminal)} not terminal, "
            f"{len(self.wrong_status)} wrong status, {len(self.overlapping)} overlapping runs, "
            f"{len(self.open_runs)} runs without end; {self.runs} runs, "
            f"{self.run_more_than_once} jobs run more than once "
            f"({self.rerun_after_loss} after a lost run), {self.fenced_runs} runs fenced, "
            f"{self.worker_lost_attempts} WorkerLost attempts, "
            f"{self.ended_worker_lost} jobs ended WorkerLost; "
            + ", ".join(f"{status} {n}" for status, n in sorted(self.statuses.items()))
        )

    def figures(self) -> dict[str, Any]:
        """The report as JSON: counts, and the first few problems of each sort."""
        figures = asdict(self)
        for name, value in figures.items():
            if isinstance(value, list):
                figures[name] = len(value)
        figures["problems"] = {name: items[:SHOWN] for name, items in self.problems().items()}
        figures["summary"] = self.line()
        return figures


def run_end(run: LedgerRun, kills: Sequence[Kill]) -> float | None:
    """When a run stopped: its recorded end, or the first kill of its process after it
    started (its end was never written), or None (it never stopped, as far as we know)."""
    if run.ended_at is not None:
        return run.ended_at
    ends = [k.at for k in kills if k.pid in (run.pid, run.ppid) and k.at >= run.started_at]
    return min(ends) if ends else None


def analyse(
    jobs: Sequence[PlannedJob],
    accepted: Sequence[str],
    rows: Iterable[dict[str, Any]],
    ledger: Sequence[LedgerRun],
    kills: Sequence[Kill],
    *,
    seconds: float,
    stalls: int = 0,
) -> SoakReport:
    """Compare the jobs as stored, the runs the ledger holds and the kills; see
    :func:`status_problem` for what "the status matches" allows."""
    by_id = {row["id"]: row for row in rows}
    runs_of: dict[str, list[LedgerRun]] = defaultdict(list)
    for run in ledger:
        runs_of[run.job_id].append(run)
    report = SoakReport(
        jobs=len(jobs),
        kills=len(kills),
        stalls=stalls,
        seconds=seconds,
        statuses=dict(Counter(row["status"] for row in by_id.values())),
        runs=len(ledger),
    )
    report.lost = [job_id for job_id in accepted if job_id not in by_id]
    assert sorted(accepted) == sorted(job.id for job in jobs), "not every job was accepted"
    for job in jobs:
        row = by_id.get(job.id)
        if row is None:
            continue
        runs = sorted(runs_of.get(job.id, []), key=lambda r: r.started_at)
        if row["status"] not in TERMINAL:
            report.not_terminal.append(f"{job.id}: {row['status']}")
            continue
        problem = status_problem(job, row, runs)
        if problem is not None:
            report.wrong_status.append(f"{job.id} ({job.kind} {job.outcome}): {problem}")
        check_runs(job.id, row, runs, kills, report)
        errors = [e["type"] for e in row["attempt_errors"]]
        report.worker_lost_attempts += errors.count("WorkerLost")
        if row["status"] == "failed" and (row["error"] or {}).get("type") == "WorkerLost":
            report.ended_worker_lost += 1
    return report


def check_runs(
    job_id: str,
    row: dict[str, Any],
    runs: Sequence[LedgerRun],
    kills: Sequence[Kill],
    report: SoakReport,
) -> None:
    """No two runs of the job overlap; each ended; each attempt ran once at most, and only
    attempts the job knows of ran."""
    ends = [run_end(run, kills) for run in runs]
    for run, end in zip(runs, ends, strict=True):
        if end is None:
            report.open_runs.append(f"{job_id} attempt {run.attempt} in pid {run.pid}")
        if run.attempt > row["attempt"] or run.attempt < 1:
            report.unknown_runs.append(f"{job_id}: ran attempt {run.attempt} of {row['attempt']}")
        if run.ending == "interrupted:LeaseLost":
            report.fenced_runs += 1
    for i, (earlier, end) in enumerate(zip(runs, ends, strict=True)):
        for later in runs[i + 1 :]:
            if end is None or end > later.started_at + CLOCK_TOLERANCE_SECONDS:
                overlap = "never ended" if end is None else f"{end - later.started_at:.3f} s"
                report.overlapping.append(
                    f"{job_id}: attempt {earlier.attempt} (pid {earlier.pid}, ended "
                    f"{(earlier.ending or 'by kill') if end else 'never'}) overlaps attempt "
                    f"{later.attempt} (pid {later.pid}) by {overlap}"
                )
    attempts = Counter(run.attempt for run in runs)
    report.duplicate_attempts += [
        f"{job_id}: attempt {attempt} ran {n} times" for attempt, n in attempts.items() if n > 1
    ]
    if len(runs) > 1:
        report.run_more_than_once += 1
        if any(run.ending in (None, "interrupted:LeaseLost") for run in runs[:-1]):
            report.rerun_after_loss += 1


def status_problem(job: PlannedJob, row: dict[str, Any], runs: Sequence[LedgerRun]) -> str | None:
    """What is wrong with the job's final state, or None. What "matches" allows:

    - Every attempt error is the job's own error type (``SoakError`` for ``raise``,
      ``TimeoutError`` for ``time_out``) or ``WorkerLost``: a killed worker, or a lease that
      could not be renewed in time, ends an attempt, and the job runs again (at least once).
    - A job may end ``failed`` with ``WorkerLost`` only when that ended its last allowed
      attempt (``attempt == max_attempts``): kills consumed its attempts before its task could
      end it. Any kind may end so, a cancel job too if the kills beat the cancel.
    - Otherwise it ends as its task leads to: ``succeed`` succeeded with ``{"value": value}``;
      ``raise`` failed with ``SoakError`` and ``time_out`` failed with ``TimeoutError``, both
      after their last attempt; ``cancel`` cancelled with no result. For the first three, the
      ledger holds the run of the final attempt, ended that way (returned, raised, stopped
      by the timeout): the stored outcome is what a run did.
    """
    status = row["status"]
    errors = [e["type"] for e in row["attempt_errors"]]
    final_error = (row["error"] or {}).get("type")
    allowed = {"WorkerLost", *([OWN_ERROR[job.outcome]] if job.outcome in OWN_ERROR else [])}
    if not set(errors) <= allowed:
        return f"attempt errors {errors}"
    last_attempt = row["attempt"] == row["max_attempts"]
    if status == "failed" and final_error == "WorkerLost":
        if not last_attempt or errors[-1:] != ["WorkerLost"]:
            return f"WorkerLost at attempt {row['attempt']}/{row['max_attempts']}, {errors}"
        return None
    if job.outcome == "cancel":
        return None if status == "cancelled" and row["result"] is None else f"{status}"
    if job.outcome == "succeed":
        if status != "succeeded" or row["result"] != {"value": job.value}:
            return f"{status} with result {row['result']!r}, error {final_error}"
    else:
        own = OWN_ERROR[job.outcome]
        if status != "failed" or final_error != own or not last_attempt or errors[-1:] != [own]:
            return f"{status} with error {final_error} at attempt {row['attempt']}, {errors}"
    final_runs = [run for run in runs if run.attempt == row["attempt"]]
    endings = [run.ending for run in final_runs]
    if endings != [FINAL_ENDING[job.outcome]]:
        return f"{status}, but the runs of attempt {row['attempt']} ended {endings}"
    return None
