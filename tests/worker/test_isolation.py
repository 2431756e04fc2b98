"""Worker: kinds with ``isolation="process"`` run in a child process that is stopped, then
killed, on cancel, timeout, shutdown or a lost lease; what the child reports reaches the job.

The task functions are in ``worker.isolated_tasks``: the child imports them by module and
name, through the worker's ``sys.path`` (``tests/`` is on it by pytest's ``pythonpath``, not
by ``PYTHONPATH``), as it imports a user's module that ``JOBDECK_TASKS`` made importable.
Tests that stop a run check that its process is really gone afterwards: a run ends only once
its process was reaped, so the pid no longer exists.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from jobdeck.deck import Deck
from jobdeck.isolation import STOP_GRACE_SECONDS
from jobdeck.model import MICROS, Job, Status, now_us
from jobdeck.store.base import CancelEffect
from jobdeck.tasks import TaskRegistry
from jobdeck.worker import Worker
from worker import isolated_tasks
from worker.stores import Partition

DeckFactory = Callable[..., Awaitable[Deck]]
WorkerFactory = Callable[..., Worker]
WaitFor = Callable[..., Awaitable[Any]]
WaitStatus = Callable[..., Awaitable[Job]]

#: How long a child may take to start and import its task (generous: a loaded machine).
START = 15.0
#: How soon a stopped run must have ended: the grace, plus room for a loaded machine.
PROMPT = STOP_GRACE_SECONDS + 5.0
#: Leases of these tests: long enough that starting processes on a loaded machine never
#: delays a renewal past the fence (which the lost-lease test brings about on purpose).
LEASE = 5.0


@pytest.fixture
async def deck(make_deck: DeckFactory) -> Deck:
    """A Deck with the worker tests' settings, but leases of :data:`LEASE` seconds."""
    return await make_deck(lease_seconds=LEASE)


def isolate(deck: Deck, function: Any, **options: Any) -> str:
    """Register ``function`` with ``isolation="process"``; its kind's name."""
    return deck.registry.register(function, isolation="process", **options).name


def alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (a zombie counts: it was not reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process took the number
        return True
    return True


async def child_pid(wait_for: WaitFor, pid_file: Path) -> int:
    """The pid the task wrote once it started in its process."""

    def written() -> str | None:
        return pid_file.read_text() if pid_file.exists() else None

    pid = int(await wait_for(written, timeout=START, what="task started in its process"))
    assert pid != os.getpid()
    return pid


async def cancel_running(deck: Deck, job_id: str) -> None:
    _, effect = await deck.store.request_cancel(job_id)
    assert effect is CancelEffect.REQUESTED


async def log_messages(deck: Deck, job_id: str) -> list[str]:
    page = await deck.store.logs(job_id, None, 1000)
    return [line.message for line in page.items]


async def check_cancelled_in_its_process(
    deck: Deck, job_id: str, pid_file: Path, said: str, wait_for: WaitFor, wait_status: WaitStatus
) -> None:
    """Once the task has started in its process, cancel the job: it ends cancelled, the task
    logged ``said``, and its process is gone."""
    pid = await child_pid(wait_for, pid_file)
    await cancel_running(deck, job_id)
    done = await wait_status(deck.store, job_id, timeout=PROMPT)
    assert done.status is Status.CANCELLED
    assert said in await log_messages(deck, job_id)
    assert not alive(pid)


async def test_cancel_kills_a_task_that_never_checks(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    tmp_path: Path,
) -> None:
    """A task spinning in a busy loop ignores the stop message; it is killed after the grace
    and the job ends cancelled, not retried."""
    kind = isolate(deck, isolated_tasks.oblivious)
    pid_file = tmp_path / "pid"
    job = await deck.enqueue(kind, {"pid_file": str(pid_file), "how": "busy"})
    await make_worker(deck).start()
    pid = await child_pid(wait_for, pid_file)
    assert alive(pid)

    asked = time.monotonic()
    await cancel_running(deck, job.id)
    done = await wait_status(deck.store, job.id, timeout=PROMPT)

    assert time.monotonic() - asked >= STOP_GRACE_SECONDS  # it was given its grace
    assert (done.status, done.result, done.error, done.attempt) == (Status.CANCELLED, None, None, 1)
    assert not alive(pid)


async def test_timeout_kills_a_task_that_never_checks(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    tmp_path: Path,
) -> None:
    """A task sleeping in time.sleep past its timeout is killed; the job fails TimeoutError."""
    kind = isolate(deck, isolated_tasks.oblivious)
    job = await deck.enqueue(kind, {"pid_file": str(tmp_path / "pid")}, timeout=0.3, max_attempts=1)
    worker = make_worker(deck)
    await worker.start()

    def child() -> int | None:
        run = worker.runs.get(job.id)
        return run.child.pid if run is not None and run.child is not None else None

    pid = await wait_for(child, timeout=START, what="task process started")
    done = await wait_status(deck.store, job.id, timeout=START + PROMPT)

    assert done.status is Status.FAILED
    assert done.error is not None and done.error.type == "TimeoutError"
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [(1, "TimeoutError")]
    assert not alive(pid)


async def test_a_task_that_checks_sees_the_stop_in_its_process(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    tmp_path: Path,
) -> None:
    """ctx.sleep in the child wakes with JobCancelled on cancel: the task logs it and stops by
    itself, and the job ends cancelled."""
    kind = isolate(deck, isolated_tasks.attentive)
    pid_file = tmp_path / "pid"
    job = await deck.enqueue(kind, {"pid_file": str(pid_file)})
    await make_worker(deck).start()
    await check_cancelled_in_its_process(
        deck, job.id, pid_file, "interrupted: JobCancelled", wait_for, wait_status
    )


async def test_progress_logs_and_result_come_back_from_the_process(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """ctx.progress and ctx.log in the child reach the job, in order, and so does the result;
    a print in the task does not disturb the protocol."""
    kind = isolate(deck, isolated_tasks.count)
    job = await deck.enqueue(kind, {"items": 5})
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=START)

    assert done.status is Status.SUCCEEDED, done.error
    assert done.result is not None and done.result["items"] == 5
    assert done.result["pid"] != os.getpid()
    assert (done.progress.current, done.progress.total) == (5, 5)
    assert done.progress.message == "item 5 of 5"
    page = await deck.store.logs(job.id, None, 100)
    assert [(line.level, line.message) for line in page.items] == [
        ("debug" if item % 2 else "info", f"item {item} done") for item in range(1, 6)
    ]


async def test_async_task_runs_in_its_process_and_is_cancelled_there(
    deck: Deck,
    make_worker: WorkerFactory,
    wait_for: WaitFor,
    wait_status: WaitStatus,
    tmp_path: Path,
) -> None:
    """An async task runs with asyncio.run in the child: one returns its result; the other,
    awaiting asyncio.sleep(60), is cancelled there on cancel and the job ends cancelled."""
    kind = isolate(deck, isolated_tasks.dreamy)
    quick = await deck.enqueue(kind, {"pid_file": str(tmp_path / "quick"), "wake": True})
    sleepy_pid = tmp_path / "sleepy"
    sleepy = await deck.enqueue(kind, {"pid_file": str(sleepy_pid)})
    await make_worker(deck).start()

    answered = await wait_status(deck.store, quick.id, timeout=START)
    assert answered.status is Status.SUCCEEDED, answered.error
    assert answered.result is not None and answered.result["pid"] != os.getpid()

    await check_cancelled_in_its_process(
        deck, sleepy.id, sleepy_pid, "cancelled in asyncio.sleep", wait_for, wait_status
    )


async def test_exception_in_the_process_comes_back_with_its_type(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus
) -> None:
    """An exception raised in the child fails the job with its type name, message and the
    child's traceback."""
    kind = isolate(deck, isolated_tasks.explode, max_attempts=1)
    job = await deck.enqueue(kind, {"detail": "the flux capacitor"})
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=START)

    assert done.status is Status.FAILED
    assert done.error is not None
    assert (done.error.type, done.error.message) == ("Kaput", "cannot go on: the flux capacitor")
    assert done.error.traceback is not None
    assert "Traceback" in done.error.traceback
    assert "isolated_tasks.py" in done.error.traceback
    assert "in explode" in done.error.traceback
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [(1, "Kaput")]


@pytest.mark.parametrize(
    ("how", "said"),
    [("exit", "exited with status 3"), ("kill", "killed by signal SIGKILL")],
)
async def test_process_that_dies_fails_the_attempt_and_is_retried(
    deck: Deck, make_worker: WorkerFactory, wait_status: WaitStatus, how: str, said: str
) -> None:
    """A child that ends without answering (os._exit, SIGKILL) fails its attempt with
    ProcessDied; the job is retried and succeeds on attempt 2."""
    kind = isolate(deck, isolated_tasks.perish, max_attempts=2)
    job = await deck.enqueue(kind, {"how": how})
    await make_worker(deck).start()
    done = await wait_status(deck.store, job.id, timeout=2 * START)

    assert done.status is Status.SUCCEEDED, done.error
    assert (done.result, done.attempt) == ("survived on attempt 2", 2)
    assert [(e.attempt, e.type) for e in done.attempt_errors] == [(1, "ProcessDied")]
    assert said in done.attempt_errors[0].message


async def test_lost_lease_kills_the_process_at_once(
    make_deck: DeckFactory, make_worker: WorkerFactory, wait_for: WaitFor, tmp_path: Path
) -> None:
    """A worker that cannot renew its lease kills the child at once, without a grace, so the
    task is gone before the lease runs out (a task that ignores stop messages, which a grace
    would have let run past it)."""
    deck = await make_deck(lease_seconds=3.0)  # fenced after 2.4 s, + a grace would be 3.4 s
    kind = isolate(deck, isolated_tasks.oblivious)
    pid_file = tmp_path / "pid"
    await deck.enqueue(kind, {"pid_file": str(pid_file)})
    store = Partition(deck.store)
    worker = make_worker(deck, store=store)  # type: ignore[arg-type]
    await worker.start()
    pid = await child_pid(wait_for, pid_file)
    await wait_for(lambda: store.last_renewal_start is not None, what="a lease renewal")
    store.cut = True

    gone_at = await wait_for(
        lambda: None if alive(pid) else now_us(), timeout=PROMPT, what="task process gone"
    )
    await wait_for(lambda: not worker.runs, what="worker to drop the run")

    assert store.last_renewal_start is not None
    lease_end = store.last_renewal_start + int(deck.settings.lease_seconds * MICROS)
    assert gone_at < lease_end, f"process ended {(gone_at - lease_end) / 1000:.0f} ms too late"


async def test_shutdown_hands_the_job_back_and_kills_the_process_after_the_grace(
    deck: Deck, make_worker: WorkerFactory, wait_for: WaitFor, tmp_path: Path
) -> None:
    """Worker.stop past its grace asks the child to stop, kills it after the stop grace, and
    hands the job back: queued, attempt given back."""
    kind = isolate(deck, isolated_tasks.oblivious)
    pid_file = tmp_path / "pid"
    job = await deck.enqueue(kind, {"pid_file": str(pid_file)})
    worker = make_worker(deck)
    await worker.start()
    pid = await child_pid(wait_for, pid_file)

    stopping = time.monotonic()
    await worker.stop(grace_seconds=0.1)
    took = time.monotonic() - stopping

    assert 0.1 + STOP_GRACE_SECONDS <= took < 0.1 + PROMPT
    assert not alive(pid)
    back = await deck.store.get(job.id)
    assert back is not None
    assert (back.status, back.attempt, back.error) == (Status.QUEUED, 0, None)


def test_registration_rejects_functions_a_process_cannot_import() -> None:
    """isolation="process" needs a function importable by module and qualified name: lambdas,
    nested functions, bound methods and functions of __main__ are refused; so is an unknown
    isolation. Top-level functions are accepted, sync and async."""
    registry = TaskRegistry()

    def nested() -> None:
        pass

    class Holder:
        def method(self) -> None:
            pass

    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec("def scripted():\n    pass\n", namespace)

    with pytest.raises(ValueError, match="lambda or a nested function"):
        registry.register(nested, isolation="process")
    with pytest.raises(ValueError, match="lambda or a nested function"):
        registry.register(lambda: None, name="anonymous", isolation="process")
    with pytest.raises(ValueError, match="bound method"):
        registry.register(Holder().method, name="method", isolation="process")
    with pytest.raises(ValueError, match="__main__"):
        registry.register(namespace["scripted"], isolation="process")
    with pytest.raises(ValueError, match="isolation must be 'thread' or 'process'"):
        registry.register(isolated_tasks.count, isolation="fork")  # type: ignore[arg-type]
    assert registry.names() == []

    assert registry.register(isolated_tasks.count).isolation == "thread"
    registry.task(name="dreamy", isolation="process")(isolated_tasks.dreamy)
    assert registry.get("dreamy").isolation == "process"
    assert registry.register(nested).isolation == "thread"  # fine in the worker's process
