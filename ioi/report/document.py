"""What a report section holds: text, tables, figures and the numbers behind them.

A `Section` is plain data. The section builders (`ioi.report.sections`) fill it from the
library; the writers (`ioi.report.html`, `ioi.report.markdown`) and ``results.json`` read it.
A section that cannot be computed (a library piece missing, a model without the needed
weights) says so with ``status="unavailable"`` and a ``reason``; it never shows made-up numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
import plotly.graph_objects as go

Status = Literal["filled", "unavailable", "not_applicable"]


@dataclass(frozen=True)
class Table:
    """A small table: column names and rows of already-chosen values (numbers or text)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def __post_init__(self) -> None:
        bad = [i for i, row in enumerate(self.rows) if len(row) != len(self.columns)]
        if bad:
            raise ValueError(
                f"table {self.title!r}: rows {bad} do not have {len(self.columns)} cells"
            )

    @classmethod
    def build(cls, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
        """A table from any sequences (stored as tuples)."""
        return cls(title, tuple(columns), tuple(tuple(row) for row in rows))

    def to_json(self) -> dict[str, Any]:
        """The table for ``results.json``: title, columns and rows, unrounded."""
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": jsonable([[_cell(v) for v in row] for row in self.rows]),
        }

    def to_frame(self) -> pd.DataFrame:
        """The table as a DataFrame (for the site): numbers kept, anything else as text."""
        rows = [[_cell(v) for v in row] for row in self.rows]
        return pd.DataFrame(rows, columns=list(self.columns))


def _cell(value: Any) -> Any:
    """A table cell as data: numbers kept, anything else as text."""
    return value if isinstance(value, bool | int | float) else str(value)


@dataclass(frozen=True)
class Figure:
    """A plotly figure with a file-safe key (for its PNG) and a caption."""

    key: str
    fig: go.Figure
    caption: str = ""


@dataclass
class Section:
    """One part of the report.

    Attributes:
        key: identifier, used for anchors, ``results.json`` and file names.
        title: heading.
        status: ``"filled"``, ``"unavailable"`` (could not be computed) or ``"not_applicable"``
            (does not apply to this model); ``reason`` says why when not filled.
        text: paragraphs of markdown (``**bold**``, ``*italic*`` and ``code`` only).
        tables, figures: what the section shows.
        numbers: every number the section reports, JSON-ready, for ``results.json``.
    """

    key: str
    title: str
    status: Status = "filled"
    reason: str = ""
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @classmethod
    def unavailable(cls, key: str, title: str, reason: str) -> Section:
        """A section that could not be computed, and why."""
        return cls(key, title, status="unavailable", reason=reason)

    @classmethod
    def not_applicable(cls, key: str, title: str, reason: str) -> Section:
        """A section that does not apply to this model, and why."""
        return cls(key, title, status="not_applicable", reason=reason)

    def to_json(self) -> dict[str, Any]:
        """The section's status, numbers and tables, for ``results.json``."""
        out: dict[str, Any] = {"title": self.title, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        out["seconds"] = round(self.seconds, 2)
        out["numbers"] = jsonable(self.numbers)
        out["tables"] = [table.to_json() for table in self.tables]
        return out


def jsonable(value: Any) -> Any:
    """Turn tensors, tuples and non-finite floats into JSON-safe values (NaN becomes None)."""
    if hasattr(value, "tolist") and callable(value.tolist):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def format_cell(value: Any) -> str:
    """How a table cell is printed: floats with 3 decimals, everything else as text."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.3f}"
    return str(value)
