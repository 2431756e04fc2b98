"""PostgreSQL only: the server kills the connections of the API and of the worker under load.

``pg_terminate_backend`` is what a failover, a restart of PgBouncer or an administrator does
to a service. A ``jobdeck serve --no-worker`` and a ``jobdeck worker`` run under a steady
load of submits, reads and jobs; every backend of both processes, their pools' and their
LISTEN connections alike (told apart by ``application_name``, ``jobdeck:<pool|listen>:<pid>``),
is terminated, a few times over. Both processes reconnect on their own:

- the API answers every request; a request may fail (5xx or no answer) only if it was sent
  within :data:`RECONNECT_SECONDS` of a kill, and none takes longer than
  :data:`SLOWEST_ANSWER_SECONDS`;
- both LISTEN connections come back within :data:`RECONNECT_SECONDS`, and once they have,
  notifications work again: an idle worker picks up a new job, and a ``Prefer: wait``
  submit hears that it ended, at once rather than at the next safety poll (2 s);
- the worker goes on running jobs: every job answered 202 exists and ends ``succeeded``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from backends import Database
from e2e.database import DatabaseReader, Row
from e2e.processes import JobdeckProcess, Launcher, wait_until

from .load import Answer, ClientLoad, new_client

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True),
]

CLIENTS = 3
ROUNDS = 3
#: Load between two rounds of kills (and before the first, after the last).
PAUSE_SECONDS = 0.8
#: How long after a kill a request may fail, and a LISTEN connection may be missing.
RECONNECT_SECONDS = 2.5
#: The longest any request may take, kills or not.
SLOWEST_ANSWER_SECONDS = 5.0
#: A submit with ``Prefer: wait`` of a short job, on an idle worker, once LISTEN is back:
#: well under the 2 s safety poll of each of the two processes.
PROMPT_SECONDS = 1.0
PROBES = 3
#: The worker's lease: its fence (0.8 of it) falls after :data:`RECONNECT_SECONDS`.
LEASE_SECONDS = 4.0


class Load(ClientLoad):
    """Clients that submit short jobs and read them back, until stopped."""

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url, CLIENTS)

    def client(self, n: int, stop: threading.Event) -> None:
        with new_client(self.base_url, timeout=SLOWEST_ANSWER_SECONDS * 4) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                job_id = f"load-{n}-{i:05d}"
                spec = {
                    "id": job_id,
                    "kind": "steps",
                    "params": {"n_steps": 2, "step_seconds": 0.02},
                }
                self.answers.request(http, "POST", "/v1/jobs", json=spec)
                self.answers.request(http, "GET", f"/v1/jobs/{job_id}")
                if i % 5 == 0:
                    self.answers.request(http, "GET", "/v1/stats")
                time.sleep(0.01)  # pacing: a steady load, not a flood


class Backends:
    """The PostgreSQL backends of some jobdeck processes, found by ``application_name``."""

    def __init__(self, database: Database, processes: list[JobdeckProcess]) -> None:
        self.admin = psycopg.connect(database.database_url, autocommit=True)
        self.names = [
            f"jobdeck:{purpose}:{process.pid}"
            for process in processes
            for purpose in ("pool", "listen")
        ]

    def present(self) -> dict[str, set[int]]:
        """The processes' open connections: server pids by application name."""
        rows = self.admin.execute(
            "SELECT application_name, pid FROM pg_stat_activity WHERE application_name = ANY(%s)",
            (self.names,),
        ).fetchall()
        found: dict[str, set[int]] = {}
        for name, pid in rows:
            found.setdefault(name, set()).add(pid)
        return found

    def terminate_all(self) -> dict[str, set[int]]:
        """``pg_terminate_backend`` on every backend of the processes; the server pids of
        those it terminated, by application name."""
        # Two statements: the pids first, so that nothing but them is ever terminated.
        victims = {pid: name for name, pids in self.present().items() for pid in pids}
        rows = self.admin.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid",
            (sorted(victims),),
        ).fetchall()
        killed: dict[str, set[int]] = {}
        for pid, done in rows:
            if done:
                killed.setdefault(victims[pid], set()).add(pid)
        return killed

    def listening_again(self, killed: dict[str, set[int]]) -> bool:
        """Whether every process holds a LISTEN connection that was not killed."""
        present = self.present()
        old = set().union(*killed.values())
        return all(present.get(name, set()) - old for name in self.names if ":listen:" in name)

    def close(self) -> None:
        """Close the admin connection."""
        self.admin.close()


@pytest.fixture
def backends_of() -> Iterator[list[Backends]]:
    """Closes the :class:`Backends` a test makes."""
    made: list[Backends] = []
    yield made
    for backends in made:
        backends.close()


def check_answers(answers: list[Answer], kills: list[float]) -> None:
    """Only requests sent within ``RECONNECT_SECONDS`` of a kill may fail; none is slower
    than ``SLOWEST_ANSWER_SECONDS``."""

    def near_a_kill(answer: Answer) -> bool:
        return any(k - 0.05 <= answer.sent <= k + RECONNECT_SECONDS for k in kills)

    failed = [a for a in answers if not a.answered or a.status not in {200, 202}]
    late = [a for a in failed if not near_a_kill(a)]
    assert not late, f"kills at {kills}; failed outside the window:\n" + "\n".join(
        a.describe() for a in late[:20]
    )
    slow = [a for a in answers if a.at - a.sent > SLOWEST_ANSWER_SECONDS]
    assert not slow, "\n".join(a.describe() for a in slow[:20])


def probe_latency(base_url: str, n: int) -> float:
    """Seconds a ``Prefer: wait=10`` submit of a 0.05 s job takes to answer 200 succeeded."""
    with new_client(base_url) as http:
        spec = {"id": f"probe-{n}", "kind": "steps", "params": {"n_steps": 1, "step_seconds": 0.05}}
        started = time.monotonic()
        answer = http.post("/v1/jobs", json=spec, headers={"Prefer": "wait=10"})
        took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded", answer.text
    return took


@pytest.mark.timeout(90)
def test_killed_connections_reconnect_and_lose_nothing(
    cluster: Launcher,
    db: DatabaseReader,
    fresh_database: Database,
    backends_of: list[Backends],
) -> None:
    """Three rounds of ``pg_terminate_backend`` on every connection of the API and the
    worker under load: requests fail only right after a kill, LISTEN comes back in time and
    works, the worker keeps running jobs, and every accepted job succeeds."""
    # A lease that outlasts a reconnect (its fence is at 0.8 of it): a kill must then cost
    # no job its lease. With the tests' usual 1 s, two heartbeats failing in a row on a busy
    # machine are enough for a rerun, which is allowed (at least once) but not the point here.
    cluster.settings.update(
        {"JOBDECK_CONCURRENCY": "20", "JOBDECK_LEASE_SECONDS": str(LEASE_SECONDS)}
    )
    api = cluster.serve("--no-worker")
    worker = cluster.worker()
    assert api.base_url is not None
    backends = Backends(fresh_database, [api, worker])
    backends_of.append(backends)
    everything = set(backends.names)
    wait_until(lambda: set(backends.present()) == everything, timeout=10.0, what="all connections")

    load = Load(api.base_url)
    load.start()
    kills: list[float] = []
    try:
        for _ in range(ROUNDS):
            time.sleep(PAUSE_SECONDS)  # pacing: load between the rounds
            kills.append(load.answers.since_start())
            killed = backends.terminate_all()
            assert set(killed) == everything, f"round {len(kills)}: {killed}"
            wait_until(
                lambda killed=killed: backends.listening_again(killed),
                timeout=RECONNECT_SECONDS,
                what="both LISTEN connections back",
            )
        time.sleep(RECONNECT_SECONDS)  # pacing: load once everything must be back
    finally:
        answers = load.finish()

    check_answers(answers, kills)
    accepted = [a.body["id"] for a in answers if a.what == "POST /v1/jobs" and a.status == 202]
    assert len(accepted) >= 50, f"only {len(accepted)} jobs submitted"
    after_last = [a for a in answers if a.sent > kills[-1] + RECONNECT_SECONDS]
    assert after_last and all(a.status in {200, 202} for a in after_last)

    def all_succeeded() -> dict[str, Row] | None:
        rows = db.jobs(accepted)
        assert len(rows) == len(accepted), set(accepted) - set(rows)
        broken = [row for row in rows.values() if row.status in {"failed", "cancelled"}]
        assert not broken, broken[:5]
        return rows if all(row.status == "succeeded" for row in rows.values()) else None

    rows = wait_until(all_succeeded, timeout=30.0, what="every job succeeded", interval=0.1)
    workers = {row.worker for row in rows.values()}
    assert all(str(worker.pid) in str(name) for name in workers), workers
    # The worker kept its leases through the kills: every job ran once.
    rerun = [row for row in rows.values() if row.attempt != 1 or row.attempt_errors]
    assert not rerun, rerun[:5]

    # Notifications work again: an idle worker is woken at once, and so is the waiting API.
    latencies = [probe_latency(api.base_url, n) for n in range(PROBES)]
    assert max(latencies) < PROMPT_SECONDS, latencies
    assert worker.terminate() == 0
    assert api.terminate() == 0
    for process in (api, worker):
        stderr = process.stderr()
        assert "Traceback" not in stderr, process.describe()
