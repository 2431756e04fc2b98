"""Helpers of the fault tests: the task module's environment, client threads, and a record
of HTTP answers.

Load generators record every request they make as an :class:`Answer` (its status, or the
transport error when none came), so that a test can check afterwards what each client was
told, and when.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

#: The directory of ``fault_tasks.py``, put on the processes' ``PYTHONPATH``.
TASKS_DIR = Path(__file__).resolve().parent


def task_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a process that loads the kinds of ``fault_tasks.py`` (``PYTHONPATH``
    keeps whatever the test run has), plus ``extra``."""
    path = os.pathsep.join(filter(None, [str(TASKS_DIR), os.environ.get("PYTHONPATH")]))
    return {"JOBDECK_TASKS": "fault_tasks", "PYTHONPATH": path, **(extra or {})}


@dataclass(frozen=True)
class Answer:
    """One request and what came back: ``status`` None means no answer at all (the
    connection was refused, reset or timed out), and ``error`` says which. ``sent`` and
    ``at`` are seconds since the record began: when the request left, when it ended."""

    sent: float
    at: float
    what: str
    status: int | None
    body: Any = None
    error: str | None = None

    @property
    def answered(self) -> bool:
        """Whether an HTTP answer came back."""
        return self.status is not None

    def describe(self) -> str:
        """One line for failure messages."""
        outcome = self.status if self.answered else f"no answer ({self.error})"
        took = self.at - self.sent
        return f"t={self.sent:.3f}+{took:.3f}s {self.what}: {outcome} {str(self.body)[:300]}"


class Answers:
    """Every answer of a test's clients, in the order they came (thread-safe)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._items: list[Answer] = []
        self._lock = threading.Lock()

    def request(
        self, http: httpx.Client, method: str, url: str, what: str | None = None, **kwargs: Any
    ) -> Answer:
        """Send one request over ``http`` and record what came back (never raises for a
        transport error: that is recorded as no answer)."""
        label = what or f"{method} {url}"
        sent = self._now()
        try:
            response = http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
            answer = Answer(sent, self._now(), label, None, error=error)
        else:
            answer = Answer(sent, self._now(), label, response.status_code, _body(response))
        with self._lock:
            self._items.append(answer)
        return answer

    def all(self) -> list[Answer]:
        """A copy of every answer so far."""
        with self._lock:
            return list(self._items)

    def since_start(self) -> float:
        """Seconds since this record began (the time base of :class:`Answer`)."""
        return self._now()

    def _now(self) -> float:
        return time.monotonic() - self.started


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def new_client(base_url: str, *, timeout: float = 30.0, keep_alive: bool = True) -> httpx.Client:
    """A client of one API. With ``keep_alive`` it keeps its connections (the load of a
    real service); without, every request opens a new one and says so, so that requests
    spread over the API processes of a gunicorn (each accepts from the shared socket)."""
    if keep_alive:
        return httpx.Client(base_url=base_url, timeout=timeout)
    return httpx.Client(
        base_url=base_url,
        timeout=timeout,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"Connection": "close"},
    )


class ClientThreads:
    """``count`` threads, each running ``body(n, stop)`` (``n`` is its number) until it
    returns; ``body`` should return soon once ``stop`` is set."""

    def __init__(self, count: int, body: Callable[[int, threading.Event], None]) -> None:
        self.stop = threading.Event()
        self._threads = [
            threading.Thread(target=body, args=(n, self.stop), name=f"client-{n}")
            for n in range(count)
        ]

    def start(self) -> None:
        """Start every thread."""
        for thread in self._threads:
            thread.start()

    def join(self, *, stop: bool = True, timeout: float = 30.0) -> None:
        """Set ``stop`` (unless told not to) and wait for every thread; fail if one hangs."""
        if stop:
            self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} still runs after {timeout} s"


class ClientLoad:
    """``count`` client threads against the API at ``base_url``, each running
    :meth:`client` until stopped, every request recorded in ``answers``. Subclasses write
    :meth:`client` (``n`` is the thread's number; it should return soon once ``stop`` is
    set)."""

    def __init__(self, base_url: str, count: int) -> None:
        self.base_url = base_url
        self.answers = Answers()
        self.clients = ClientThreads(count, self.client)

    def start(self) -> None:
        """Start the clients."""
        self.clients.start()

    def finish(self) -> list[Answer]:
        """Stop the clients, wait for them and return every answer."""
        self.clients.join()
        return self.answers.all()

    def client(self, n: int, stop: threading.Event) -> None:
        raise NotImplementedError
