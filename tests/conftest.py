"""Fixtures every test package may use: job specs and polling with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from jobdeck.model import JobSpec, new_job_id

T = TypeVar("T")


def build_spec(**overrides: Any) -> JobSpec:
    """A valid spec of kind ``steps`` with a fresh time-ordered id; keywords override fields."""
    values: dict[str, Any] = {"kind": "steps", "params": {"n_steps": 1}, "id": new_job_id()}
    values.update(overrides)
    return JobSpec(**values)


@pytest.fixture
def make_spec() -> Callable[..., JobSpec]:
    """Factory of job specs: ``make_spec(queue="q1", priority=5)``."""
    return build_spec


async def poll_until(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> T:
    """Await ``check()`` until it returns something truthy and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} not reached within {timeout} s (last value: {value!r})")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """``await eventually(check, timeout=..., what=...)``: poll an async check with a deadline."""
    return poll_until
