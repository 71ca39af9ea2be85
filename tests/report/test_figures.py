"""Figures drawn from analysis results (no model needed: the results are built by hand)."""

from __future__ import annotations

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
