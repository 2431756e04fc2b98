"""The SQL files of the store adapters: named, described, the same names on both sides."""

from __future__ import annotations

from importlib import resources

import pytest

from jobdeck.store.sql import NAME_MARK, load_queries

DIALECTS = ("sqlite", "postgres")
#: Operations every adapter performs with a statement of that name.
SHARED = {
    "select_job",
    "select_jobs",
    "insert_jobs",
    "claim",
    "renew_leases",
    "seen_worker",
    "save_progress",
    "finish",
    "hand_back",
    "rescue_expired",
    "cancel_queued",
    "cancel_running",
    "retry",
    "purge",
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_shared_operation_has_a_statement(dialect: str) -> None:
    """Both dialect files name the shared operations alike."""
    assert set(load_queries(dialect)) >= SHARED


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_statement_is_described(dialect: str) -> None:
    """Each ``-- name:`` line is followed by a comment saying what the statement does."""
    lines = (resources.files("jobdeck.store.sql") / f"{dialect}.sql").read_text().splitlines()
    for index, line in enumerate(lines):
        if line.startswith(NAME_MARK):
            assert lines[index + 1].startswith("-- "), f"{dialect}: {line} has no description"


def test_placeholders_are_filled_and_others_kept() -> None:
    """Given placeholders are filled; run-time ones (lists of marks) stay for the adapter."""
    queries = load_queries("sqlite", columns="id", terminal="('x')")
    assert "{columns}" not in queries["select_job"]
    assert "{named_queues}" in queries["claim"]
    assert queries["select_job"] == "SELECT id FROM jobs WHERE id = ?"
