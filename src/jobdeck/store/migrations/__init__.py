"""Numbered migration scripts, one folder per dialect: ``NNNN_name.sql``."""

from __future__ import annotations

from importlib import resources


def load_migrations(dialect: str) -> dict[int, str]:
    """The scripts of ``dialect`` by number."""
    folder = resources.files(__package__) / dialect
    return {
        int(entry.name.split("_", 1)[0]): entry.read_text(encoding="utf-8")
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    }
