"""The supervisor of ``jobdeck serve --workers N``: stop signals, children that die."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from jobdeck.settings import Settings
from jobdeck.supervisor import Child, child_environment, supervise

#: A child that exits 0 on SIGTERM and runs until then.
PATIENT = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def start(name: str, code: str) -> Child:
    """A Python child running ``code``, waited for until it printed its first line."""
    popen = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert popen.stdout is not None
    popen.stdout.readline()
    popen.stdout.close()
    return Child(name, popen)


@pytest.mark.timeout(20)
def test_a_stop_signal_stops_every_child_and_exits_zero() -> None:
    """A stop signal (recorded by the handlers) is forwarded as SIGTERM to every child; all
    exiting 0 gives 0."""
    children = [start("api", PATIENT), start("worker", PATIENT)]
    assert supervise(children, [signal.SIGINT]) == 0
    assert [c.returncode for c in children] == [0, 0]


@pytest.mark.timeout(20)
def test_a_child_that_dies_stops_the_others_and_exits_non_zero() -> None:
    """A child exiting on its own (even with 0) makes the supervisor stop the others and
    exit 1."""
    children = [start("api", PATIENT), start("worker", "print('ready', flush=True)")]
    assert supervise(children, []) == 1
    assert children[0].returncode == 0


@pytest.mark.timeout(20)
def test_a_child_failing_to_stop_cleanly_gives_non_zero() -> None:
    """A child that ends with a non-zero status after the stop signal gives 1."""
    stubborn = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"
    children = [start("api", PATIENT), start("worker", stubborn)]
    assert supervise(children, [signal.SIGTERM]) == 1
    assert children[1].returncode == -signal.SIGTERM


def test_children_get_the_effective_settings() -> None:
    """Command-line options given to ``serve`` reach both children through the environment."""
    settings = Settings.from_env(
        {}, port=9001, host="0.0.0.0", concurrency=3, queues=("a", "b"), database_url="sqlite:///x"
    )
    env = child_environment(settings, 4)
    assert env["JOBDECK_PORT"] == "9001"
    assert env["JOBDECK_HOST"] == "0.0.0.0"
    assert env["JOBDECK_CONCURRENCY"] == "3"
    assert env["JOBDECK_QUEUES"] == "a,b"
    assert env["JOBDECK_DATABASE_URL"] == "sqlite:///x"
    assert env["JOBDECK_WEB_WORKERS"] == "4"
