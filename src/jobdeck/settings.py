"""Settings, read from ``JOBDECK_*`` environment variables (DESIGN §6)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Settings:
    """Every knob of jobdeck, with the defaults of DESIGN §6."""

    database_url: str = "sqlite:///jobdeck.db"
    pg_schema: str = "jobdeck"
    tasks: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    embedded_worker: bool = True
    concurrency: int = 10
    queues: tuple[str, ...] = ("default",)
    lease_seconds: float = 30.0
    poll_seconds: float = 0.05
    cancel_check_seconds: float = 0.2
    notify: bool = True
    pg_prepare: bool = True
    backoff_base_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    shutdown_grace_seconds: float = 30.0
    retention_seconds: float = 604_800.0
    api_keys: tuple[str, ...] = ()
    max_body_bytes: int = 8_388_608
    max_params_bytes: int = 1_048_576
    max_log_lines: int = 10_000
    max_streams_per_client: int = 100
    sqlite_synchronous: str = "FULL"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``JOBDECK_<NAME>`` variables; ``overrides`` win over both."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"JOBDECK_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _convert(f.name, raw, type(getattr(cls(), f.name)))
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.check()
        return settings

    def with_(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        settings = replace(self, **changes)
        settings.check()
        return settings

    def check(self) -> None:
        """Raise ValueError on settings that cannot work."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"JOBDECK_{f.name.upper()} must be a finite number >= 0")
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"JOBDECK_{f.name.upper()} must be >= 0")
        for name in ("lease_seconds", "poll_seconds", "cancel_check_seconds", "concurrency"):
            if getattr(self, name) <= 0:
                raise ValueError(f"JOBDECK_{name.upper()} must be positive")
        if self.port > 65_535:
            raise ValueError("JOBDECK_PORT must be a port number (0-65535)")
        if not self.queues:
            raise ValueError("JOBDECK_QUEUES names no queue")
        if self.sqlite_synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("JOBDECK_SQLITE_SYNCHRONOUS must be OFF, NORMAL, FULL or EXTRA")


def _convert(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return _flag(raw)
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is tuple:
            return _split(raw)
        return raw
    except ValueError as exc:
        raise ValueError(f"JOBDECK_{name.upper()}: {exc}") from None
