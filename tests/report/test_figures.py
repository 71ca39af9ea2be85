"""Figures drawn from analysis results (no model needed: the results are built by hand)."""

from __future__ import annotations

import pytest
import torch

from ioi.heads import NameMoverScatter
from ioi.report.figures import name_mover_scatter_figure


def test_name_mover_scatter_figure_draws_io_and_s_points():
    data = NameMoverScatter(
        layer=9,
        head=6,
        attn_to_io=torch.tensor([0.75, 0.5]),
        attn_to_s=torch.tensor([0.1, 0.2]),
        proj_io=torch.tensor([3.0, 2.0]),
        proj_s=torch.tensor([-1.0, 0.5]),
    )
    fig = name_mover_scatter_figure(data)
    assert [t.name for t in fig.data] == ["IO", "S"]
    assert list(fig.data[0].x) == [0.75, 0.5] and list(fig.data[1].y) == [-1.0, 0.5]
    assert fig.layout.title.text.startswith("Head 9.6:")


def test_feature_circuit_graph_places_nodes_by_position_and_hook():
    from ioi.features import FeatureNode
    from ioi.report.figures import feature_circuit_graph

    hooks = ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    up, err = FeatureNode(hooks[0], 2, 5), FeatureNode(hooks[0], 2, None)
    down = FeatureNode(hooks[1], 4, 1)
    fig = feature_circuit_graph(
        [up, err, down], [0.5, -0.25, 1.0], {(up, down): 0.3}, hooks, [f"p{i}" for i in range(5)]
    )
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"edges", "positive IE", "negative IE"}
    assert list(traces["edges"].x) == [2, 4, None] and list(traces["edges"].y) == [0, 1, None]
    positive = traces["positive IE"]
    assert list(positive.x) == [2, 4] and list(positive.y) == [0, 1]
    assert list(positive.text) == ["f5", "f1"] and positive.marker.size[1] == 30  # the largest
    # the error node shares f5's place, so it is stacked just above it
    assert list(traces["negative IE"].text) == ["err"] and traces["negative IE"].y[0] > 0
    assert list(fig.layout.xaxis.ticktext) == ["p0", "p1", "p2", "p3", "p4"]


def test_faithfulness_bars_span_each_interval():
    from ioi.report.figures import faithfulness_figure
    from ioi.statistics import bootstrap

    model, circuit = torch.tensor([4.0, 5.0, 7.0, 6.0]), torch.tensor([3.0, 3.5, 6.0, 2.0])
    intervals = [bootstrap(model, seed=3), bootstrap(circuit, seed=3)]
    fig = faithfulness_figure([("F(M)", 5.5), ("F(C)", 3.625)], "t", intervals)
    bar = fig.data[0]
    tops = [v + up for v, up in zip(bar.y, bar.error_y.array, strict=True)]
    bottoms = [v - down for v, down in zip(bar.y, bar.error_y.arrayminus, strict=True)]
    assert tops == pytest.approx([float(e.high) for e in intervals], abs=1e-12)
    assert bottoms == pytest.approx([float(e.low) for e in intervals], abs=1e-12)
    assert bottoms[1] < 3.625 < tops[1]
    assert faithfulness_figure([("F(M)", 5.5)]).data[0].error_y.array is None  # no intervals
