"""Retention arithmetic (the purge cutoff and interval) and the ``jobdeck purge`` arguments."""

from __future__ import annotations

import argparse

import pytest

from jobdeck.cli import build_parser, positive_int, seconds
from jobdeck.model import MICROS
from jobdeck.retention import PURGE_BATCH, PURGE_EVERY_SECONDS, purge_cutoff, purge_interval
from jobdeck.settings import Settings

NOW = 1_790_000_000 * MICROS  # late 2026, in microseconds
INT64_MAX = 2**63 - 1


def test_the_cutoff_is_now_minus_the_retention() -> None:
    """A week's retention keeps jobs finished in the last week."""
    assert purge_cutoff(NOW, 604_800) == NOW - 604_800 * MICROS
    assert purge_cutoff(NOW, 0.5) == NOW - 500_000


def test_a_retention_of_zero_purges_every_finished_job() -> None:
    """Zero (or less, from code that skipped the settings check) gives a cutoff of now."""
    assert purge_cutoff(NOW, 0) == NOW
    assert purge_cutoff(NOW, -5) == NOW


@pytest.mark.parametrize(
    "retention", [NOW / MICROS, NOW / MICROS + 1, 1e18, 1e300, float("inf"), float("nan")]
)
def test_a_retention_beyond_the_epoch_purges_nothing_and_fits_64_bits(retention: float) -> None:
    """A retention reaching back before 1970 (or not a number) gives a cutoff of 0: nothing
    finished before it, and a value every database integer holds."""
    cutoff = purge_cutoff(NOW, retention)
    assert cutoff == 0
    assert -INT64_MAX - 1 <= cutoff <= INT64_MAX


def test_the_cutoff_always_fits_64_bits() -> None:
    """Whatever the retention, the cutoff lies between 0 and now."""
    for exponent in range(-6, 30):
        cutoff = purge_cutoff(NOW, 10.0**exponent)
        assert 0 <= cutoff <= NOW, exponent


@pytest.mark.parametrize(
    ("retention", "interval"),
    [
        (604_800, PURGE_EVERY_SECONDS),
        (120, 60.0),
        (100, 50.0),
        (1, 0.5),
        (0, 0.0),
        (1e18, PURGE_EVERY_SECONDS),
    ],
)
def test_workers_purge_every_minute_or_every_half_retention(
    retention: float, interval: float
) -> None:
    """The interval is min(60 s, retention / 2): a short retention is honoured."""
    assert PURGE_EVERY_SECONDS == 60.0
    assert purge_interval(retention) == interval


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("86400", 86_400.0), ("1.5e3", 1500.0)])
def test_seconds_take_non_negative_finite_numbers(text: str, value: float) -> None:
    assert seconds(text) == value


@pytest.mark.parametrize("text", ["-1", "soon", "", "nan", "inf", "-inf", "1e400"])
def test_seconds_refuse_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        seconds(text)


def test_batch_sizes_are_whole_numbers_from_1() -> None:
    assert positive_int("1") == 1
    assert positive_int("500") == 500
    for text in ("0", "-3", "2.5", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(text)


def test_purge_arguments() -> None:
    """``purge`` alone leaves the age to the settings and uses batches of PURGE_BATCH."""
    parser = build_parser()
    plain = parser.parse_args(["purge"])
    assert (plain.older_than, plain.batch_size) == (None, PURGE_BATCH)
    given = parser.parse_args(["purge", "--older-than", "3600", "--batch-size", "50"])
    assert (given.older_than, given.batch_size) == (3600.0, 50)


@pytest.mark.parametrize("raw", ["0", "0.5", "1e18"])
def test_retention_setting_takes_zero_short_and_huge_values(raw: str) -> None:
    """JOBDECK_RETENTION_SECONDS accepts 0 (purge every finished job) and huge values."""
    assert Settings.from_env({"JOBDECK_RETENTION_SECONDS": raw}).retention_seconds == float(raw)


@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "-inf", "a week"])
def test_retention_setting_refuses_negative_and_non_finite_values(raw: str) -> None:
    with pytest.raises(ValueError, match="JOBDECK_RETENTION_SECONDS"):
        Settings.from_env({"JOBDECK_RETENTION_SECONDS": raw})
