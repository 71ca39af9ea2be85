"""Plotly figures for any `PatchResult`: one call, axes labelled from the sweep."""

from __future__ import annotations

import itertools

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from ioi.patching.result import PatchResult, Value


def heatmap(
    result: PatchResult,
    value: Value | None = None,
    title: str | None = None,
    *,
    mask: bool = False,
    **interval_options,
) -> go.Figure:
    """Plot a result in one call.

    Zero or one axis gives a bar chart, two a heatmap, three one heatmap per index of the first
    axis, four a grid of heatmaps (rows: first axis, columns: second), e.g. layer x head for
    ``attn_head_pattern_dest_src_pos``.

    Args:
        result: any `PatchResult`.
        value: ``"normalized"`` (default when the baselines differ), ``"change"`` or ``"effect"``.
        title: figure title; default names the method, mode, source and value.
        mask: blank the cells whose bootstrap interval of the *change* contains 0 (no effect
            distinguishable from none over these prompts); needs per-prompt values
            (`PatchResult.interval`). The title then states the interval method and N.
        interval_options: ``level``, ``resamples``, ``seed`` for `PatchResult.interval`.

    Returns:
        A ``plotly.graph_objects.Figure``; colours are centred on the unpatched run.
    """
    if value is None:
        value = "normalized" if result.clean_baseline != result.corrupted_baseline else "change"
    grid = result.values(value).detach().float().cpu()
    note = ""
    if mask:
        estimate = result.interval("change", **interval_options)
        grid = grid.masked_fill(~estimate.excludes_zero().cpu(), float("nan"))  # blank cells
        note = f"; blank: {estimate.describe().replace('intervals', 'interval')} contains 0"
    centre = _centre(result, value)
    labels = [list(axis_labels) for axis_labels in result.sweep.labels]
    axes = result.axes
    if grid.ndim <= 1:
        x = labels[0] if grid.ndim == 1 else [result.sites[0].describe()]
        fig = go.Figure(go.Bar(x=x, y=grid.reshape(-1).tolist()))
        fig.update_layout(xaxis_title=axes[0] if axes else "site", yaxis_title=value)
    elif grid.ndim == 2:
        fig = go.Figure(_trace(grid, labels[1], labels[0], centre, None, show_scale=True))
        fig.update_layout(xaxis_title=axes[1], yaxis_title=axes[0])
    elif grid.ndim in (3, 4):
        fig = _facets(result, grid if grid.ndim == 4 else grid[None], labels, centre)
    else:
        raise ValueError(
            f"cannot plot {grid.ndim} axes {axes}; build a sweep with at most 4 swept dimensions"
        )
    fig.update_layout(
        title=title
        or f"{result.method} patching ({result.mode}, source={result.source}): {value}{note}"
    )
    return fig


def _centre(result: PatchResult, value: str) -> float:
    if value == "change":
        return 0.0
    if value == "effect":
        return result.receiver_baseline
    return 0.0 if result.mode == "denoise" else 1.0


def _trace(
    grid: Tensor, x: list[str], y: list[str], centre: float, span: float | None, show_scale: bool
) -> go.Heatmap:
    """A diverging heatmap centred on ``centre``; a shared ``span`` keeps facets comparable."""
    limits = {"zmid": centre} if span is None else {"zmin": centre - span, "zmax": centre + span}
    return go.Heatmap(
        z=grid.tolist(),
        x=x,
        y=y,
        colorscale="RdBu",
        reversescale=True,
        showscale=show_scale,
        **limits,
    )


def _facets(result: PatchResult, grid: Tensor, labels: list[list[str]], centre: float) -> go.Figure:
    """One heatmap per (row, column) index of a [rows, cols, y, x] grid."""
    axes = result.axes
    row_axis = axes[0] if grid.shape[0] > 1 or len(axes) == 4 else None
    col_axis = axes[-3]
    rows, cols = grid.shape[0], grid.shape[1]
    titles = [
        f"{row_axis} {labels[0][r]}, {col_axis} {labels[-3][c]}"
        if row_axis
        else f"{col_axis} {labels[-3][c]}"
        for r, c in itertools.product(range(rows), range(cols))
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True)
    span = float((grid - centre).nan_to_num().abs().max()) or 1.0  # masked cells are NaN
    for r, c in itertools.product(range(rows), range(cols)):
        first = r == 0 and c == 0
        trace = _trace(grid[r, c], labels[-1], labels[-2], centre, span, show_scale=first)
        fig.add_trace(trace, row=r + 1, col=c + 1)
    fig.update_xaxes(title_text=axes[-1], row=rows)
    fig.update_yaxes(title_text=axes[-2], col=1)
    return fig
