"""The tables the report and the site both show, each built once from the analysis results.

The report's sections put these `Table`s in their `Section`; the site shows the same objects
with `Table.to_frame`. A table is never assembled twice, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ioi.head import Head
from ioi.report.document import Table
from ioi.statistics import Estimate

SCORE_COLUMNS = ("prompts", "logit diff", "IO > S", "IO top-1", "P(IO)")
FAMILIES = ("BABA", "ABBA")


def _scores(stats: dict) -> tuple[float, float, float, float]:
    return (stats["logit_diff"], stats["io_over_s"], stats["io_top1"], stats["io_prob"])


def score_table(performance: dict) -> Table:
    """Logit difference, accuracy and P(IO), overall and per family (``Setup.performance``)."""
    rows = [("all", *_scores(performance["overall"]))]
    rows += [(f, *_scores(performance[f])) for f in FAMILIES if f in performance]
    return Table.build("Overall and per family", SCORE_COLUMNS, rows)


def template_table(performance: dict) -> Table:
    """The same scores per template, in template order."""
    templates = sorted(performance["per_template"], key=lambda t: t["template_idx"])
    return Table.build(
        "Per template",
        ("template", "n", *SCORE_COLUMNS[1:]),
        [(t["template"], t["n"], *_scores(t)) for t in templates],
    )


def interval_columns(level: float) -> tuple[str, ...]:
    """The columns every interval adds to a table: standard error and the interval's bounds."""
    return ("SE", f"{level:.0%} low", f"{level:.0%} high")


def interval_cells(estimate: Estimate, index: int | tuple = ()) -> tuple[float, float, float]:
    """SE, low and high of one cell of an `Estimate` (``()`` for a scalar estimate)."""
    return tuple(float(t[index]) for t in (estimate.se, estimate.low, estimate.high))


def interval_numbers(estimate: Estimate) -> dict[str, object]:
    """An estimate for ``results.json``: mean, SE, low and high (shaped like its grid)."""
    return {"mean": estimate.mean, "se": estimate.se, "low": estimate.low, "high": estimate.high}


def interval_sentence(method: dict, whose: str) -> str:
    """The one sentence per section that states N and how the intervals were made, from
    `method_numbers`."""
    return (
        f"{whose} intervals are {method['describe']}: the statistic is recomputed on prompts "
        "drawn with replacement, and the bounds are percentiles of those values. SE is the "
        "standard error over prompts (of a mean: its sample standard error; of a ratio or an "
        "absolute value: the spread of the resampled values)."
    )


def method_numbers(estimate: Estimate) -> dict[str, object]:
    """How an estimate's intervals were made, for ``results.json`` (stated once per section)."""
    return {
        "n": estimate.n,
        "level": estimate.level,
        "method": estimate.method,
        "resamples": estimate.resamples,
        "seed": estimate.seed,
        "describe": estimate.describe(),
    }


def estimates_table(
    title: str, label: str, rows: Sequence[tuple[str, Estimate]], value: str = "mean"
) -> Table:
    """One scalar `Estimate` per row: its label, mean, SE and interval."""
    level = rows[0][1].level if rows else 0.95
    return Table.build(
        title,
        (label, value, *interval_columns(level)),
        [(name, float(est.mean), *interval_cells(est)) for name, est in rows],
    )


def top_heads(values: torch.Tensor, k: int) -> list[tuple[Head, float]]:
    """The ``k`` heads of a [layer, head] grid with the largest |value| (layer-major among ties)."""
    n_layers, n_heads = values.shape
    heads = [Head(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    return sorted(((h, float(values[h])) for h in heads), key=lambda kv: -abs(kv[1]))[:k]


def heads_table(
    values: torch.Tensor,
    column: str,
    title: str,
    k: int = 8,
    estimate: Estimate | None = None,
) -> Table:
    """The ``k`` heads with the largest |value| of a [layer, head] grid, largest first.

    With an ``estimate`` of the same grid, each row also has its SE and interval.
    """
    top = top_heads(values, k)
    if estimate is None:
        return Table.build(title, ("head", column), [(str(h), v) for h, v in top])
    return Table.build(
        title,
        ("head", column, *interval_columns(estimate.level)),
        [(str(h), v, *interval_cells(estimate, tuple(h))) for h, v in top],
    )
