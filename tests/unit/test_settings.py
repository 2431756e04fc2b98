"""Settings from JOBDECK_* environment variables (DESIGN §6)."""

from __future__ import annotations

import dataclasses

import pytest

from jobdeck.settings import Settings

SECONDS_FIELDS = sorted(f.name for f in dataclasses.fields(Settings) if f.name.endswith("_seconds"))


def env_name(field: str) -> str:
    return f"JOBDECK_{field.upper()}"


def test_defaults_follow_the_design() -> None:
    """With no variables set, the settings are DESIGN §6's defaults."""
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url == "sqlite:///jobdeck.db"
    assert (settings.host, settings.port, settings.embedded_worker) == ("127.0.0.1", 8000, True)
    assert (settings.concurrency, settings.queues) == (10, ("default",))
    assert (settings.lease_seconds, settings.poll_seconds) == (30.0, 0.05)
    assert (settings.cancel_check_seconds, settings.notify) == (0.2, True)
    assert (settings.backoff_base_seconds, settings.backoff_max_seconds) == (1.0, 300.0)
    assert (settings.shutdown_grace_seconds, settings.retention_seconds) == (30.0, 604_800.0)
    assert (settings.api_keys, settings.tasks, settings.pg_schema) == ((), (), "jobdeck")
    assert (settings.max_body_bytes, settings.max_params_bytes) == (8_388_608, 1_048_576)
    assert (settings.max_log_lines, settings.max_streams_per_client) == (10_000, 100)


def test_every_seconds_setting_is_listed() -> None:
    """The *_SECONDS settings of DESIGN §6 are all there."""
    assert SECONDS_FIELDS == [
        "backoff_base_seconds",
        "backoff_max_seconds",
        "cancel_check_seconds",
        "lease_seconds",
        "poll_seconds",
        "retention_seconds",
        "shutdown_grace_seconds",
    ]


@pytest.mark.parametrize("field", SECONDS_FIELDS)
@pytest.mark.parametrize(
    ("raw", "value"), [("2.5", 2.5), ("0.125", 0.125), ("7", 7.0), ("1e1", 10.0)]
)
def test_every_seconds_setting_takes_a_float(field: str, raw: str, value: float) -> None:
    """Each JOBDECK_*_SECONDS parses as a float (fractions, integers, exponents)."""
    settings = Settings.from_env({env_name(field): raw})
    parsed = getattr(settings, field)
    assert isinstance(parsed, float)
    assert parsed == value


def test_integers_and_strings() -> None:
    """Integer settings parse as ints; string settings are taken as given."""
    settings = Settings.from_env(
        {
            "JOBDECK_CONCURRENCY": "8",
            "JOBDECK_PORT": "9000",
            "JOBDECK_MAX_LOG_LINES": "50",
            "JOBDECK_DATABASE_URL": "postgresql://u@db:5432/jobs",
            "JOBDECK_HOST": "0.0.0.0",
            "JOBDECK_PG_SCHEMA": "deck",
        }
    )
    assert (settings.concurrency, settings.port, settings.max_log_lines) == (8, 9000, 50)
    assert settings.database_url == "postgresql://u@db:5432/jobs"
    assert (settings.host, settings.pg_schema) == ("0.0.0.0", "deck")


def test_lists_are_comma_separated() -> None:
    """List settings split on commas, trimmed, empty entries dropped."""
    settings = Settings.from_env(
        {
            "JOBDECK_QUEUES": " default, emails ,,reports ",
            "JOBDECK_TASKS": "myapp.tasks,other.tasks",
            "JOBDECK_API_KEYS": "secret, reader:read",
        }
    )
    assert settings.queues == ("default", "emails", "reports")
    assert settings.tasks == ("myapp.tasks", "other.tasks")
    assert settings.api_keys == ("secret", "reader:read")
    assert Settings.from_env({"JOBDECK_API_KEYS": ""}).api_keys == ()


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", "yes", "on", " On "])
def test_true_booleans(raw: str) -> None:
    """1, true, yes, on (any case, trimmed) are true."""
    settings = Settings.from_env({"JOBDECK_NOTIFY": raw, "JOBDECK_EMBEDDED_WORKER": raw})
    assert settings.notify is True and settings.embedded_worker is True


@pytest.mark.parametrize("raw", ["0", "false", "False", "no", "off", ""])
def test_false_booleans(raw: str) -> None:
    """0, false, no, off and empty are false."""
    settings = Settings.from_env({"JOBDECK_NOTIFY": raw, "JOBDECK_EMBEDDED_WORKER": raw})
    assert settings.notify is False and settings.embedded_worker is False


def test_overrides_win_and_none_overrides_are_ignored() -> None:
    """Keyword overrides beat the environment; an override of None changes nothing."""
    env = {"JOBDECK_CONCURRENCY": "8", "JOBDECK_PORT": "9000"}
    settings = Settings.from_env(env, concurrency=2, port=None)
    assert (settings.concurrency, settings.port) == (2, 9000)


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a mapping, from_env reads os.environ."""
    monkeypatch.setenv("JOBDECK_LEASE_SECONDS", "12.5")
    assert Settings.from_env().lease_seconds == 12.5


def test_with_changes_a_copy_and_checks_it() -> None:
    """with_ returns a changed copy and refuses impossible values."""
    base = Settings()
    changed = base.with_(concurrency=3)
    assert (base.concurrency, changed.concurrency) == (10, 3)
    with pytest.raises(ValueError):
        base.with_(concurrency=0)


NONSENSE = [
    ("JOBDECK_CONCURRENCY", "ten"),
    ("JOBDECK_CONCURRENCY", "0"),
    ("JOBDECK_CONCURRENCY", "-2"),
    ("JOBDECK_CONCURRENCY", "2.5"),
    ("JOBDECK_PORT", "http"),
    ("JOBDECK_PORT", "70000"),
    ("JOBDECK_PORT", "-1"),
    ("JOBDECK_MAX_LOG_LINES", "many"),
    ("JOBDECK_MAX_LOG_LINES", "-1"),
    ("JOBDECK_LEASE_SECONDS", "soon"),
    ("JOBDECK_LEASE_SECONDS", "0"),
    ("JOBDECK_LEASE_SECONDS", "-30"),
    ("JOBDECK_LEASE_SECONDS", "nan"),
    ("JOBDECK_LEASE_SECONDS", "inf"),
    ("JOBDECK_POLL_SECONDS", "0"),
    ("JOBDECK_POLL_SECONDS", "nan"),
    ("JOBDECK_CANCEL_CHECK_SECONDS", "-0.1"),
    ("JOBDECK_CANCEL_CHECK_SECONDS", "nan"),
    ("JOBDECK_BACKOFF_BASE_SECONDS", "-1"),
    ("JOBDECK_BACKOFF_MAX_SECONDS", "nan"),
    ("JOBDECK_SHUTDOWN_GRACE_SECONDS", "-5"),
    ("JOBDECK_RETENTION_SECONDS", "-1"),
    ("JOBDECK_RETENTION_SECONDS", "a week"),
    ("JOBDECK_QUEUES", ","),
    ("JOBDECK_QUEUES", "  "),
    ("JOBDECK_NOTIFY", "maybe"),
    ("JOBDECK_EMBEDDED_WORKER", "2"),
    ("JOBDECK_SQLITE_SYNCHRONOUS", "sometimes"),
]


@pytest.mark.parametrize(("name", "raw"), NONSENSE, ids=[f"{n}={r}" for n, r in NONSENSE])
def test_nonsense_is_rejected(name: str, raw: str) -> None:
    """A value that is not of the setting's type, or cannot work, raises ValueError
    naming the variable."""
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: raw})
