"""The Deck: the application object that wires settings, task kinds, the store and a worker."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from jobdeck.errors import InvalidParams, TooLarge
from jobdeck.model import MICROS, Job, JobSpec, is_valid_id, new_job_id, now_us
from jobdeck.settings import Settings
from jobdeck.store import open_store
from jobdeck.store.base import Store
from jobdeck.store.rows import dumps
from jobdeck.tasks import TaskRegistry, builtin_registry, default_registry

if TYPE_CHECKING:
    from fastapi import APIRouter

    from jobdeck.worker import Worker

log = logging.getLogger("jobdeck")


def import_task_modules(modules: Iterable[str]) -> None:
    """Import the modules named in ``JOBDECK_TASKS`` so that their kinds register."""
    for module in modules:
        importlib.import_module(module)


class Deck:
    """One jobdeck instance: kinds, store and (optionally) an embedded worker.

    >>> deck = Deck()
    >>> @deck.task
    ... def add(a: int, b: int) -> int:
    ...     return a + b
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        registry: TaskRegistry | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.registry = registry if registry is not None else builtin_registry()
        import_task_modules(self.settings.tasks)
        self.registry.merge(default_registry)
        self.store = store if store is not None else open_store(self.settings)
        self.worker: Worker | None = None
        self._router: APIRouter | None = None
        self._started = False

    # task kinds

    def task(self, function: Any = None, **options: Any) -> Any:
        """Register a task kind: ``@deck.task`` or ``@deck.task(name=..., queue=..., ...)``."""
        return self.registry.task(function, **options)

    # specs

    def build_spec(
        self,
        kind: str,
        params: Any = None,
        *,
        id: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        timeout: float | None = None,
        labels: dict[str, str] | None = None,
        run_at: int | None = None,
        delay: float | None = None,
    ) -> JobSpec:
        """A validated :class:`JobSpec`; raise UnknownKind, InvalidParams, TooLarge or
        ValueError. The kind's own queue, max_attempts and timeout fill what is omitted."""
        task_kind = self.registry.get(kind)
        if params is None:
            params = {}
        if isinstance(params, dict):
            size = self._json_size(kind, params)
            if size > self.settings.max_params_bytes:
                raise TooLarge(
                    f"params exceed JOBDECK_MAX_PARAMS_BYTES "
                    f"({self.settings.max_params_bytes} bytes)"
                )
        validated = task_kind.validate(params)
        self._json_size(kind, validated)
        if id is not None and not is_valid_id(id):
            raise ValueError(f"invalid job id {id!r}")
        if run_at is not None and delay is not None:
            raise ValueError("give run_at or delay, not both")
        if delay is not None:
            run_at = now_us() + int(delay * MICROS)
        return JobSpec(
            kind=kind,
            params=validated,
            id=id if id is not None else new_job_id(),
            queue=queue if queue is not None else task_kind.queue,
            priority=priority,
            max_attempts=max_attempts if max_attempts is not None else task_kind.max_attempts,
            timeout=timeout if timeout is not None else task_kind.timeout,
            labels=dict(labels or {}),
            run_at=run_at,
        )

    @staticmethod
    def _json_size(kind: str, value: Any) -> int:
        """Bytes of ``value`` as compact JSON; NaN and Infinity are refused (not JSON)."""
        try:
            encoded = dumps(value)
        except ValueError:
            raise InvalidParams(
                kind,
                [{"loc": ["params"], "msg": "NaN and Infinity are not JSON", "type": "json"}],
            ) from None
        return len(encoded) if encoded.isascii() else len(encoded.encode())

    # the Python API

    async def enqueue(self, kind: str, params: Any = None, **options: Any) -> Job:
        """Store one job and return it (an existing job with the same id and spec is
        returned as it is)."""
        (entry,) = await self.store.enqueue([self.build_spec(kind, params, **options)])
        return entry.job

    async def enqueue_many(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Store many jobs in one transaction, all or none."""
        return [entry.job for entry in await self.store.enqueue(specs)]

    # lifecycle

    async def start(self, *, worker: bool | None = None) -> None:
        """Open the store (migrating it) and start the embedded worker if configured."""
        if self._started:
            return
        await self.store.open()
        self._started = True
        if worker if worker is not None else self.settings.embedded_worker:
            from jobdeck.worker import Worker

            self.worker = Worker(self.store, self.registry, self.settings)
            await self.worker.start()

    async def stop(self) -> None:
        """Stop the worker (draining within the grace period) and close the store."""
        if not self._started:
            return
        if self.worker is not None:
            await self.worker.stop()
            self.worker = None
        await self.store.close()
        self._started = False

    @asynccontextmanager
    async def running(self, *, worker: bool | None = None) -> AsyncIterator[Deck]:
        """``async with deck.running():`` — the deck started for the block."""
        await self.start(worker=worker)
        try:
            yield self
        finally:
            await self.stop()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """A FastAPI lifespan: ``FastAPI(lifespan=deck.lifespan)``."""
        async with self.running():
            yield

    @property
    def router(self) -> APIRouter:
        """The v1 routes, to mount in an existing FastAPI app."""
        if self._router is None:
            from jobdeck.api.v1 import build_router

            self._router = build_router(self)
        return self._router
