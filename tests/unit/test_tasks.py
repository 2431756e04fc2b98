"""Task kinds: registration, params validation and schema, JobContext, the built-in ``steps``."""

from __future__ import annotations

import json
import threading
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from jobdeck.errors import (
    InvalidParams,
    JobCancelled,
    JobInterrupted,
    JobTimedOut,
    LeaseLost,
    UnknownKind,
)
from jobdeck.tasks import JobContext, TaskKind, TaskRegistry, builtin_registry, steps


def add(a: int, b: int = 2) -> int:
    """Add two numbers."""
    return a + b


class Report(BaseModel):
    """Params of the ``render`` kind, as a pydantic model."""

    model_config = ConfigDict(extra="forbid")

    title: str
    pages: Annotated[int, Field(ge=1)] = 1


def render(spec: Report, ctx: JobContext) -> str:
    return f"{spec.title}:{spec.pages}"


def registered(function: Any, **options: Any) -> TaskKind:
    return TaskRegistry().register(function, **options)


def invalid(kind: TaskKind, params: Any) -> list[dict[str, Any]]:
    """The errors of InvalidParams raised by validating ``params``."""
    with pytest.raises(InvalidParams) as caught:
        kind.validate(params)
    assert caught.value.kind == kind.name
    json.dumps(caught.value.errors)  # errors go into problem+json answers as they are
    return caught.value.errors


# --- params from a signature ----------------------------------------------------------------


def test_signature_defaults_are_filled_in() -> None:
    """Validated params hold every parameter, defaults included."""
    kind = registered(add)
    assert kind.validate({"a": 1}) == {"a": 1, "b": 2}
    assert kind.validate({"a": 1, "b": 5}) == {"a": 1, "b": 5}


def test_extra_params_are_rejected() -> None:
    """A param the function does not take is rejected, and named."""
    errors = invalid(registered(add), {"a": 1, "c": 3})
    assert [(e["loc"], e["type"]) for e in errors] == [(["params", "c"], "extra_forbidden")]


def test_wrong_types_are_rejected_with_every_error_listed() -> None:
    """Every wrongly typed param is listed with its location and a message."""
    errors = invalid(registered(add), {"a": "one", "b": [2]})
    assert sorted(tuple(e["loc"]) for e in errors) == [("params", "a"), ("params", "b")]
    assert all(e["msg"] and e["type"] for e in errors)


def test_missing_required_param_is_rejected() -> None:
    """A required param that is missing is named."""
    errors = invalid(registered(add), {})
    assert [(e["loc"], e["type"]) for e in errors] == [(["params", "a"], "missing")]


@pytest.mark.parametrize("params", [[1, 2], "a=1", 3, None, True])
def test_params_that_are_not_an_object_are_rejected(params: Any) -> None:
    """Params must be a JSON object."""
    errors = invalid(registered(add), params)
    assert [e["loc"] for e in errors] == [["params"]]


def test_schema_of_a_signature() -> None:
    """The JSON schema lists the params with types, defaults and the required ones, forbids
    others, and leaves out the context parameter."""

    def scale(ctx: JobContext, factor: float, label: str = "x", times: int = 1) -> None:
        return None

    schema = registered(scale).params_schema()
    assert set(schema["properties"]) == {"factor", "label", "times"}
    assert schema["properties"]["factor"]["type"] == "number"
    assert schema["properties"]["label"] == {"default": "x", "title": "Label", "type": "string"}
    assert schema["properties"]["times"]["default"] == 1
    assert schema["required"] == ["factor"]
    assert schema["additionalProperties"] is False
    json.dumps(schema)


def test_arguments_call_the_function_with_params_and_context() -> None:
    """Stored params become keyword arguments; the context goes to its parameter."""

    def scale(context: JobContext, factor: float) -> None:
        return None

    kind = registered(scale)
    ctx = JobContext("j", "scale", 1)
    assert kind.context_param == "context"
    assert kind.arguments({"factor": 2.0}, ctx) == {"factor": 2.0, "context": ctx}
    assert registered(add).arguments({"a": 1, "b": 2}, ctx) == {"a": 1, "b": 2}


def test_unannotated_ctx_parameter_receives_the_context() -> None:
    """A parameter named ``ctx`` without annotation is the context, not a param."""

    def legacy(ctx, n: int = 1) -> None:  # type: ignore[no-untyped-def]
        return None

    kind = registered(legacy)
    assert kind.context_param == "ctx"
    assert kind.validate({}) == {"n": 1}


def test_async_functions_are_async_kinds() -> None:
    """is_async tells coroutine functions from plain ones."""

    async def later() -> None:
        return None

    assert registered(later).is_async
    assert not registered(add).is_async


@pytest.mark.parametrize(
    "source", ["def f(*items): pass", "def f(**extra): pass", "def f(a, /): pass"]
)
def test_parameters_that_cannot_be_keywords_are_refused(source: str) -> None:
    """*args, **kwargs and positional-only parameters cannot come from a JSON object."""
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(TypeError):
        registered(namespace["f"])


def test_unresolvable_annotations_are_refused() -> None:
    """An annotation naming something that does not exist is refused at registration."""

    def broken(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(TypeError):
        registered(broken)


# --- params as one pydantic model -----------------------------------------------------------


def test_single_pydantic_model_parameter() -> None:
    """A function taking one pydantic model gets its params validated by that model and
    receives an instance of it; the schema is the model's."""
    kind = registered(render)
    assert (kind.model_param, kind.context_param) == ("spec", "ctx")
    assert kind.params_model is Report
    assert kind.validate({"title": "t"}) == {"title": "t", "pages": 1}
    assert kind.params_schema() == Report.model_json_schema()

    ctx = JobContext("j", "render", 1)
    arguments = kind.arguments({"title": "t", "pages": 3}, ctx)
    assert arguments == {"spec": Report(title="t", pages=3), "ctx": ctx}
    assert render(**arguments) == "t:3"


def test_pydantic_model_constraints_are_enforced() -> None:
    """The model's own constraints and extra policy apply."""
    kind = registered(render)
    assert [e["loc"] for e in invalid(kind, {"title": "t", "pages": 0})] == [["params", "pages"]]
    assert [e["type"] for e in invalid(kind, {"title": "t", "x": 1})] == ["extra_forbidden"]


# --- the registry ---------------------------------------------------------------------------


def test_decorator_forms_register_kinds() -> None:
    """``@registry.task`` and ``@registry.task(...)`` register and return the function."""
    registry = TaskRegistry()

    @registry.task
    def plain() -> None:
        return None

    @registry.task(name="custom.name", queue="slow", max_attempts=5, timeout=2.5)
    def configured() -> None:
        return None

    assert plain.__name__ == "plain" and configured.__name__ == "configured"
    assert registry.names() == ["custom.name", "plain"]
    kind = registry.get("custom.name")
    assert (kind.queue, kind.max_attempts, kind.timeout) == ("slow", 5, 2.5)
    assert "custom.name" in registry and "configured" not in registry
    assert registered(add).description == "Add two numbers."


def test_duplicate_kind_names_are_rejected() -> None:
    """Another function under a taken name is refused; the same one again is fine."""
    registry = TaskRegistry()
    registry.register(add)
    registry.register(add)

    def other(a: int) -> int:
        return a

    with pytest.raises(ValueError, match="already registered"):
        registry.register(other, name="add")
    assert registry.get("add").function is add


@pytest.mark.parametrize("name", ["-add", ".add", "a b", "a/b", "é", "x" * 129, "add\n"])
def test_invalid_kind_names_are_rejected(name: str) -> None:
    """Kind names follow the id rule: 1..128 of [A-Za-z0-9._:-], starting alphanumeric."""
    with pytest.raises(ValueError):
        TaskRegistry().register(add, name=name)


def test_function_names_must_be_valid_kind_names() -> None:
    """Without a name, the function's own must be a valid kind name (a lambda's is not)."""
    with pytest.raises(ValueError):
        TaskRegistry().register(lambda: None)


def test_max_attempts_below_one_is_rejected() -> None:
    """A kind must allow at least one attempt."""
    with pytest.raises(ValueError):
        TaskRegistry().register(add, max_attempts=0)


def test_unknown_kind() -> None:
    """get raises UnknownKind naming the kind."""
    with pytest.raises(UnknownKind) as caught:
        TaskRegistry().get("nope")
    assert caught.value.kind == "nope"


def test_merge_keeps_existing_kinds() -> None:
    """merge adds the other registry's kinds without replacing any of ours."""
    ours, theirs = TaskRegistry(), TaskRegistry()
    ours.register(add)

    def add_other(a: int) -> int:
        return a

    theirs.register(add_other, name="add")
    theirs.register(render)
    ours.merge(theirs)
    assert ours.names() == ["add", "render"]
    assert ours.get("add").function is add


# --- JobContext -----------------------------------------------------------------------------


def test_progress_keeps_total_and_message_sticky() -> None:
    """Omitted total and message keep their last values; take_progress reports what is new."""
    ctx = JobContext("j", "k", 1)
    assert ctx.take_progress() is None
    ctx.progress(1, total=10, message="start")
    ctx.progress(2)
    assert ctx.take_progress() == (2, 10, "start")
    assert ctx.take_progress() is None
    ctx.progress(3, message="later")
    assert ctx.take_progress() == (3, 10, "later")
    ctx.progress(4, total=20)
    assert ctx.take_progress() == (4, 20, "later")


def test_logs_are_taken_in_order() -> None:
    """Log lines come out oldest first, with levels, as strings, once."""
    ctx = JobContext("j", "k", 1)
    ctx.log("one")
    ctx.log("two", level="warning")
    ctx.log(3)  # type: ignore[arg-type]
    taken = ctx.take_logs()
    assert [(level, message) for _, level, message in taken] == [
        ("info", "one"),
        ("warning", "two"),
        ("info", "3"),
    ]
    assert [at for at, _, _ in taken] == sorted(at for at, _, _ in taken)
    assert ctx.take_logs() == []


@pytest.mark.parametrize("reason", [JobCancelled, JobTimedOut, LeaseLost])
def test_context_raises_once_interrupted(reason: type[JobInterrupted]) -> None:
    """After interrupt, checkpoint, progress and sleep raise the reason; the first reason wins."""
    ctx = JobContext("j", "k", 1)
    ctx.checkpoint()
    assert not ctx.interrupted and not ctx.cancelled
    assert ctx.interrupt(reason) is True
    assert ctx.interrupt(JobCancelled if reason is not JobCancelled else LeaseLost) is False
    assert ctx.interrupt_reason is reason
    assert ctx.interrupted
    assert ctx.cancelled is (reason is JobCancelled)
    with pytest.raises(reason):
        ctx.checkpoint()
    with pytest.raises(reason):
        ctx.progress(1)
    with pytest.raises(reason):
        ctx.sleep(0)


def test_interruptions_escape_except_exception() -> None:
    """JobInterrupted is not an Exception: a task's ``except Exception`` does not swallow it."""
    ctx = JobContext("j", "k", 1)
    ctx.interrupt(JobCancelled)
    with pytest.raises(JobCancelled):
        try:
            ctx.checkpoint()
        except Exception:  # what careless task code does
            pytest.fail("JobCancelled was caught as an Exception")


def test_sleep_returns_early_when_interrupted() -> None:
    """A thread in ctx.sleep(30) wakes and raises as soon as the run is interrupted."""
    ctx = JobContext("j", "k", 1)
    outcome: list[BaseException | None] = []
    sleeping = threading.Event()

    def sleeper() -> None:
        sleeping.set()
        try:
            ctx.sleep(30)
            outcome.append(None)
        except JobInterrupted as exc:
            outcome.append(exc)

    thread = threading.Thread(target=sleeper)
    thread.start()
    assert sleeping.wait(5)
    ctx.interrupt(JobCancelled)
    thread.join(10)  # a bound for a hung test, not a measurement
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], JobCancelled)


def test_sleep_without_interrupt_returns_normally() -> None:
    """ctx.sleep returns None after the time passes when nothing interrupts it."""
    ctx = JobContext("j", "k", 1)
    assert ctx.sleep(0) is None
    assert ctx.sleep(0.001) is None


async def test_asleep_raises_when_interrupted() -> None:
    """ctx.asleep sleeps normally, and raises once the run is interrupted."""
    ctx = JobContext("j", "k", 1)
    await ctx.asleep(0)
    ctx.interrupt(JobTimedOut)
    with pytest.raises(JobTimedOut):
        await ctx.asleep(0)


# --- the built-in kind steps ----------------------------------------------------------------


def steps_kind() -> TaskKind:
    return builtin_registry().get("steps")


def test_steps_defaults() -> None:
    """steps takes n_steps=10 and step_seconds=1.0 by default; the context is no param."""
    kind = steps_kind()
    assert kind.validate({}) == {"n_steps": 10, "step_seconds": 1.0}
    assert kind.is_async
    assert set(kind.params_schema()["properties"]) == {"n_steps", "step_seconds"}


@pytest.mark.parametrize(
    "params",
    [
        {"n_steps": 0},
        {"n_steps": 1_000_000},
        {"step_seconds": 0},
        {"step_seconds": 3600},
        {"n_steps": 5, "step_seconds": 0.25},
    ],
)
def test_steps_accepts_params_within_limits(params: dict[str, Any]) -> None:
    """0 <= n_steps <= 1,000,000 and 0 <= step_seconds <= 3600 are accepted."""
    validated = steps_kind().validate(params)
    assert validated == {"n_steps": 10, "step_seconds": 1.0} | params


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n_steps": -1}, "n_steps"),
        ({"n_steps": 1_000_001}, "n_steps"),
        ({"n_steps": "many"}, "n_steps"),
        ({"n_steps": 2.5}, "n_steps"),
        ({"step_seconds": -0.1}, "step_seconds"),
        ({"step_seconds": 3600.5}, "step_seconds"),
        ({"step_seconds": "slow"}, "step_seconds"),
        ({"steps": 3}, "steps"),
    ],
)
def test_steps_rejects_params_beyond_limits(params: dict[str, Any], field: str) -> None:
    """Values beyond the limits, of the wrong type, or unknown fields are rejected."""
    errors = invalid(steps_kind(), params)
    assert [e["loc"] for e in errors] == [["params", field]]


def test_steps_schema_shows_the_limits() -> None:
    """The schema tells clients the limits of steps' params."""
    properties = steps_kind().params_schema()["properties"]
    assert (properties["n_steps"]["minimum"], properties["n_steps"]["maximum"]) == (0, 1_000_000)
    assert (properties["step_seconds"]["minimum"], properties["step_seconds"]["maximum"]) == (
        0,
        3600,
    )


async def test_steps_reports_progress_and_logs() -> None:
    """Called directly, steps reports current/total per step, logs a line each, and returns."""
    ctx = JobContext("j", "steps", 1)
    assert await steps(ctx, n_steps=3, step_seconds=0) == {"steps": 3}
    assert ctx.take_progress() == (3, 3, "step 3 of 3")
    assert len(ctx.take_logs()) == 3


async def test_steps_stops_when_interrupted() -> None:
    """An interrupted steps run raises at its next step instead of going on."""
    ctx = JobContext("j", "steps", 1)
    ctx.interrupt(JobCancelled)
    with pytest.raises(JobCancelled):
        await steps(ctx, n_steps=3, step_seconds=0)
    assert ctx.take_logs() == []
