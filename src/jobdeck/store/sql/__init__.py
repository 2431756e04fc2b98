"""The SQL of the store adapters: one file per dialect of named, described statements.

A statement starts at a line ``-- name: <name>``; the comment lines after it describe it.
Both dialects use the same names for the same operations. A statement named ``part_<x>`` is
a piece of others, which name it as ``{part_<x>}``; it is not a statement of its own.
"""

from __future__ import annotations

import string
from functools import cache
from importlib import resources
from typing import Any

NAME_MARK = "-- name:"
PART_PREFIX = "part_"


@cache
def _statements(dialect: str) -> dict[str, str]:
    text = (resources.files(__package__) / f"{dialect}.sql").read_text(encoding="utf-8")
    statements: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(NAME_MARK):
            current = statements.setdefault(line[len(NAME_MARK) :].strip(), [])
        elif current is not None and (current or not line.startswith("--")):
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in statements.items()}


class _KeepMissing(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def load_queries(dialect: str, **values: Any) -> dict[str, str]:
    """The statements of ``dialect`` with the given placeholders filled in; placeholders
    not given stay as they are, for the adapter to fill at run time."""
    statements = _statements(dialect)
    formatter = string.Formatter()
    parts = _KeepMissing({n: t for n, t in statements.items() if n.startswith(PART_PREFIX)})
    fill = _KeepMissing(values)
    return {
        name: formatter.vformat(formatter.vformat(text, (), parts), (), fill)
        for name, text in statements.items()
        if not name.startswith(PART_PREFIX)
    }
