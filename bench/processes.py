"""The processes of a benchmark: started in sessions of their own, stopped for real.

- :class:`Process` runs one command, its output in ``<workdir>/<name>.stdout|stderr``, and
  stops it with SIGTERM, then SIGKILL of whatever is left of its process tree;
- :class:`Fleet` stops the processes of one measurement together;
- :func:`start_serve` and :func:`start_worker` start ``jobdeck serve`` / ``jobdeck worker``
  (with the settings of a :class:`~common.Database` environment) and wait until they are
  ready;
- :func:`rss_kib` and :func:`cpu_seconds` read a process's memory and CPU time in ``/proc``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from common import JOBDECK, START_SECONDS, STOP_SECONDS, free_port, wait_for

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def children_of(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (read from ``/proc``)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time ``pid`` has used so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return None


class Process:
    """One command in a session of its own, its output in ``<workdir>/<name>.stdout|stderr``."""

    def __init__(
        self, name: str, command: Sequence[str], env: dict[str, str], workdir: Path
    ) -> None:
        self.name = name
        self.command = list(command)
        self.stderr_path = workdir / f"{name}.stderr"
        self.started = time.time()
        self._terminated = False
        self._tree: list[int] = []
        with (workdir / f"{name}.stdout").open("wb") as out, self.stderr_path.open("wb") as err:
            self.popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )

    @classmethod
    def jobdeck(cls, name: str, args: Sequence[str], env: dict[str, str], workdir: Path) -> Process:
        """``jobdeck <args>``."""
        return cls(name, [str(JOBDECK), *args], env, workdir)

    @property
    def pid(self) -> int:
        return self.popen.pid

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

    def terminate(self) -> None:
        """SIGTERM, once (a second one could cut its graceful stop short)."""
        if self.popen.poll() is None and not self._terminated:
            self._terminated = True
            self._tree = children_of(self.pid)
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM and the exit status (SIGKILL if it does not stop in time: status < 0).
        Whatever is left of its process tree afterwards is killed too."""
        self.terminate()
        tree = self._tree
        try:
            status = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            tree += children_of(self.pid)
            self.popen.kill()
            status = self.popen.wait()
        for pid in tree:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return status


class Fleet:
    """Processes started for one measurement, stopped together (in reverse order)."""

    def __init__(self) -> None:
        self.processes: list[Process] = []
        self.exit_statuses: dict[str, int] = {}

    def add(self, process: Process) -> Process:
        self.processes.append(process)
        return process

    def stop(self, timeout: float = STOP_SECONDS) -> dict[str, int]:
        """SIGTERM to all at once, then wait for each; their exit statuses by name."""
        for process in self.processes:
            process.terminate()
        for process in reversed(self.processes):
            self.exit_statuses[process.name] = process.stop(timeout)
        self.processes = []
        return self.exit_statuses

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def healthy(base_url: str, process: Process) -> bool:
    """Whether ``GET /health`` answers 200 (raise if ``process`` died)."""
    process.alive()
    try:
        return httpx.get(f"{base_url}/health", timeout=1.0).status_code == 200
    except httpx.TransportError:
        return False


def start_serve(
    fleet: Fleet,
    env: dict[str, str],
    workdir: Path,
    args: Sequence[str] = (),
    *,
    name: str = "serve",
    api_processes: int = 1,
    runs_jobs: bool = True,
) -> str:
    """``jobdeck serve <args>`` on a free port, ready; its base URL."""
    port = free_port()
    serve = fleet.add(
        Process.jobdeck(
            name, ["serve", "--host", "127.0.0.1", "--port", str(port), *args], env, workdir
        )
    )
    if runs_jobs:
        serve.wait_for_log(r"worker \S+ started")
    if api_processes > 1:
        serve.wait_for_log("Application startup complete", api_processes)
    base_url = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(base_url, serve), timeout=START_SECONDS, what=f"{name} /health")
    return base_url


def start_worker(
    fleet: Fleet, env: dict[str, str], workdir: Path, args: Sequence[str] = (), *, name: str
) -> Process:
    """``jobdeck worker <args>``, once it says it started."""
    worker = fleet.add(Process.jobdeck(name, ["worker", *args], env, workdir))
    worker.wait_for_log(r"worker \S+ started")
    return worker
