"""Process isolation: one job's task function run in a child process that can be killed.

A sync task in the worker's thread pool that never calls ``ctx.checkpoint()``,
``ctx.progress()`` or ``ctx.sleep()`` cannot be stopped: Python has no way to end a thread
from outside. Kinds registered with ``isolation="process"`` run each job in a process of its
own instead, and that process can be stopped whatever its code is doing.

How the child is started. A fresh interpreter, ``sys.executable -c BOOTSTRAP``, started from
the worker's event loop with :func:`asyncio.create_subprocess_exec`:

- not ``fork``: the worker has threads and an event loop, and a forked copy of them (and of
  the locks their threads held) is not safe to run;
- not :mod:`multiprocessing` (``spawn``/``forkserver``): it pickles the process object into
  the child, pickles whatever crosses a ``Connection``, and imports the parent's
  ``__main__`` again in the child (a web app's entry script would run a second time). Here
  nothing is pickled: both directions speak JSON lines over the child's stdin and stdout;
- the bootstrap gives the child the parent's ``sys.path`` (through an environment variable)
  before anything else is imported, so the child imports the task's module (and jobdeck) from
  wherever the worker did, as ``JOBDECK_TASKS`` made it importable there;
- the child runs in a session of its own, so a Ctrl-C meant for the worker does not reach it
  (the worker stops it as below), and killing its process group also ends whatever it
  started.

A child costs a Python start plus the imports of jobdeck and of the task's module, a fraction
of a second per job, which counts against the job's timeout like the rest of the run.

The child finds the function by the module and qualified name of the *registered* kind's
function, never by a name that came with a request, imports that module (its top-level code
runs again in the child), validates the job's params against the function's signature as
the worker does, and calls it (an async function with :func:`asyncio.run`). Its
``JobContext`` forwards ``ctx.log()`` lines at once and the latest ``ctx.progress()`` about
ten times a second, so that progress stays cheap in a hot loop; the parent hands both to the
run's own context, which the worker writes out as usual. The child's own stdout is sent to
stderr, so that a ``print`` cannot garble the protocol.

Stopping. On cancel, timeout or worker shutdown the parent sends a stop message: the child's
context then raises at its next check (``ctx.checkpoint()``, ``ctx.progress()``,
``ctx.sleep()``) and an async task is cancelled, as in the worker. A child still running
:data:`STOP_GRACE_SECONDS` later is killed (SIGKILL to its process group): a task that did
not answer the stop message in a second is in code that does not check, and a SIGTERM would
end a Python process without cleanup just the same. On a lost lease the child is killed at
once, even during the grace of an earlier stop: another worker may claim the job as soon as
the lease runs out. A child whose parent dies (its stdin reaches end of file) exits at once.

A child that ends without answering (``os._exit``, a crash, a kill from outside) fails the
attempt with :class:`ProcessDied`; an exception in the child fails it with the exception's
type name, message and traceback (:class:`ChildFailed`). Both are retried like any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from typing import IO, Any

from jobdeck import errors
from jobdeck.errors import JobInterrupted, LeaseLost
from jobdeck.model import Job, JobError
from jobdeck.tasks import JobContext, TaskKind, TaskRegistry

log = logging.getLogger("jobdeck.isolation")

#: How long a child may take to stop after the stop message before it is killed.
STOP_GRACE_SECONDS = 1.0
#: How often the child forwards the latest progress.
PROGRESS_SECONDS = 0.1
#: The longest message (a result, above all) a child may send.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Environment variable carrying the parent's ``sys.path`` (JSON) into the child.
SYS_PATH_VARIABLE = "JOBDECK_ISOLATION_SYS_PATH"
#: The child's program: the parent's ``sys.path`` first, then :func:`child_main`.
BOOTSTRAP = (
    "import json, os, sys; "
    f"sys.path[:] = json.loads(os.environ.pop({SYS_PATH_VARIABLE!r})); "
    "from jobdeck.isolation import child_main; "
    "child_main()"
)


class ChildFailed(Exception):
    """The isolated task failed; ``error`` is what the job records, as the child saw it."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.message)
        self.error = error


class ProcessDied(ChildFailed):
    """The child process ended without an answer: it exited, crashed or was killed."""

    def __init__(self, returncode: int | None) -> None:
        if returncode is not None and returncode < 0:
            try:
                how = f"was killed by signal {signal.Signals(-returncode).name}"
            except ValueError:
                how = f"was killed by signal {-returncode}"
        else:
            how = f"exited with status {returncode}"
        message = f"the task's process {how} before it answered"
        super().__init__(JobError("ProcessDied", message, None))
        self.returncode = returncode


# --- the parent's side --------------------------------------------------------------------


class IsolatedRun:
    """One job's run in a child process, as the worker drives it.

    ``await run()`` starts the child and returns the task's result, or raises what the
    worker's thread and async paths raise: the run's interrupt reason (a
    :class:`~jobdeck.errors.JobInterrupted`) once it was stopped, :class:`ChildFailed` or
    :class:`ProcessDied`. ``stop(reason)`` is called by the worker, on its event loop, after
    it interrupted the run's context.
    """

    def __init__(
        self,
        kind: TaskKind,
        job: Job,
        context: JobContext,
        *,
        grace_seconds: float = STOP_GRACE_SECONDS,
    ) -> None:
        self.kind = kind
        self.job = job
        self.context = context
        self.grace_seconds = grace_seconds
        self._process: asyncio.subprocess.Process | None = None
        self._stop_reason: type[JobInterrupted] | None = None
        self._kill_now = False
        self._killer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id, once started."""
        return self._process.pid if self._process is not None else None

    def stop(self, reason: type[JobInterrupted]) -> None:
        """Ask the child to stop, and kill it after the grace; a lost lease kills it at once."""
        if issubclass(reason, LeaseLost):
            self._kill_now = True
            self._kill()
            return
        if self._stop_reason is not None:
            return
        self._stop_reason = reason
        if self._process is not None:
            self._send_stop()

    async def run(self) -> Any:
        """Run the task in a child process; its result, or raise as described above."""
        reason = self.context.interrupt_reason
        if reason is not None:
            raise reason()  # stopped before it started
        self._process = process = await _start_child(self.job)
        log.debug("job %s: task process %d started", self.job.id, process.pid)
        try:
            self._send(self._start_message())
            if self._kill_now:
                self._kill()
            elif self._stop_reason is not None:
                self._send_stop()
            final = await self._pump()
            if final is not None:
                try:
                    await asyncio.wait_for(process.wait(), self.grace_seconds)
                except TimeoutError:
                    self._kill()
            await process.wait()
        finally:
            await self._reap()
        return self._answer(final, process.returncode)

    def _start_message(self) -> dict[str, Any]:
        function = self.kind.function
        return {
            "op": "start",
            "module": function.__module__,
            "qualname": function.__qualname__,
            "kind": self.kind.name,
            "job_id": self.job.id,
            "attempt": self.job.attempt,
            "params": self.job.params,
        }

    async def _pump(self) -> dict[str, Any] | None:
        """Hand progress and log lines to the context; the final message, or None at EOF."""
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        while True:
            try:
                line = await stdout.readline()
                if not line:
                    return None
                message = json.loads(line)
            except ValueError as exc:  # too long, or not JSON
                self._kill()
                return _error_message(
                    "ValueError", f"unreadable message from the task's process: {exc}"
                )
            op = message.get("op")
            if op == "progress":
                if not self.context.interrupted:  # as in the worker: no progress once stopped
                    self.context.progress(message["current"], message["total"], message["message"])
            elif op == "log":
                self.context.log(message["message"], message["level"])
            else:
                return message  # result, error or interrupted

    def _answer(self, final: dict[str, Any] | None, returncode: int | None) -> Any:
        reason = self.context.interrupt_reason
        if final is None:
            if reason is not None:
                raise reason()
            raise ProcessDied(returncode)
        if final["op"] == "result":
            return final["value"]
        if final["op"] == "error":
            raise ChildFailed(JobError(final["type"], final["message"], final["traceback"]))
        raise (reason or _interrupt_class(final.get("reason")))()

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing() or self._process.returncode is not None:
            return
        stdin.write(_encode(message))

    def _send_stop(self) -> None:
        assert self._stop_reason is not None
        self._send({"op": "stop", "reason": self._stop_reason.__name__})
        self._killer = asyncio.get_running_loop().call_later(self.grace_seconds, self._expire)

    def _expire(self) -> None:
        if self._process is not None and self._process.returncode is None:
            log.warning(
                "job %s: the task's process did not stop within %.1fs: killed",
                self.job.id,
                self.grace_seconds,
            )
            self._kill()

    def _kill(self) -> None:
        """SIGKILL the child's process group (the child and what it started)."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        try:
            if hasattr(os, "killpg"):
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        except (ProcessLookupError, PermissionError):
            pass

    async def _reap(self) -> None:
        """However the run ends, the child is gone afterwards and its pipes are closed."""
        if self._killer is not None:
            self._killer.cancel()
        process = self._process
        assert process is not None
        if process.returncode is None:
            self._kill()
            await asyncio.shield(process.wait())
        if process.stdin is not None:
            process.stdin.close()


async def _start_child(job: Job) -> asyncio.subprocess.Process:
    if not sys.executable:
        raise RuntimeError("isolation='process' needs sys.executable to start a Python process")
    environment = {**os.environ, SYS_PATH_VARIABLE: json.dumps(sys.path)}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BOOTSTRAP,
        f"jobdeck-job={job.id}",  # for ps
        f"kind={job.kind}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=environment,
        start_new_session=True,
        limit=MAX_MESSAGE_BYTES,
    )


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def _error_message(type_name: str, message: str, trace: str | None = None) -> dict[str, Any]:
    return {"op": "error", "type": type_name, "message": message, "traceback": trace}


def _interrupt_class(name: Any) -> type[JobInterrupted]:
    """The interrupt named ``name`` (JobCancelled, ...); JobInterrupted for any other name."""
    found = getattr(errors, name, None) if isinstance(name, str) else None
    if isinstance(found, type) and issubclass(found, JobInterrupted):
        return found
    return JobInterrupted


# --- the child's side ----------------------------------------------------------------------


class _Channel:
    """The child's end of the protocol: JSON lines to the parent, one writer at a time."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = _encode(message)
        with self._lock:
            try:
                self._out.write(data)
                self._out.flush()
            except OSError:
                _exit(1)  # the parent is gone: nobody will record this run


class _ChildContext(JobContext):
    """The child's JobContext: log lines go to the parent at once."""

    __slots__ = ("_channel",)

    def __init__(self, start: dict[str, Any], channel: _Channel) -> None:
        super().__init__(start["job_id"], start["kind"], start["attempt"])
        self._channel = channel

    def log(self, message: str, level: str = "info") -> None:
        """Add a line to the job's log (sent to the worker at once)."""
        self._channel.send({"op": "log", "level": level, "message": str(message)})

    def forward_progress(self) -> None:
        """Send the progress reported since the last call, if any."""
        progress = self.take_progress()
        if progress is not None:
            current, total, message = progress
            self._channel.send(
                {"op": "progress", "current": current, "total": total, "message": message}
            )


class _Child:
    """The task's run inside the child process."""

    def __init__(self, start: dict[str, Any], channel: _Channel) -> None:
        self.start = start
        self.channel = channel
        self.context = _ChildContext(start, channel)
        self._on_stop: Callable[[], None] | None = None
        self._done = threading.Event()

    def listen(self, control: IO[bytes]) -> None:
        """Read stop messages from the parent (in a thread); exit at once at end of file."""
        for line in control:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("op") == "stop":
                self.context.interrupt(_interrupt_class(message.get("reason")))
                on_stop = self._on_stop
                if on_stop is not None:
                    with contextlib.suppress(RuntimeError):  # the event loop just closed
                        on_stop()
        _exit(1)  # the parent is gone: never outlive it

    def forward(self) -> None:
        """Forward progress every PROGRESS_SECONDS until the run is done (in a thread)."""
        while not self._done.wait(PROGRESS_SECONDS):
            self.context.forward_progress()

    def run(self) -> dict[str, Any]:
        """Run the task; the final message for the parent."""
        forwarder = threading.Thread(target=self.forward, name="jobdeck-progress", daemon=True)
        forwarder.start()
        try:
            result = self._call()
        except JobInterrupted as exc:
            final: dict[str, Any] = {"op": "interrupted", "reason": type(exc).__name__}
        except asyncio.CancelledError as exc:
            reason = self.context.interrupt_reason
            if reason is None:
                final = _failure(exc)
            else:
                final = {"op": "interrupted", "reason": reason.__name__}
        except BaseException as exc:
            final = _failure(exc)
        else:
            final = {"op": "result", "value": result}
            try:
                json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as exc:
                final = _error_message("TypeError", f"the task's result is not JSON: {exc}")
        self._done.set()
        forwarder.join()
        self.context.forward_progress()  # the last one, after the forwarder's
        return final

    def _call(self) -> Any:
        function = _resolve(self.start["module"], self.start["qualname"])
        kind = TaskRegistry().register(function, name=self.start["kind"])
        arguments = kind.arguments(self.start["params"], self.context)
        if kind.is_async:
            return asyncio.run(self._call_async(function, arguments))
        return function(**arguments)

    async def _call_async(self, function: Any, arguments: dict[str, Any]) -> Any:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._on_stop = lambda: loop.call_soon_threadsafe(task.cancel)
        if self.context.interrupted:  # stopped before the hook was in place
            task.cancel()
        try:
            return await function(**arguments)
        finally:
            self._on_stop = None


def _resolve(module_name: str, qualname: str) -> Any:
    """The object ``qualname`` of module ``module_name``, which must be callable."""
    found: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not callable(found):
        raise TypeError(f"{module_name}.{qualname} is not callable")
    return found


def _failure(exc: BaseException) -> dict[str, Any]:
    trace = "".join(traceback.format_exception(exc))
    return _error_message(type(exc).__name__, str(exc), trace)


def _exit(code: int) -> None:
    """End the child now (threads the task started do not keep it alive)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def child_main() -> None:
    """The child process: read the start message, run the task, answer, exit.

    The protocol keeps private copies of stdin and stdout; the task sees /dev/null as stdin
    and stderr as stdout.
    """
    control = os.fdopen(os.dup(0), "rb")
    channel = _Channel(os.fdopen(os.dup(1), "wb"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    start = json.loads(control.readline())
    child = _Child(start, channel)
    threading.Thread(
        target=child.listen, args=(control,), name="jobdeck-control", daemon=True
    ).start()
    channel.send(child.run())
    _exit(0)
