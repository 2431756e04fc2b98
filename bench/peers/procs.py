"""Starting a peer's worker command and making sure every process it made is gone afterwards.

The worker starts in a session of its own (its process group is its pid). The driver notes
the worker's processes (its group and its descendants, by pid and start time) while it runs.
Stopping it sends SIGTERM to the group, waits a little, then SIGKILLs every process noted that
is still alive (a descendant that left the group, such as RQ's work horse, included) and checks
in ``/proc`` that none is left. A pid is only ever signalled together with the start time it
was noted with, so a reused pid is left alone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

TERM_GRACE_SECONDS = 5.0
KILL_WAIT_SECONDS = 5.0


#: A process as seen once: its pid and its start time (so that a reused pid is never taken
#: for it).
Identity = tuple[int, int]


def _stat(pid: int) -> tuple[int, int, int] | None:
    """``(ppid, pgrp, starttime)`` of a live (not zombie) process, or ``None``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _alive(identity: Identity) -> bool:
    """Whether that very process is still alive."""
    stat = _stat(identity[0])
    return stat is not None and stat[2] == identity[1]


def family(root: int) -> set[Identity]:
    """``root``, its descendants and the members of its process group, alive now."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                table[int(entry)] = stat
    found = {pid for pid, (_, pgrp, _) in table.items() if pgrp == root}
    if root in table:
        found.add(root)
    grew = True
    while grew:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return {(pid, table[pid][2]) for pid in found}


class Worker:
    """One peer worker command, running."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
        self.argv = argv
        self._log = log.open("ab")
        self.spawned = time.time()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: set[Identity] = set()
        self.watch()

    def alive(self) -> bool:
        """Whether the worker command is still running (noting its processes first)."""
        self.watch()
        return self.proc.poll() is None

    def watch(self) -> None:
        """Note the processes the worker has now (so that none escapes :meth:`stop`).

        Only while the worker command is not reaped: until then its pid, and so its process
        group id, cannot belong to anyone else.
        """
        if self.proc.returncode is None:
            self.seen |= family(self.proc.pid)

    def stop(self) -> list[int]:
        """Stop every process of the worker; return the pids still alive after (none, or a bug)."""
        self.watch()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_SECONDS
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.watch()
        for identity in sorted(self.seen):
            if _alive(identity):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(identity[0], signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(KILL_WAIT_SECONDS)
        deadline = time.monotonic() + KILL_WAIT_SECONDS
        left = {identity for identity in self.seen if _alive(identity)}
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = {identity for identity in left if _alive(identity)}
        self._log.close()
        return sorted(pid for pid, _ in left)
