"""``jobdeck serve --workers N``: gunicorn with N API processes and one job worker process.

Placement: API processes never run jobs. gunicorn runs N uvicorn workers serving
``jobdeck.api:create_app()`` with the embedded worker off (the settings are
:mod:`jobdeck.gunicorn_conf`), and one ``jobdeck worker`` process runs the jobs with
``JOBDECK_CONCURRENCY`` slots, so the machine runs exactly the configured concurrency, as
``jobdeck serve`` alone does, however many API processes there are.

The supervisor migrates the database once, starts both children in process groups of their
own (a terminal's Ctrl-C reaches only the supervisor, which turns it into SIGTERM: a graceful
stop for both), forwards SIGTERM, SIGINT and SIGHUP as SIGTERM, and waits for both. It exits
0 when both stopped cleanly after such a signal; when a child dies on its own, the other is
stopped and the exit status is 1. A supervisor killed with SIGKILL leaves its children
running (stop them by their process ids).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import FrameType

from jobdeck.settings import Settings

log = logging.getLogger("jobdeck.serve")

#: gunicorn's configuration, loaded from the installed package (``deploy/gunicorn.conf.py``
#: imports the same module).
GUNICORN_CONFIG = "python:jobdeck.gunicorn_conf"
APP = "jobdeck.api:create_app()"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
POLL_SECONDS = 0.05


@dataclass
class Child:
    """One supervised process."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal), or None while it runs."""
        return self.popen.poll()

    def terminate(self) -> None:
        """SIGTERM, if it still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)


def child_environment(settings: Settings, web_workers: int) -> dict[str, str]:
    """This process's environment with the effective settings written out, so that
    command-line options (``--port``, ``--concurrency``, ...) reach both children."""
    env = dict(os.environ)
    env.update(
        {
            "JOBDECK_DATABASE_URL": settings.database_url,
            "JOBDECK_HOST": settings.host,
            "JOBDECK_PORT": str(settings.port),
            "JOBDECK_CONCURRENCY": str(settings.concurrency),
            "JOBDECK_QUEUES": ",".join(settings.queues),
            "JOBDECK_WEB_WORKERS": str(web_workers),
        }
    )
    return env


def gunicorn_command() -> list[str]:
    """gunicorn with jobdeck's configuration, run by this interpreter."""
    return [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG, APP]


def worker_command() -> list[str]:
    """``jobdeck worker``, run by this interpreter (its settings come from the environment)."""
    return [sys.executable, "-m", "jobdeck", "worker"]


def _start(name: str, command: list[str], env: Mapping[str, str]) -> Child:
    popen = subprocess.Popen(command, env=dict(env), stdin=subprocess.DEVNULL, process_group=0)
    return Child(name, popen)


def serve_many(settings: Settings, web_workers: int) -> int:
    """Run gunicorn with ``web_workers`` API processes and, unless
    ``settings.embedded_worker`` is off, one ``jobdeck worker``; return the exit status.

    The caller has migrated the database already.
    """
    stops: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stops.append(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in STOP_SIGNALS}
    try:
        env = child_environment(settings, web_workers)
        children = [_start("gunicorn", gunicorn_command(), env)]
        log.info(
            "gunicorn started (pid %d): %d API processes on %s:%d",
            children[0].popen.pid,
            web_workers,
            settings.host,
            settings.port,
        )
        if settings.embedded_worker:
            children.append(_start("worker", worker_command(), env))
            log.info(
                "jobdeck worker started (pid %d): concurrency %d, queues %s",
                children[1].popen.pid,
                settings.concurrency,
                ",".join(settings.queues),
            )
        return supervise(children, stops)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def supervise(children: list[Child], stops: list[int]) -> int:
    """Wait for ``children``; SIGTERM all of them for every signal appended to ``stops`` (by
    the signal handlers) and when one exits on its own. 0 when all exited with 0 after a
    stop signal, else 1."""
    forwarded = 0
    failed = False
    while True:
        if len(stops) > forwarded:
            forwarded = len(stops)
            log.info("signal %s: stopping %s", signal.Signals(stops[-1]).name, _names(children))
            for child in children:
                child.terminate()
        if all(child.returncode is not None for child in children):
            break
        if not stops and not failed:
            for child in children:
                if child.returncode is not None:
                    log.error(
                        "%s (pid %d) exited on its own with status %d: stopping the rest",
                        child.name,
                        child.popen.pid,
                        child.returncode,
                    )
                    failed = True
            if failed:
                for child in children:
                    child.terminate()
        time.sleep(POLL_SECONDS)
    statuses = {child.name: child.returncode for child in children}
    if failed or any(status != 0 for status in statuses.values()):
        log.error("stopped: exit statuses %s", statuses)
        return 1
    log.info("stopped")
    return 0


def _names(children: list[Child]) -> str:
    return " and ".join(f"{c.name} (pid {c.popen.pid})" for c in children)
