"""Task kinds: the registry, parameter validation, and the context a running job sees.

A *task* is a plain or async function; a *kind* is the name it is registered under; a *job*
is one run of a kind with some params. Params are validated against a pydantic model built
from the function's signature (or the single pydantic model it takes), which also gives the
JSON schema shown on ``GET /v1/kinds``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from jobdeck.errors import InvalidParams, JobCancelled, JobInterrupted, UnknownKind
from jobdeck.model import DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, NAME_PATTERN, now_us

TaskFunction = Callable[..., Any]
#: Where a kind's jobs run: ``"thread"`` in the worker process (async tasks in its event loop,
#: sync tasks in its thread pool), ``"process"`` each in a child process that can be killed.
Isolation = Literal["thread", "process"]


# --- the context a job sees --------------------------------------------------------------


class JobContext:
    """Handed to a task that asks for it (a parameter annotated ``JobContext``).

    ``progress`` and ``log`` only record in memory; the worker writes them out a few times a
    second. ``checkpoint``, ``progress``, ``sleep`` and ``asleep`` raise a
    :class:`~jobdeck.errors.JobInterrupted` (``JobCancelled``, ``JobTimedOut``, ``LeaseLost``)
    once the run must stop. Async tasks are also cancelled outright.
    """

    __slots__ = (
        "_interrupt",
        "_logs",
        "_progress",
        "_progress_dirty",
        "_wake",
        "attempt",
        "job_id",
        "kind",
    )

    def __init__(self, job_id: str, kind: str, attempt: int) -> None:
        self.job_id = job_id
        self.kind = kind
        self.attempt = attempt
        self._interrupt: type[JobInterrupted] | None = None
        #: Made by the first ``sleep``: most runs never sleep in a thread.
        self._wake: threading.Event | None = None
        self._progress: tuple[float, float | None, str | None] = (0, None, None)
        self._progress_dirty = False
        self._logs: deque[tuple[int, str, str]] = deque()

    # task-facing API

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report progress. ``total`` and ``message`` stay as last given when omitted."""
        if self._interrupt is not None:
            raise self._interrupt()
        _, old_total, old_message = self._progress
        self._progress = (
            current,
            old_total if total is None else total,
            old_message if message is None else message,
        )
        self._progress_dirty = True

    def log(self, message: str, level: str = "info") -> None:
        """Add a line to the job's log (``GET /v1/jobs/{id}/logs``)."""
        self._logs.append((now_us(), level, str(message)))

    @property
    def cancelled(self) -> bool:
        """True once cancel was requested for this job."""
        return self._interrupt is not None and issubclass(self._interrupt, JobCancelled)

    @property
    def interrupted(self) -> bool:
        """True once the run must stop, for whatever reason."""
        return self._interrupt is not None

    def checkpoint(self) -> None:
        """Raise if the run must stop (cancelled, timed out, lease lost)."""
        if self._interrupt is not None:
            raise self._interrupt()

    def sleep(self, seconds: float) -> None:
        """Sleep in a sync task; wakes and raises at once when the run must stop."""
        if self._wake is None:
            self._wake = threading.Event()
        # After the event exists: an interrupt from now on sets it, an earlier one raises.
        self.checkpoint()
        if seconds > 0 and self._wake.wait(seconds):
            self.checkpoint()

    async def asleep(self, seconds: float) -> None:
        """Sleep in an async task; the task is cancelled when the run must stop."""
        self.checkpoint()
        await asyncio.sleep(seconds)
        self.checkpoint()

    # worker-facing API

    def interrupt(self, reason: type[JobInterrupted]) -> bool:
        """Ask the run to stop; the first reason wins. Returns whether this call set it."""
        if self._interrupt is not None:
            return False
        self._interrupt = reason
        if self._wake is not None:
            self._wake.set()
        return True

    @property
    def interrupt_reason(self) -> type[JobInterrupted] | None:
        return self._interrupt

    def take_progress(self) -> tuple[float, float | None, str | None] | None:
        """The progress reported since the last call, or None if nothing new."""
        if not self._progress_dirty:
            return None
        self._progress_dirty = False
        return self._progress

    def take_logs(self) -> list[tuple[int, str, str]]:
        """The log lines recorded since the last call, oldest first."""
        lines = []
        while self._logs:
            lines.append(self._logs.popleft())
        return lines


# --- kinds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskKind:
    """A registered task: its function, its params model and its defaults."""

    name: str
    function: TaskFunction
    params_model: type[BaseModel]
    context_param: str | None
    model_param: str | None
    queue: str = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    description: str | None = None
    isolation: Isolation = "thread"

    @functools.cached_property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (runs on the event loop)."""
        return inspect.iscoroutinefunction(self.function)

    def params_schema(self) -> dict[str, Any]:
        """The JSON schema of this kind's params."""
        return self.params_model.model_json_schema()

    def validate(self, params: Any) -> dict[str, Any]:
        """Validated params as a JSON object, defaults filled in; raise InvalidParams."""
        if not isinstance(params, dict):
            raise InvalidParams(
                self.name,
                [{"loc": ["params"], "msg": "params must be a JSON object", "type": "dict_type"}],
            )
        try:
            instance = self.params_model.model_validate(params)
        except ValidationError as exc:
            raise InvalidParams(self.name, _errors_of(exc)) from None
        return instance.model_dump(mode="json")

    def arguments(self, params: dict[str, Any], context: JobContext) -> dict[str, Any]:
        """Keyword arguments to call the function with, from stored (validated) params."""
        instance = self.params_model.model_validate(params)
        if self.model_param is not None:
            arguments: dict[str, Any] = {self.model_param: instance}
        else:
            # A model made from the signature forbids extra fields: its __dict__ holds
            # exactly the params.
            arguments = dict(instance.__dict__)
        if self.context_param is not None:
            arguments[self.context_param] = context
        return arguments


def _errors_of(exc: ValidationError) -> list[dict[str, Any]]:
    errors = json.loads(exc.json(include_url=False, include_context=False, include_input=False))
    return [{"loc": ["params", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors]


def _build_params_model(
    name: str, function: TaskFunction
) -> tuple[type[BaseModel], str | None, str | None]:
    """(params model, name of the context parameter, name of a single model parameter)."""
    signature = inspect.signature(function)
    try:
        hints = get_type_hints(function, include_extras=True)
    except Exception as exc:  # an annotation that cannot be resolved
        raise TypeError(f"task {name!r}: cannot resolve annotations: {exc}") from exc
    context_param = None
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"task {name!r}: parameter {param.name!r} must be a keyword")
        annotation = hints.get(param.name, Any)
        if annotation is JobContext or (param.name == "ctx" and annotation is Any):
            context_param = param.name
            continue
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    if len(fields) == 1:
        (param_name, (annotation, default)) = next(iter(fields.items()))
        if default is ... and inspect.isclass(annotation) and issubclass(annotation, BaseModel):
            return annotation, context_param, param_name
    model = create_model(  # type: ignore[call-overload]
        f"{name}_params",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    return model, context_param, None


def _check_importable(name: str, function: TaskFunction) -> None:
    """Raise ValueError unless ``function`` can be found again by module and qualified name,
    as the child process of a process-isolated kind finds it."""
    module = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        problem = "has no module and qualified name"
    elif inspect.ismethod(function):
        problem = f"is a bound method ({qualname})"
    elif "<" in qualname:  # <lambda>, <locals>
        problem = f"is a lambda or a nested function ({qualname})"
    elif module == "__main__":
        problem = "is defined in __main__"
    else:
        return
    raise ValueError(
        f"task {name!r} with isolation='process' {problem}: its process imports it by module "
        "and qualified name, so define it at the top level of an importable module"
    )


class TaskRegistry:
    """Task kinds by name."""

    def __init__(self) -> None:
        self._kinds: dict[str, TaskKind] = {}

    def register(
        self,
        function: TaskFunction,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: float | None = None,
        isolation: Isolation = "thread",
    ) -> TaskKind:
        """Register ``function`` as a kind (its ``__name__`` unless ``name`` is given).

        ``isolation="process"`` runs each job in a child process that is killed on cancel,
        timeout or a lost lease, for code that never checks; the function must then be
        importable by module and qualified name (not a lambda, a nested function or in
        ``__main__``), and its params and result are JSON.
        """
        kind_name = name or function.__name__
        if not NAME_PATTERN.fullmatch(kind_name):
            raise ValueError(f"invalid task kind name {kind_name!r}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if isolation not in get_args(Isolation):
            raise ValueError(f"isolation must be 'thread' or 'process', not {isolation!r}")
        if isolation == "process":
            _check_importable(kind_name, function)
        existing = self._kinds.get(kind_name)
        if existing is not None and existing.function is not function:
            raise ValueError(f"task kind {kind_name!r} is already registered")
        model, context_param, model_param = _build_params_model(kind_name, function)
        kind = TaskKind(
            name=kind_name,
            function=function,
            params_model=model,
            context_param=context_param,
            model_param=model_param,
            queue=queue,
            max_attempts=max_attempts,
            timeout=timeout,
            description=inspect.getdoc(function),
            isolation=isolation,
        )
        self._kinds[kind_name] = kind
        return kind

    def task(
        self,
        function: TaskFunction | None = None,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: float | None = None,
        isolation: Isolation = "thread",
    ) -> Any:
        """Decorator: ``@registry.task`` or ``@registry.task(name=..., queue=..., ...)``."""

        def decorate(fn: TaskFunction) -> TaskFunction:
            self.register(
                fn,
                name=name,
                queue=queue,
                max_attempts=max_attempts,
                timeout=timeout,
                isolation=isolation,
            )
            return fn

        return decorate(function) if function is not None else decorate

    def merge(self, other: TaskRegistry) -> None:
        """Add every kind of ``other`` that this registry does not have yet."""
        for kind in other:
            self._kinds.setdefault(kind.name, kind)

    def get(self, name: str) -> TaskKind:
        """The kind of that name; raise UnknownKind."""
        try:
            return self._kinds[name]
        except KeyError:
            raise UnknownKind(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __iter__(self) -> Any:
        return iter(list(self._kinds.values()))

    def names(self) -> list[str]:
        return sorted(self._kinds)


#: Kinds registered with the module-level :func:`jobdeck.task` decorator; every Deck
#: picks them up (this is how modules named in ``JOBDECK_TASKS`` register their kinds).
default_registry = TaskRegistry()


def task(function: TaskFunction | None = None, **options: Any) -> Any:
    """Register a task kind in the default registry: ``@jobdeck.task`` or
    ``@jobdeck.task(name=..., queue=..., max_attempts=..., timeout=..., isolation=...)``."""
    return default_registry.task(function, **options)


# --- the built-in demo kind ---------------------------------------------------------------


async def steps(
    ctx: JobContext,
    n_steps: Annotated[int, Field(ge=0, le=1_000_000)] = 10,
    step_seconds: Annotated[float, Field(ge=0, le=3600)] = 1.0,
) -> dict[str, int]:
    """The original demo job: ``n_steps`` steps of ``step_seconds`` each, with progress."""
    ctx.progress(0, total=n_steps)
    for step in range(1, n_steps + 1):
        await ctx.asleep(step_seconds)
        ctx.progress(step, message=f"step {step} of {n_steps}")
        ctx.log(f"step {step} of {n_steps} done")
    return {"steps": n_steps}


def builtin_registry() -> TaskRegistry:
    """A registry holding the built-in kinds."""
    registry = TaskRegistry()
    registry.register(steps, name="steps")
    return registry
