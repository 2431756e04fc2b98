"""The worker: claims jobs, runs them with bounded concurrency, and reports how they ended.

Five loops share one asyncio event loop:

- *claim*: takes as many runnable jobs as there are free slots, in one round trip, whenever
  a slot frees or the store's hub says work may be there (or every
  ``JOBDECK_POLL_SECONDS``); the same transaction first writes the runs that finished since
  the last claim, so a busy worker commits once per cycle of "write what ended, take as
  many new jobs". While its recent runs are short (under ``CLAIM_AHEAD_RUN_SECONDS`` on
  average), the worker claims ahead: it holds up to ``CLAIM_AHEAD_FACTOR`` ×
  ``concurrency`` jobs more than its slots, which wait in the worker and start the moment
  a slot frees. A claim goes out as soon as it can take ``CLAIM_AHEAD_BATCH`` of that
  many, and up to ``CLAIMS_AT_ONCE`` claims are under way at once, each in a transaction
  of its own: the worker runs jobs while the database writes what ended and picks the
  next ones, a commit carries many jobs, and the database works on two claims at once. A
  job that waits longer than ``CLAIM_AHEAD_WAIT_SECONDS`` for a slot is handed back to
  the queue;
- *lease*: renews the leases of running jobs every third of ``JOBDECK_LEASE_SECONDS``, rescues
  jobs whose lease expired elsewhere, purges old finished jobs;
- *fence*: a run whose lease was not renewed for 0.8 of its length is stopped by the worker
  itself, before anyone else can claim the job;
- *cancel*: asks the store which running jobs were asked to stop, whenever the hub says so
  or every ``JOBDECK_CANCEL_CHECK_SECONDS``;
- *flush*: writes progress and log lines of running jobs every ``FLUSH_SECONDS``, and
  finished runs that no claim will carry (the claim loop stopped, or a claim failed), in
  batches, one transaction each.

Async tasks run as asyncio tasks and are cancelled outright on cancel, timeout or lost
lease. Sync tasks run in a thread pool and stop at their next ``ctx.checkpoint()``,
``ctx.progress()`` or ``ctx.sleep()``; their slot stays taken until the thread returns.
Kinds registered with ``isolation="process"`` run in a child process instead
(:mod:`jobdeck.isolation`), which is killed when it does not stop in time, and at once on a
lost lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from jobdeck.aio import Flag, cancel_and_wait, wait_any
from jobdeck.errors import (
    JobCancelled,
    JobInterrupted,
    JobTimedOut,
    LeaseLost,
    StoreUnavailable,
)
from jobdeck.isolation import ChildFailed, IsolatedRun
from jobdeck.logs import log_line
from jobdeck.model import (
    MICROS,
    Job,
    JobError,
    Outcome,
    OutcomeKind,
    backoff_seconds,
    now_us,
)
from jobdeck.retention import PURGE_BATCH, purge_cutoff, purge_interval
from jobdeck.settings import Settings
from jobdeck.store.base import NewLogLine, ProgressUpdate, Store, WorkerBatch
from jobdeck.store.rows import dumps
from jobdeck.tasks import JobContext, TaskKind, TaskRegistry

log = logging.getLogger("jobdeck.worker")

FLUSH_SECONDS = 0.25
#: Claim ahead of free slots while recent runs take less than this on average.
CLAIM_AHEAD_RUN_SECONDS = 0.01
#: Claiming ahead, a worker holds up to this many times ``concurrency`` jobs beyond its slots.
CLAIM_AHEAD_FACTOR = 12
#: Claiming ahead, a claim goes out once it can take this share of those (and at most twice).
CLAIM_AHEAD_BATCH = 0.25
#: Claiming ahead, claims under way at once, each in a transaction of its own.
CLAIMS_AT_ONCE = 2
#: A job claimed ahead that found no free slot within this goes back to the queue.
CLAIM_AHEAD_WAIT_SECONDS = 1.0
#: Weight of the newest run in the average run time.
RUN_TIME_WEIGHT = 0.2
#: After an unexpected error (a bug, not an unreachable store), a loop pauses this long.
ERROR_PAUSE_SECONDS = 1.0
MAINTAIN_EVERY_SECONDS = 1.0
#: With push notifications, idle loops still look every this many seconds.
SAFETY_POLL_SECONDS = 2.0
_worker_numbers = itertools.count(1)


class ShuttingDown(JobInterrupted):
    """The worker is stopping and hands the job back to the queue."""


class NoFreeSlot(JobInterrupted):
    """A job claimed ahead waited too long for a slot: it goes back to the queue."""


@dataclass(eq=False)
class Run:
    """One job running in this worker."""

    job: Job
    kind: TaskKind
    context: JobContext
    task: asyncio.Task[Any] | None = None
    lease_renewed_at: float = field(default_factory=time.monotonic)
    child: IsolatedRun | None = None
    #: When it was claimed ahead and began to wait for a slot (None: not waiting).
    waiting_since: float | None = None


def default_worker_name() -> str:
    """``host:pid:n``, unique among the workers of one database."""
    return f"{socket.gethostname()}:{os.getpid()}:{next(_worker_numbers)}"


class Worker:
    """Runs the jobs of some queues, ``concurrency`` at a time."""

    def __init__(
        self,
        store: Store,
        registry: TaskRegistry,
        settings: Settings,
        *,
        name: str | None = None,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings
        self.name = name or default_worker_name()
        self.queues = tuple(queues or settings.queues)
        self.concurrency = concurrency or settings.concurrency
        #: Every job this worker holds: running, or claimed ahead and waiting for a slot.
        self.runs: dict[str, Run] = {}
        self._waiting: deque[Run] = deque()
        #: Average run time (seconds, weighted towards the newest); None before any run.
        self._run_seconds: float | None = None
        self._pending: WorkerBatch = WorkerBatch(self.name)
        self._threads = ThreadPoolExecutor(
            self.concurrency, thread_name_prefix=f"jobdeck-task-{self.name}"
        )
        self._slot_freed = Flag()
        #: Write the pending batch now rather than at the next tick or claim.
        self._flush_now = Flag()
        self._claiming = False
        #: Jobs that the claims under way asked for, and how many those are.
        self._asked = 0
        self._under_way = 0
        #: The last claim took fewer jobs than it asked for.
        self._short_claim = False
        self._claim_ended = Flag()
        self._stopping = Flag()
        self._loops: list[asyncio.Task[None]] = []
        self._main: asyncio.Task[None] | None = None
        self._last_purge = 0.0
        self._last_maintenance = 0.0
        self._empty_claims = 0
        self._flush_lock = asyncio.Lock()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the loops in the background (once; a second call does nothing)."""
        if self._loops:
            return
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="jobdeck-claim"),
            asyncio.create_task(self._lease_loop(), name="jobdeck-lease"),
            asyncio.create_task(self._cancel_loop(), name="jobdeck-cancel"),
            asyncio.create_task(self._flush_loop(), name="jobdeck-flush"),
            asyncio.create_task(self._fence_loop(), name="jobdeck-fence"),
        ]
        log.info(
            "worker %s started: queues=%s concurrency=%d",
            self.name,
            ",".join(self.queues),
            self.concurrency,
        )

    async def stop(self, grace_seconds: float | None = None) -> None:
        """Stop claiming, let running jobs finish within the grace period, hand the rest
        back to the queue, write everything out."""
        grace = self.settings.shutdown_grace_seconds if grace_seconds is None else grace_seconds
        self._stopping.set()
        self._slot_freed.set()
        if self._loops:
            await self._loops[0]  # the claim loop ends by itself; a claim is never cut short
        for run in list(self._waiting):
            self._interrupt(run, ShuttingDown)
        running = [r.task for r in self.runs.values() if r.task is not None]
        if running:
            log.info(
                "worker %s: waiting up to %.1fs for %d running jobs", self.name, grace, len(running)
            )
            _, still_running = await asyncio.wait(running, timeout=grace)
            for run in list(self.runs.values()):
                if run.task in still_running:
                    self._interrupt(run, ShuttingDown)
            if still_running:
                await asyncio.wait(still_running)
        if self._loops:
            _, lease_loop, cancel_loop, flush_loop, fence_loop = self._loops
            await cancel_and_wait(fence_loop)
            await cancel_and_wait(lease_loop)
            await cancel_and_wait(cancel_loop)
            async with self._flush_lock:  # never cut a write short: its batch would be lost
                await cancel_and_wait(flush_loop)
            self._loops = []
        await self._flush()
        with contextlib.suppress(Exception):
            await self.store.unregister_worker(self.name)
        self._threads.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped", self.name)

    async def run_until_idle(self, *, timeout: float = 30.0) -> None:
        """Run until nothing is runnable and nothing runs, then stop (tests, one-off drains).

        Idle means: no run in progress, nothing left to write, and a claim made after that
        found nothing.
        """
        await self.start()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                await asyncio.sleep(self.settings.poll_seconds)
                if self.runs or self._pending:
                    continue
                seen = self._empty_claims
                self.store.hub.work_added()
                while self._empty_claims == seen and time.monotonic() < deadline:
                    await asyncio.sleep(self.settings.poll_seconds / 4)
                if not self.runs and not self._pending:
                    return
            raise TimeoutError(f"worker {self.name} still busy after {timeout}s")
        finally:
            await self.stop()

    # --- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        self._claiming = True
        try:
            kinds = self.registry.names()
            await asyncio.gather(
                *(self._claimer(kinds, first=n == 0) for n in range(CLAIMS_AT_ONCE))
            )
        finally:
            self._claiming = False
            self._flush_now.set()  # what finished from now on is written by the flush loop

    async def _claimer(self, kinds: Sequence[str], *, first: bool) -> None:
        """One of the claim loop's ``CLAIMS_AT_ONCE`` claimers. A claimer that may claim
        does so in its own step, as soon as it wakes (no task in between: pickup latency).
        Only the ``first`` claims when no other claim is under way (so an idle worker polls
        the store as one loop would); the others only beside one, as :meth:`_may_claim`
        says."""
        hub = self.store.hub
        while not self._stopping.is_set():
            room = self._room()
            if room > 0 and self._may_claim(first):
                hub.work_available.clear()
                # The leases the claim grants start no earlier than this: the fence counts
                # from here, not from the answer, which may come late.
                asked_at = time.monotonic()
                with self._asking(room):
                    jobs = await self._claim(kinds, room)
                self._claimed(jobs, room, asked_at)
                if not jobs and not self.runs:
                    self._empty_claims += 1
                if not self._short_claim:
                    continue  # there may be more: claim again as soon as there is room
                # Fewer jobs than asked for: wait for news of work, a freed slot, or the
                # next delayed job. A claim parked meanwhile may bring jobs: while they are
                # fewer than it asked for, wait on.
                while self._short_claim and not self._stopping.is_set():
                    idle = await self._idle_seconds(kinds)
                    if not await self._wait_for_work(kinds, idle):
                        break
            else:
                await wait_any(
                    self._slot_freed,
                    self._claim_ended,
                    self._stopping,
                    timeout=self._safety_poll_seconds,
                )
            self._slot_freed.clear()
            self._claim_ended.clear()

    @contextlib.contextmanager
    def _asking(self, room: int) -> Iterator[None]:
        """Count a claim of ``room`` jobs as under way while the block runs."""
        self._asked += room
        self._under_way += 1
        try:
            yield
        finally:
            self._asked -= room
            self._under_way -= 1

    def _claimed(self, jobs: list[Job], room: int, asked_at: float) -> None:
        """Launch what a claim of ``room`` jobs took (leases asked at ``asked_at``)."""
        for job in jobs:
            self._launch(job, asked_at)
        self._short_claim = len(jobs) < room
        self._claim_ended.set()

    async def _wait_for_work(self, kinds: Sequence[str], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for news of work, a freed slot or the stop, with
        a claim of the room there is parked in the store meanwhile when the store takes
        one (:meth:`Store.park_claim`: it runs at the commit of work this process adds, with
        no turn of the event loop in between). Whether that claim ran; its jobs are
        launched."""
        room = self._room()
        parked = None
        if room > 0:
            parked = self.store.park_claim(
                self.name, self.queues, kinds, room, self.settings.lease_seconds
            )
        hub = self.store.hub
        flags = (hub.work_available, self._slot_freed, self._stopping)
        if parked is None:
            await wait_any(*flags, timeout=timeout)
            return False
        with self._asking(room):
            try:
                await wait_any(*flags, timeout=timeout)
            finally:
                ran = not parked.withdraw()
            if not ran:
                return False
            try:
                jobs, asked_at = await parked.result()
            except StoreUnavailable as exc:
                log.warning("worker %s: claim failed: %s", self.name, exc)
                return False
            except Exception:
                log.exception("worker %s: claim failed", self.name)
                return False
        self._claimed(jobs, room, asked_at)
        return True

    def _may_claim(self, first: bool) -> bool:
        """Whether a claimer may claim now: the first one when no claim is under way; any
        beside one, only while claiming ahead (``CLAIMS_AT_ONCE``) and while claims come
        back full."""
        if not self._under_way:
            return first
        if self._short_claim or not self._claiming_ahead():
            return False
        return self._under_way < CLAIMS_AT_ONCE

    def _claiming_ahead(self) -> bool:
        """Whether recent runs are short enough to claim ahead of free slots."""
        average = self._run_seconds
        return average is not None and average < CLAIM_AHEAD_RUN_SECONDS

    def _room(self) -> int:
        """How many jobs to claim now: enough to hold ``concurrency`` jobs, counting those
        that claims under way asked for; while runs are short, enough to hold
        ``CLAIM_AHEAD_FACTOR`` × ``concurrency`` more, claimed ahead, once that makes at
        least ``CLAIM_AHEAD_BATCH`` of them (nothing before: the fewer the claims, the fewer
        the round trips and commits per job), and at most twice that in one claim."""
        held = len(self.runs) + self._asked
        if not self._claiming_ahead():
            return self.concurrency - held
        ahead = CLAIM_AHEAD_FACTOR * self.concurrency
        room = self.concurrency + ahead - held
        batch = max(1, int(ahead * CLAIM_AHEAD_BATCH))
        return min(room, 2 * batch) if room >= batch else 0

    async def _claim(self, kinds: Sequence[str], free: int) -> list[Job]:
        """Write what finished (the pending batch) and claim up to ``free`` jobs, in one
        transaction: one round trip (one commit) per cycle instead of two.

        A batch of progress or log lines of running jobs is written under the flush lock,
        in order with the flush loop's writes (a later value must not be overwritten by an
        earlier one). A batch of finished runs only goes without it, beside another claim
        or a flush: each run ends once, and a progress write never touches a job that
        ended."""
        if self._pending.only_finishes():
            return await self._claim_carrying_pending(kinds, free)
        async with self._flush_lock:
            return await self._claim_carrying_pending(kinds, free)

    async def _claim_carrying_pending(self, kinds: Sequence[str], free: int) -> list[Job]:
        failed = False
        batch, self._pending = self._pending, WorkerBatch(self.name)
        try:
            jobs = await self.store.claim(
                self.name,
                self.queues,
                kinds,
                free,
                self.settings.lease_seconds,
                done=batch if batch else None,
                max_log_lines=self.settings.max_log_lines,
            )
        except StoreUnavailable as exc:
            log.warning("worker %s: claim failed: %s", self.name, exc)
            jobs = []
        except Exception:
            # The claim loop must outlive a bug: the batch goes to the flush loop, which
            # drops it if it fails again (its jobs are then rescued after their lease).
            log.exception("worker %s: claim failed", self.name)
            jobs = []
            failed = True
        finally:
            if batch and not batch.recorded:
                self._restore(batch)  # not written: the flush loop writes it
                self._flush_now.set()
        if failed:
            await asyncio.sleep(ERROR_PAUSE_SECONDS)
        return jobs

    @property
    def _safety_poll_seconds(self) -> float:
        """How long to wait for a wake-up before looking anyway."""
        if self.store.push_notifications:
            return SAFETY_POLL_SECONDS
        return self.settings.poll_seconds

    async def _idle_seconds(self, kinds: Sequence[str]) -> float:
        """How long an idle claim loop may sleep: until the next wake-up, the next delayed
        job or the safety poll, whichever comes first."""
        if not self.store.push_notifications:
            return self.settings.poll_seconds
        try:
            due = await self.store.next_due(self.queues, kinds)
        except StoreUnavailable:
            return self.settings.poll_seconds
        if due is None:
            return SAFETY_POLL_SECONDS
        return max(0.0, min(SAFETY_POLL_SECONDS, (due - now_us()) / MICROS))

    def _launch(self, job: Job, leased_at: float) -> None:
        kind = self.registry.get(job.kind)
        context = JobContext(job.id, job.kind, job.attempt)
        run = Run(job, kind, context, lease_renewed_at=leased_at)
        running = len(self.runs) - len(self._waiting)
        self.runs[job.id] = run
        if running < self.concurrency:
            self._start(run)
        else:
            run.waiting_since = time.monotonic()
            self._waiting.append(run)

    def _start(self, run: Run) -> None:
        run.waiting_since = None
        job = run.job
        if run.context.interrupt_reason is None:
            log_line(
                log,
                logging.INFO,
                "job %s kind=%s running (attempt %d/%d) on %s",
                job.id,
                job.kind,
                job.attempt,
                job.max_attempts,
                self.name,
            )
        run.task = asyncio.create_task(self._execute(run), name=f"jobdeck-job-{job.id}")

    # --- running -------------------------------------------------------------------------

    async def _execute(self, run: Run) -> None:
        job = run.job
        timer = None
        if job.timeout is not None:
            timer = asyncio.get_running_loop().call_later(
                job.timeout, self._interrupt, run, JobTimedOut
            )
        try:
            reason = run.context.interrupt_reason
            if reason is not None:  # stopped while it waited for a slot: never runs
                raise reason()
            started = time.monotonic()
            result = await self._call(run)
            self._timed(time.monotonic() - started)
            outcome = self._success(run, result)
        except (JobInterrupted, asyncio.CancelledError) as exc:
            outcome = self._interrupted(run, exc)
        except Exception as exc:
            outcome = self._failure(run, exc)
        finally:
            if timer is not None:
                timer.cancel()
        self._finish(run, outcome)

    async def _call(self, run: Run) -> Any:
        if run.kind.isolation == "process":
            run.child = IsolatedRun(run.kind, run.job, run.context)
            return await run.child.run()
        arguments = run.kind.arguments(run.job.params, run.context)
        if run.kind.is_async:
            return await run.kind.function(**arguments)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._threads, _call_sync, run.kind.function, arguments)
        # The thread cannot be stopped from here: wait for it even when interrupted, so
        # that the slot is not reused while the task's code still runs.
        while True:
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                if future.done():
                    return future.result()
                continue

    def _timed(self, seconds: float) -> None:
        average = self._run_seconds
        if average is None:
            self._run_seconds = seconds
        else:
            self._run_seconds = average + RUN_TIME_WEIGHT * (seconds - average)

    def _interrupt(self, run: Run, reason: type[JobInterrupted]) -> None:
        if run.waiting_since is not None:  # claimed ahead, not started: end it at once
            run.context.interrupt(reason)
            self._waiting.remove(run)
            self._start(run)
            return
        first = run.context.interrupt(reason)
        if run.child is not None:
            run.child.stop(reason)  # even when not first: a lost lease kills the child at once
            return
        if not first:
            return
        if run.kind.is_async and run.task is not None and not run.task.done():
            run.task.cancel()

    def _success(self, run: Run, result: Any) -> Outcome | None:
        reason = run.context.interrupt_reason
        if reason is LeaseLost:
            return None
        if reason is JobCancelled:
            return self._outcome(run, OutcomeKind.CANCELLED)
        if reason is JobTimedOut:  # it returned after all, but too late: a failure
            return self._timed_out(run)
        try:
            dumps(result)
        except (TypeError, ValueError) as exc:
            return self._failure(run, TypeError(f"the task's result is not JSON: {exc}"))
        return self._outcome(run, OutcomeKind.SUCCEEDED, result=result)

    def _interrupted(self, run: Run, exc: BaseException) -> Outcome | None:
        reason = run.context.interrupt_reason
        if reason is None and isinstance(exc, JobInterrupted):
            reason = type(exc)
        if reason is None or reason is LeaseLost:
            return None  # cancelled by nobody we know: the worker itself is going away
        if reason is ShuttingDown or reason is NoFreeSlot:
            return self._outcome(run, OutcomeKind.HANDED_BACK)
        if reason is JobTimedOut:
            return self._timed_out(run)
        return self._outcome(run, OutcomeKind.CANCELLED)

    def _timed_out(self, run: Run) -> Outcome:
        error = TimeoutError(f"job exceeded its timeout of {run.job.timeout}s")
        return self._failure(run, error, with_traceback=False)

    def _failure(self, run: Run, exc: BaseException, *, with_traceback: bool = True) -> Outcome:
        job = run.job
        retry_at = None
        if job.attempt < job.max_attempts:
            delay = backoff_seconds(
                job.attempt,
                self.settings.backoff_base_seconds,
                self.settings.backoff_max_seconds,
                random.uniform(0.5, 1.5),
            )
            retry_at = now_us() + int(delay * MICROS)
        if isinstance(exc, ChildFailed):
            error = exc.error  # as the child process saw it
        else:
            trace = "".join(traceback.format_exception(exc)) if with_traceback else None
            error = JobError(type(exc).__name__, str(exc), trace)
        return self._outcome(run, OutcomeKind.FAILED, error=error, retry_at=retry_at)

    def _outcome(self, run: Run, kind: OutcomeKind, **values: Any) -> Outcome:
        return Outcome(
            run.job.id, self.name, kind, finished_at=now_us(), attempt=run.job.attempt, **values
        )

    def _finish(self, run: Run, outcome: Outcome | None) -> None:
        self._collect(run)
        if outcome is not None:
            self._pending.outcomes.append(outcome)
            if not self._claiming:
                self._flush_now.set()
            # else the claim loop, woken by the freed slot, writes it with its next claim
            job = run.job
            if outcome.kind is OutcomeKind.FAILED:
                log.warning(
                    "job %s kind=%s failed (attempt %d/%d): %s: %s%s",
                    job.id,
                    job.kind,
                    job.attempt,
                    job.max_attempts,
                    outcome.error.type if outcome.error else "",
                    outcome.error.message if outcome.error else "",
                    "; will retry" if outcome.retry_at else "",
                )
            else:
                log_line(
                    log, logging.INFO, "job %s kind=%s %s", job.id, job.kind, outcome.kind.value
                )
        else:
            log.warning("job %s kind=%s abandoned: lease lost", run.job.id, run.job.kind)
        del self.runs[run.job.id]
        waiting = self._waiting
        while waiting and len(self.runs) - len(waiting) < self.concurrency:
            self._start(waiting.popleft())
        self._slot_freed.set()

    # --- writing out ---------------------------------------------------------------------

    def _collect(self, run: Run) -> None:
        """Move a run's unsaved progress and log lines into the pending batch."""
        context = run.context
        progress = context.take_progress()
        if progress is not None:
            self._pending.progress.append(ProgressUpdate(context.job_id, *progress))
        for at, level, message in context.take_logs():
            self._pending.logs.append(NewLogLine(context.job_id, at, level, message))

    async def _flush(self) -> None:
        async with self._flush_lock:
            for run in self.runs.values():
                self._collect(run)
            batch, self._pending = self._pending, WorkerBatch(self.name)
            if not batch:
                return
            try:
                await self.store.record(batch, self.settings.max_log_lines)
            except StoreUnavailable as exc:
                log.warning("worker %s: write failed, will retry: %s", self.name, exc)
                self._restore(batch)
                raise

    def _restore(self, batch: WorkerBatch) -> None:
        """Put a batch that was not written back in front of the pending one."""
        self._pending.progress[:0] = batch.progress
        self._pending.logs[:0] = batch.logs
        self._pending.outcomes[:0] = batch.outcomes

    async def _flush_loop(self) -> None:
        """Progress and log lines of running jobs every ``FLUSH_SECONDS``; finished runs at
        once when the claim loop does not write them with its next claim."""
        while True:
            await wait_any(self._flush_now, timeout=FLUSH_SECONDS)
            self._flush_now.clear()
            try:
                await self._flush()
            except StoreUnavailable:
                await asyncio.sleep(FLUSH_SECONDS)
            except Exception:
                log.exception("worker %s: write failed, batch dropped", self.name)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)

    # --- leases, rescue, retention -------------------------------------------------------

    async def _lease_loop(self) -> None:
        renew_every = self.settings.lease_seconds / 3
        tick = min(renew_every, 1.0) / 4
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            if time.monotonic() - last_renewal >= renew_every - tick / 2:
                last_renewal = time.monotonic()
                await self._renew_leases(timeout=self.settings.lease_seconds / 2)
            try:
                await self.store.rescue_expired()
                await self._maintain_if_due()
            except StoreUnavailable as exc:
                log.warning("worker %s: maintenance failed: %s", self.name, exc)
            except Exception:
                log.exception("worker %s: maintenance failed", self.name)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)

    async def _fence_loop(self) -> None:
        """Check the fence on a clock of its own: a stalled store call must not delay it."""
        tick = min(self.settings.lease_seconds / 3, 1.0) / 4
        while True:
            await asyncio.sleep(tick)
            self._fence()

    async def _renew_leases(self, timeout: float) -> None:
        held = list(self.runs)
        held += [o.job_id for o in self._pending.outcomes]
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                beat = await self.store.heartbeat(self.name, held, self.settings.lease_seconds)
        except (StoreUnavailable, TimeoutError) as exc:
            log.warning("worker %s: heartbeat failed: %s", self.name, str(exc) or "timed out")
            return
        except Exception:
            log.exception("worker %s: heartbeat failed", self.name)
            return
        for job_id in held:
            run = self.runs.get(job_id)
            if run is None:
                continue
            if job_id in beat.renewed:
                run.lease_renewed_at = started
            else:
                self._interrupt(run, LeaseLost)
            if job_id in beat.cancel_requested:
                self._interrupt(run, JobCancelled)

    def _fence(self) -> None:
        """Abandon runs whose lease was not renewed for 0.8 of its length: another worker
        may take the job once it runs out, so this run must stop first."""
        limit = self.settings.lease_seconds * 0.8
        now = time.monotonic()
        for run in list(self.runs.values()):
            if now - run.lease_renewed_at > limit:
                self._interrupt(run, LeaseLost)
        for run in list(self._waiting):
            if now - (run.waiting_since or now) > CLAIM_AHEAD_WAIT_SECONDS:
                # Runs are not short any more: no claiming ahead until they are again.
                self._run_seconds = CLAIM_AHEAD_WAIT_SECONDS
                self._interrupt(run, NoFreeSlot)

    async def _maintain_if_due(self) -> None:
        now = time.monotonic()
        if now - self._last_maintenance >= MAINTAIN_EVERY_SECONDS:
            self._last_maintenance = now
            await self.store.maintain()
        await self._purge_if_due()

    async def _purge_if_due(self) -> None:
        """Delete one batch of finished jobs older than the retention, when due: every
        ``purge_interval`` seconds, and at every tick while a backlog remains. One batch
        per tick, so that lease renewal in this loop never waits on a long purge."""
        retention = self.settings.retention_seconds
        interval = purge_interval(retention)
        now = time.monotonic()
        if now - self._last_purge < interval:
            return
        self._last_purge = now
        try:
            purged = await self.store.purge(purge_cutoff(now_us(), retention), PURGE_BATCH)
        except StoreUnavailable:
            raise
        except Exception:
            # Purging can wait; the lease loop it runs in must not die of it.
            log.exception("worker %s: purge failed", self.name)
            return
        if purged >= PURGE_BATCH:
            self._last_purge = now - interval  # more to go: due again at the next tick

    # --- cancellation --------------------------------------------------------------------

    async def _cancel_loop(self) -> None:
        hub = self.store.hub
        while True:
            timeout = (
                SAFETY_POLL_SECONDS
                if self.store.push_notifications
                else self.settings.cancel_check_seconds
            )
            await wait_any(hub.cancel_requested, timeout=timeout)
            hub.cancel_requested.clear()
            if not self.runs:
                continue
            try:
                asked = await self.store.cancel_requests(self.name, list(self.runs))
            except StoreUnavailable as exc:
                log.warning("worker %s: cancel check failed: %s", self.name, exc)
                continue
            except Exception:
                log.exception("worker %s: cancel check failed", self.name)
                await asyncio.sleep(ERROR_PAUSE_SECONDS)
                continue
            for job_id in asked:
                run = self.runs.get(job_id)
                if run is not None:
                    self._interrupt(run, JobCancelled)


def _call_sync(function: Any, arguments: dict[str, Any]) -> Any:
    return function(**arguments)
