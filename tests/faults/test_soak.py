"""The soak, on both backends: jobs of mixed length and outcome while worker processes are
killed with SIGKILL every couple of seconds and replaced, and the database stalls now and
then (driver: :mod:`faults.soak`).

``make test`` runs about 200 jobs per backend; ``make soak`` runs 2,000
(``JOBDECK_SOAK_JOBS=2000``) and writes the figures to ``JOBDECK_SOAK_RESULTS``
(``bench/results/soak.json``). Each run's one-line summary is printed at the end of the
pytest run.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backends import Database
from e2e.database import DatabaseReader
from e2e.processes import Launcher

from .soak import (
    CONCURRENCY,
    KILL_EVERY_SECONDS,
    LEASE_SECONDS,
    SOAK_RESULTS_ENV,
    STALL_EVERY_SECONDS,
    STALL_SECONDS,
    WORKERS,
    Kill,
    PlannedJob,
    Soak,
    SoakReport,
    analyse,
    plan,
    soak_deadline,
    soak_jobs,
)
from .soak_ledger import LedgerRun

pytestmark = pytest.mark.e2e

N_JOBS = soak_jobs()


class SoakSummaries:
    """A plugin the soak registers: prints each run's summary at the end of the pytest run."""

    name = "jobdeck-soak-summaries"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Write the summaries collected, one line per backend."""
        if self.lines:
            terminalreporter.write_sep("-", "soak")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture
def summaries(request: pytest.FixtureRequest) -> SoakSummaries:
    """The summaries plugin of this pytest run (registered by the first soak)."""
    manager = request.config.pluginmanager
    plugin = manager.get_plugin(SoakSummaries.name)
    if plugin is None:
        plugin = SoakSummaries()
        manager.register(plugin, SoakSummaries.name)
    assert isinstance(plugin, SoakSummaries)
    return plugin


def save_figures(path: Path, backend: str, report: SoakReport) -> None:
    """Put one backend's figures into the results file (the other backend's are kept)."""
    results: dict[str, Any] = {}
    if path.exists():
        results = json.loads(path.read_text(encoding="utf-8"))
    results.setdefault("backends", {})[backend] = {
        **report.figures(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    results["settings"] = {
        "worker_processes": WORKERS,
        "concurrency": CONCURRENCY,
        "lease_seconds": LEASE_SECONDS,
        "kill_every_seconds": list(KILL_EVERY_SECONDS),
        "stall_every_seconds": list(STALL_EVERY_SECONDS),
        "stall_seconds": STALL_SECONDS,
    }
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@pytest.mark.timeout(soak_deadline(N_JOBS) + 120)
def test_soak_with_workers_killed_at_random(
    cluster: Launcher,
    db: DatabaseReader,
    fresh_database: Database,
    summaries: SoakSummaries,
) -> None:
    """Jobs of mixed length and outcome (succeed, raise, time out, get cancelled; async and
    cooperative sync), while a random worker process is SIGKILLed every 1.5-2.5 s and
    replaced, and the database stalls for longer than a lease now and then: every accepted
    job exists and ends terminal; its status matches what its task did
    (:func:`faults.soak.status_problem` says what a kill may change: ``WorkerLost`` attempts,
    and ``failed``/``WorkerLost`` once the kills used up every attempt); no two runs of one
    job overlap in time (the ledger the tasks write; a killed process's runs end when it was
    killed); every run ended and each attempt ran at most once; every stall made at least
    one run abandon itself (lease lost); the surviving workers exit 0 on SIGTERM."""
    backend = fresh_database.backend.name
    report = Soak(cluster, db, plan(N_JOBS)).run()
    line = f"soak [{backend}]: {report.line()}"
    summaries.lines.append(line)
    print(line)
    results = os.environ.get(SOAK_RESULTS_ENV, "").strip()
    if results:
        save_figures(Path(results), backend, report)

    problems = report.problems()
    assert not problems, "\n".join(
        f"{name} ({len(items)}): " + "; ".join(items[:10]) for name, items in problems.items()
    )
    assert report.kills >= 3, f"too few kills to mean anything: {line}"
    # Each stall began while a cancel job ran, never cancelled during the stall: fenced.
    assert report.stalls >= 1 and report.fenced_runs >= report.stalls, line
    assert report.statuses.keys() == {"succeeded", "failed", "cancelled"}, line


def test_the_checks_catch_lost_jobs_wrong_outcomes_and_overlaps() -> None:
    """The soak's checks, on made-up results, find each sort of problem they look for (so a
    clean soak means something): a lost job, one left running, a wrong status, a WorkerLost
    ending with attempts left, overlapping runs (a killed run ends when its process was
    killed), a run that never ended, an attempt run twice."""
    jobs = [PlannedJob(f"j{i}", "soak_sync", "succeed", 0.1, i, max_attempts=3) for i in range(8)]
    jobs[2] = PlannedJob("j2", "soak_async", "raise", 0.1, 2, max_attempts=2)

    def row(job_id: str, status: str, attempt: int, **values: Any) -> dict[str, Any]:
        lost = [{"type": "WorkerLost"} for _ in range(attempt - 1)]
        base = {"id": job_id, "status": status, "attempt": attempt, "max_attempts": 3}
        return {"result": None, "error": None, "attempt_errors": lost, **base, **values}

    def run(job_id: str, attempt: int, pid: int, start: float, end: float | None) -> LedgerRun:
        return LedgerRun(job_id, attempt, pid, 1, start, end, None if end is None else "returned")

    rows = [
        row("j0", "succeeded", 2, result={"value": 0}),  # killed, then ran again: fine
        row("j1", "succeeded", 2, result={"value": 1}),  # ran again before the kill
        row("j2", "succeeded", 1, result={"value": 2}),  # a raise job cannot succeed
        row("j3", "failed", 2, error={"type": "WorkerLost"}),  # attempts were left
        # j4 lost
        row("j5", "running", 1),
        row("j6", "succeeded", 1, result={"value": 6}),  # its run never ended
        row("j7", "succeeded", 1, result={"value": 7}),  # attempt 1 ran twice
    ]
    ledger = [
        run("j0", 1, 100, 1.0, None),
        run("j0", 2, 101, 4.0, 4.5),
        run("j1", 1, 100, 1.0, None),
        run("j1", 2, 101, 2.5, 3.5),
        run("j2", 1, 101, 1.0, 1.1),
        run("j6", 1, 101, 1.0, None),
        run("j7", 1, 101, 1.0, 1.2),
        run("j7", 1, 101, 1.5, 1.7),
    ]
    kills = [Kill(100, 3.0)]
    ids = [job.id for job in jobs]
    report = analyse(jobs, ids, rows, ledger, kills, seconds=1.0)

    assert report.lost == ["j4"]
    assert report.not_terminal == ["j5: running"]
    # j6 and j7 too: their stored success is not one run of the final attempt that returned.
    assert [problem.split(" ")[0] for problem in report.wrong_status] == ["j2", "j3", "j6", "j7"]
    assert report.overlapping == [
        "j1: attempt 1 (pid 100, ended by kill) overlaps attempt 2 (pid 101) by 0.500 s"
    ]
    assert report.open_runs == ["j6 attempt 1 in pid 101"]
    assert report.duplicate_attempts == ["j7: attempt 1 ran 2 times"]
    assert report.kills == 1 and report.runs == len(ledger)
    assert report.worker_lost_attempts == 3 and report.ended_worker_lost == 1
