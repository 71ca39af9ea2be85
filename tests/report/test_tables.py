"""The tables the report and the site share: built once, shown by both."""

from __future__ import annotations

import math

import pytest
import torch

from ioi.head import Head
from ioi.report import tables as T
from ioi.report.document import Table
from ioi.report.markdown import table_markdown


def _stats(ld: float) -> dict:
    return {"logit_diff": ld, "io_over_s": 0.5, "io_top1": 0.25, "io_prob": 0.125}


PERF = {
    "overall": _stats(3.0),
    "BABA": _stats(2.0),
    "ABBA": _stats(4.0),
    "per_template": [
        {"template": "B", "template_idx": 1, "n": 3, **_stats(5.0)},
        {"template": "A", "template_idx": 0, "n": 2, **_stats(1.0)},
    ],
}


def test_score_tables_hold_each_family_and_template_in_order():
    scores = T.score_table(PERF)
    assert scores.columns == T.SCORE_COLUMNS
    assert [row[:2] for row in scores.rows] == [("all", 3.0), ("BABA", 2.0), ("ABBA", 4.0)]
    no_families = T.score_table({"overall": _stats(3.0)})
    assert [row[0] for row in no_families.rows] == ["all"]
    templates = T.template_table(PERF)
    assert [row[:3] for row in templates.rows] == [("A", 2, 1.0), ("B", 3, 5.0)]


def test_top_heads_rank_by_magnitude_layer_major_among_ties():
    values = torch.tensor([[0.1, -3.0, 2.0], [2.0, 0.0, -0.5]])
    assert T.top_heads(values, 3) == [(Head(0, 1), -3.0), (Head(0, 2), 2.0), (Head(1, 0), 2.0)]
    table = T.heads_table(values, "DLA", "Top", k=2)
    assert table.rows == (("0.1", -3.0), ("0.2", 2.0)) and table.columns == ("head", "DLA")


def test_to_frame_keeps_numbers_and_writes_the_rest_as_text():
    table = Table.build("t", ("head", "value", "ok"), [(Head(9, 9), float("nan"), True)])
    frame = table.to_frame()
    assert list(frame.columns) == ["head", "value", "ok"]
    assert frame.iloc[0, 0] == "9.9" and math.isnan(frame.iloc[0, 1]) and bool(frame.iloc[0, 2])
    assert "| 9.9 | - | True |" in table_markdown(table)  # the report prints the same cells


def test_heads_table_with_an_estimate_adds_each_heads_se_and_interval():
    from ioi.statistics import bootstrap

    per_prompt = torch.tensor(
        [[[0.0, 1.0, 5.0], [1.0, 1.0, 1.0]], [[-4.0, -2.0, -3.0], [0.5, 0.0, 1.0]]]
    )
    estimate = bootstrap(per_prompt, seed=0)  # [layer 2, head 2]
    table = T.heads_table(estimate.mean, "effect", "Top", k=2, estimate=estimate)
    assert table.columns == ("head", "effect", "SE", "95% low", "95% high")
    assert [row[0] for row in table.rows] == ["1.0", "0.0"]  # |-3| then |2|
    se, low, high = table.rows[0][2:]
    assert (se, low, high) == (
        float(estimate.se[1, 0]),
        float(estimate.low[1, 0]),
        float(estimate.high[1, 0]),
    )
    assert se == pytest.approx(float(per_prompt[1, 0].std() / 3**0.5)) and low < -3.0 < high
    assert T.interval_cells(estimate, (0, 1)) == (0.0, 1.0, 1.0)  # a constant head: a point


def test_estimates_table_and_json_keep_the_unrounded_cells():
    from ioi.statistics import bootstrap

    est = bootstrap(torch.tensor([1.0, 2.0, 4.0]), seed=0)
    table = T.estimates_table("F", "value", [("F(M)", est)])
    assert table.columns == ("value", "mean", "SE", "95% low", "95% high")
    as_json = table.to_json()
    assert as_json["rows"] == [["F(M)", float(est.mean), *T.interval_cells(est)]]
    assert as_json["columns"] == list(table.columns) and as_json["title"] == "F"
    assert T.method_numbers(est)["describe"] == est.describe() and "n=3 prompts" in est.describe()
