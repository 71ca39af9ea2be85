"""The tables the report and the site both show, each built once from the analysis results.

The report's sections put these `Table`s in their `Section`; the site shows the same objects
with `Table.to_frame`. A table is never assembled twice, so the two cannot disagree.
"""

from __future__ import annotations

import torch

from ioi.head import Head
from ioi.report.document import Table

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


def top_heads(values: torch.Tensor, k: int) -> list[tuple[Head, float]]:
    """The ``k`` heads of a [layer, head] grid with the largest |value| (layer-major among ties)."""
    n_layers, n_heads = values.shape
    heads = [Head(layer, h) for layer in range(n_layers) for h in range(n_heads)]
    return sorted(((h, float(values[h])) for h in heads), key=lambda kv: -abs(kv[1]))[:k]


def heads_table(values: torch.Tensor, column: str, title: str, k: int = 8) -> Table:
    """The ``k`` heads with the largest |value| of a [layer, head] grid, largest first."""
    return Table.build(title, ("head", column), [(str(h), v) for h, v in top_heads(values, k)])
