"""Real ``jobdeck`` processes for the end-to-end tests, polling with deadlines, and reading
every job through the API (:func:`all_jobs`).

Every process runs the installed ``jobdeck`` console script in its own session, with its
environment reduced to ``JOBDECK_*`` settings chosen here (a SQLite file under the test's
``tmp_path``, short intervals), its stdout and stderr written to files next to the database.
A :class:`Launcher` remembers what it started and stops all of it, by process id:
SIGTERM first, SIGKILL after a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

T = TypeVar("T")

#: The console script of the package under test, installed in the same environment as pytest.
JOBDECK = Path(sys.executable).with_name("jobdeck")

#: Settings of every process unless a test overrides them: quick enough for tests, still the
#: real code paths (leases expire, polls and cancel checks run, grace periods are honoured).
FAST_SETTINGS: dict[str, str] = {
    "JOBDECK_LEASE_SECONDS": "1",
    "JOBDECK_POLL_SECONDS": "0.02",
    "JOBDECK_CANCEL_CHECK_SECONDS": "0.05",
    "JOBDECK_SHUTDOWN_GRACE_SECONDS": "2",
    "JOBDECK_BACKOFF_BASE_SECONDS": "0.05",
    "JOBDECK_BACKOFF_MAX_SECONDS": "0.2",
}

#: How long a process may take to start (imports, migrations) or to stop beyond its grace.
START_SECONDS = 20.0
STOP_MARGIN_SECONDS = 5.0
#: Lines of a process's output shown in the report of a failed test.
REPORT_LINES = 150


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.02,
) -> T:
    """Call ``check()`` until it returns something truthy and return that; fail at the deadline.

    ``check`` may raise ``AssertionError`` to say "not yet"; the last such message is shown
    when the deadline passes.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except AssertionError as exc:
            value, last = None, exc
        else:
            last = value
            if value:
                return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not reached within {timeout} s (last: {last!r})")
        time.sleep(interval)


def all_jobs(http: httpx.Client) -> list[dict[str, Any]]:
    """Every job, through the paginated ``GET /v1/jobs``."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor is not None:
            params["cursor"] = cursor
        answer = http.get("/v1/jobs", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        jobs += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return jobs


class JobdeckProcess:
    """One running ``jobdeck`` command (or another ``program``), its output going to files."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        log_dir: Path,
        *,
        base_url: str | None = None,
        grace_seconds: float = 2.0,
        program: Path = JOBDECK,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.args = args
        self.program = program
        self.base_url = base_url
        self.grace_seconds = grace_seconds
        self.stdout_path = log_dir / f"{name}.stdout"
        self.stderr_path = log_dir / f"{name}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # The child keeps its own copies of the descriptors; ours close right away.
            self.popen = subprocess.Popen(
                [str(program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env),
                cwd=cwd if cwd is not None else log_dir,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The process id (also the ``pid`` part of its workers' ``host:pid:n`` names)."""
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status, or None while it runs."""
        return self.popen.poll()

    def stderr(self) -> str:
        """Everything the process wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stdout(self) -> str:
        """Everything the process wrote to stdout so far."""
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def describe(self) -> str:
        """The command, its status and the end of its output, for failure messages."""
        lines = self.stderr().splitlines()
        tail = "\n".join(lines[-REPORT_LINES:])
        skipped = (
            f"... ({len(lines) - REPORT_LINES} earlier lines)\n"
            if len(lines) > REPORT_LINES
            else ""
        )
        status = "running" if self.returncode is None else f"exit status {self.returncode}"
        return (
            f"$ {self.program.name} {' '.join(self.args)}  [pid {self.pid}, {status}]\n"
            f"--- stdout ---\n{self.stdout()}--- stderr ---\n{skipped}{tail}"
        )

    def send(self, signum: signal.Signals) -> None:
        """Send a signal to this process (if it still runs)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """Wait for the exit status; fail the test if the process is still running then."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} still running after {timeout} s\n{self.describe()}")

    def terminate(self) -> int:
        """SIGTERM, then the exit status; fail if it takes longer than grace + margin."""
        self.send(signal.SIGTERM)
        return self.wait(self.grace_seconds + STOP_MARGIN_SECONDS)

    def kill(self) -> int:
        """SIGKILL (``kill -9``) and reap it."""
        self.send(signal.SIGKILL)
        return self.popen.wait(STOP_MARGIN_SECONDS)

    def wait_for_stderr(self, pattern: str, *, timeout: float = START_SECONDS) -> re.Match[str]:
        """Wait until a line of stderr matches the regular expression ``pattern``."""
        regex = re.compile(pattern, re.MULTILINE)

        def seen() -> re.Match[str] | None:
            self._check_alive()
            return regex.search(self.stderr())

        return wait_until(seen, timeout=timeout, what=f"{self.name} logs /{pattern}/")

    def wait_ready(self, *, timeout: float = START_SECONDS) -> None:
        """Wait until ``GET /health`` answers 200 ``{"health": "ok"}``."""
        assert self.base_url is not None, f"{self.name} serves no HTTP"

        def healthy() -> bool:
            self._check_alive()
            try:
                answer = httpx.get(f"{self.base_url}/health", timeout=1.0)
            except httpx.TransportError:
                return False
            return answer.status_code == 200 and answer.json() == {"health": "ok"}

        wait_until(healthy, timeout=timeout, what=f"{self.name} healthy", interval=0.05)

    def session_pids(self) -> list[int]:
        """Live processes of this process's session (it and everything it started, however
        deep, unless they left the session); zombies are not counted."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:
                continue  # gone meanwhile
            # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
            fields = text[text.rindex(")") + 2 :].split()
            if fields[0] != "Z" and int(fields[3]) == self.pid:
                found.append(int(stat.parent.name))
        return sorted(found)

    def _check_alive(self) -> None:
        if self.popen.poll() is not None:
            pytest.fail(f"{self.name} exited early\n{self.describe()}")


class Launcher:
    """Starts ``jobdeck`` commands on one SQLite file and stops them all at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.db_path = tmp_path / "jobdeck.db"
        self.processes: list[JobdeckProcess] = []
        self._names: dict[str, int] = {}
        #: ``JOBDECK_*`` settings every process gets, over the defaults and the SQLite file:
        #: e.g. ``JOBDECK_DATABASE_URL`` and ``JOBDECK_PG_SCHEMA`` of a PostgreSQL database.
        self.settings: dict[str, str] = {}

    @property
    def database_url(self) -> str:
        """``sqlite:////absolute/path/jobdeck.db``, unless :attr:`settings` names another."""
        return self.settings.get("JOBDECK_DATABASE_URL", f"sqlite:///{self.db_path}")

    def env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a child: this one without ``JOBDECK_*``, plus the test settings."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBDECK_")}
        env.update(FAST_SETTINGS)
        env["JOBDECK_DATABASE_URL"] = self.database_url
        env.update(self.settings)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(overrides or {})
        return env

    def _name(self, command: str) -> str:
        n = self._names[command] = self._names.get(command, 0) + 1
        return f"{command}-{n}"

    def start(
        self,
        command: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        base_url: str | None = None,
    ) -> JobdeckProcess:
        """Start ``jobdeck <command> <args>`` in the background."""
        return self.spawn(JOBDECK, command, [command, *args], env=env, base_url=base_url)

    def spawn(
        self,
        program: Path,
        name: str,
        args: list[str],
        *,
        env: Mapping[str, str] | None = None,
        base_url: str | None = None,
        cwd: Path | None = None,
    ) -> JobdeckProcess:
        """Start ``program <args>`` in the background (in ``cwd``, default the test's
        directory), with the environment of :meth:`env`; ``name`` names its output files."""
        full_env = self.env(env)
        grace = float(full_env["JOBDECK_SHUTDOWN_GRACE_SECONDS"])
        process = JobdeckProcess(
            self._name(name),
            args,
            full_env,
            self.dir,
            base_url=base_url,
            grace_seconds=grace,
            program=program,
            cwd=cwd,
        )
        self.processes.append(process)
        return process

    def serve(
        self,
        *args: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        ready: bool = True,
    ) -> JobdeckProcess:
        """``jobdeck serve --port P``, waited for until ``/health`` answers (unless not ready)."""
        port = port if port is not None else free_port()
        process = self.start(
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
            env=env,
            base_url=f"http://127.0.0.1:{port}",
        )
        if ready:
            process.wait_ready()
        return process

    def worker(self, *args: str, env: Mapping[str, str] | None = None) -> JobdeckProcess:
        """``jobdeck worker``, waited for until it logs that its worker started."""
        process = self.start("worker", *args, env=env)
        process.wait_for_stderr(r"worker \S+ started")
        return process

    def run(
        self, *args: str, env: Mapping[str, str] | None = None, timeout: float = START_SECONDS
    ) -> subprocess.CompletedProcess[str]:
        """Run ``jobdeck <args>`` to completion and return its status and output."""
        return subprocess.run(
            [str(JOBDECK), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env(env),
            cwd=self.dir,
            timeout=timeout,
            check=False,
        )

    def report(self) -> list[tuple[str, str]]:
        """``(title, text)`` for every process started, for the report of a failed test."""
        return [(f"{p.program.name} process {p.name}", p.describe()) for p in self.processes]

    def stop_all(self) -> None:
        """SIGTERM to every process still running, then SIGKILL to those that outlive
        their grace period; every process is reaped."""
        running = [p for p in self.processes if p.returncode is None]
        for process in running:
            process.send(signal.SIGTERM)
        for process in running:
            try:
                process.popen.wait(process.grace_seconds + STOP_MARGIN_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """A :class:`Launcher` whose processes are all stopped when the block ends."""
    started = Launcher(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()
