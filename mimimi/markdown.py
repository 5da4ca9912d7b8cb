"""Markdown tables: the one helper every report, summary and benchmark page builds its tables with.

>>> print(table(["type", "AUC"], [["fan", "87.50"], ["valve", None]]))
| type | AUC |
|---|---|
| fan | 87.50 |
| valve | — |
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

EMPTY = "—"  # a cell with no value


def cell(value: Any) -> str:
    """A cell's text: None and NaN as ``EMPTY``; ``|`` escaped so that it does not split the cell."""
    if value is None or (isinstance(value, float) and value != value):
        return EMPTY
    return str(value).replace("|", "\\|")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; every row must have one cell per header."""
    lines = ["| " + " | ".join(map(cell, headers)) + " |", "|" + "---|" * len(headers)]
    for i, row in enumerate(rows):
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"row {i} has {len(row)} cells for {len(headers)} columns: {row}")
        lines.append("| " + " | ".join(map(cell, row)) + " |")
    return "\n".join(lines)
