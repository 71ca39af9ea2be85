"""Plotly figures for the report and the site, one function per kind of picture.

Patching results are drawn by `ioi.patching.heatmap`; this module draws the rest: [layer,
head] grids, bar and line charts, the threshold sweep, the criteria, the circuit as a graph,
and the name-mover scatter.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from jaxtyping import Float
from plotly.subplots import make_subplots
from torch import Tensor

from ioi.circuit import DiscoveredCircuit, KnockoutScore, SweepPoint
from ioi.head import Head
from ioi.heads import NameMoverScatter
from ioi.patching import AttributionComparison
from ioi.statistics import Estimate

DIVERGING = "RdBu"
EDGE_COLOURS = {"logits": "#222222", "q": "#1f77b4", "k": "#2ca02c", "v": "#ff7f0e"}


def layer_head_heatmap(
    values: Float[Tensor, "layer head"],
    title: str,
    colorbar: str = "",
    zmid: float | None = 0.0,
) -> go.Figure:
    """A [layer, head] grid as a heatmap, layer 0 at the top, hover labelled with the head."""
    grid = values.detach().float().cpu()
    n_layers, n_heads = grid.shape
    labels = [[str(Head(layer, head)) for head in range(n_heads)] for layer in range(n_layers)]
    fig = go.Figure(
        go.Heatmap(
            z=grid.tolist(),
            x=[str(h) for h in range(n_heads)],
            y=[str(layer) for layer in range(n_layers)],
            text=labels,
            hovertemplate="head %{text}: %{z:.3f}<extra></extra>",
            colorscale=DIVERGING if zmid is not None else "Blues",
            reversescale=zmid is not None,
            zmid=zmid,
            colorbar={"title": {"text": colorbar}},
        )
    )
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer")
    fig.update_yaxes(autorange="reversed")
    return fig


def layer_head_facets(grids: dict[str, Tensor], title: str, zmid: float | None = 0.0) -> go.Figure:
    """Several [layer, head] grids side by side on one colour scale, one panel per name."""
    names = list(grids)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, shared_yaxes=True)
    values = [grids[name].detach().float().cpu() for name in names]
    span = max(float(v.abs().max()) for v in values) or 1.0
    for i, grid in enumerate(values):
        n_layers, n_heads = grid.shape
        fig.add_trace(
            go.Heatmap(
                z=grid.tolist(),
                x=[str(h) for h in range(n_heads)],
                y=[str(layer) for layer in range(n_layers)],
                colorscale=DIVERGING if zmid is not None else "Blues",
                reversescale=zmid is not None,
                zmin=-span if zmid is not None else 0.0,
                zmax=span,
                showscale=i == 0,
                hovertemplate=f"{names[i]}, head %{{y}}.%{{x}}: %{{z:.3f}}<extra></extra>",
            ),
            row=1,
            col=i + 1,
        )
        fig.update_xaxes(title_text="head", row=1, col=i + 1)
    fig.update_yaxes(title_text="layer", autorange="reversed", row=1, col=1)
    fig.update_layout(title=title)
    return fig


def bar_figure(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    yaxis: str,
    intervals: Sequence[Estimate] | None = None,
) -> go.Figure:
    """A bar chart of one value per label; with scalar ``intervals`` (one `Estimate` per bar),
    error bars from each interval's low to its high bound."""
    y = [float(v) for v in values]
    error = None
    if intervals is not None:
        error = {
            "type": "data",
            "symmetric": False,
            "array": [float(e.high) - v for e, v in zip(intervals, y, strict=True)],
            "arrayminus": [v - float(e.low) for e, v in zip(intervals, y, strict=True)],
        }
    fig = go.Figure(go.Bar(x=list(labels), y=y, error_y=error))
    fig.update_layout(title=title, yaxis_title=yaxis)
    return fig


def line_figure(
    labels: Sequence[str], values: Sequence[float], title: str, yaxis: str
) -> go.Figure:
    """A line with markers over ordered labels (e.g. the accumulated residual stream)."""
    fig = go.Figure(go.Scatter(x=list(labels), y=[float(v) for v in values], mode="lines+markers"))
    fig.update_layout(title=title, yaxis_title=yaxis)
    return fig


def histogram_figure(values: Sequence[float], title: str, xaxis: str) -> go.Figure:
    """A histogram of per-prompt values."""
    fig = go.Figure(go.Histogram(x=[float(v) for v in values], nbinsx=30))
    fig.update_layout(title=title, xaxis_title=xaxis, yaxis_title="prompts")
    return fig


def reference_figure(rows: Sequence[dict]) -> go.Figure:
    """Ours beside the published value for each figure (rows with figure/ours/published)."""
    names = [row["figure"] for row in rows]
    fig = go.Figure(
        [
            go.Bar(name="ours", x=names, y=[row["ours"] for row in rows]),
            go.Bar(name="published", x=names, y=[row["published"] for row in rows]),
        ]
    )
    fig.update_layout(title="GPT-2 small: ours vs published", barmode="group")
    return fig


def attribution_scatter(comparison: AttributionComparison) -> go.Figure:
    """Exact patching change against the attribution estimate, one point per site."""
    exact = comparison.exact.change.flatten().tolist()
    estimate = comparison.attribution.change.flatten().tolist()
    labels = [site.describe() for site in comparison.exact.sites]
    lo, hi = min(exact + estimate), max(exact + estimate)
    fig = go.Figure(
        [
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x", line={"dash": "dot"}),
            go.Scatter(
                x=exact,
                y=estimate,
                mode="markers",
                name="sites",
                text=labels,
                hovertemplate="%{text}: exact %{x:.3f}, attribution %{y:.3f}<extra></extra>",
            ),
        ]
    )
    fig.update_layout(
        title=f"Attribution vs exact patching (Pearson r = {comparison.pearson:.3f})",
        xaxis_title="exact change of the metric",
        yaxis_title="attribution estimate",
    )
    return fig


def threshold_figure(points: Sequence[SweepPoint], chosen: SweepPoint) -> go.Figure:
    """Faithfulness F(C)/F(M) against the discovery threshold, labelled by circuit size."""
    ordered = sorted(points, key=lambda p: p.threshold)
    fig = go.Figure(
        go.Scatter(
            x=[p.threshold for p in ordered],
            y=[p.faithfulness for p in ordered],
            mode="lines+markers+text",
            text=[f"{p.n_heads} heads" for p in ordered],
            textposition="top center",
            name="circuit",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[chosen.threshold],
            y=[chosen.faithfulness],
            mode="markers",
            marker={"size": 14, "symbol": "star"},
            name="chosen",
        )
    )
    fig.update_xaxes(type="log", title="threshold on |path-patching effect|")
    fig.update_layout(title="Faithfulness of the discovered circuit", yaxis_title="F(C) / F(M)")
    return fig


def faithfulness_figure(
    rows: Sequence[tuple[str, float]],
    title: str = "Logit difference under mean ablation",
    intervals: Sequence[Estimate] | None = None,
) -> go.Figure:
    """Bars of F(M), F(C) (and any other labelled logit differences), with error bars from
    their ``intervals`` when given."""
    labels, values = [r[0] for r in rows], [r[1] for r in rows]
    return bar_figure(labels, values, title, "mean logit difference", intervals)


def completeness_figure(scores: Sequence[KnockoutScore]) -> go.Figure:
    """The paper's completeness plot: F(C \\ K) against F(M \\ K), one point per K."""
    x = [s.f_without for s in scores]
    y = [s.f_with for s in scores]
    lo, hi = min(x + y + [0.0]), max(x + y)
    fig = go.Figure(
        [
            go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="complete (y = x)"),
            go.Scatter(
                x=x,
                y=y,
                mode="markers",
                text=[s.label for s in scores],
                name="K",
                hovertemplate="%{text}: F(M\\K) %{x:.2f}, F(C\\K) %{y:.2f}<extra></extra>",
            ),
        ]
    )
    fig.update_layout(
        title="Completeness: knocking K out of the circuit vs out of the model",
        xaxis_title="F(M \\ K)",
        yaxis_title="F(C \\ K)",
    )
    return fig


def minimality_figure(scores: Sequence[KnockoutScore]) -> go.Figure:
    """Each head's minimality score relative to F(C)."""
    return bar_figure(
        [s.label for s in scores],
        [s.relative for s in scores],
        "Minimality: |F(C \\ (K ∪ {v})) - F(C \\ K)| / F(C) per head v",
        "relative change",
    )


def circuit_graph(found: DiscoveredCircuit, n_layers: int, title: str = "") -> go.Figure:
    """The discovered circuit as a graph: heads placed by layer, edges coloured by the input
    they feed (logits, q, k, v), nodes coloured by class."""
    classes = {f.head: f.cls for f in found.findings}
    heads = sorted(classes)
    per_layer: dict[int, list[Head]] = {}
    for head in heads:
        per_layer.setdefault(head[0], []).append(head)
    place = {
        head: (layer, i - (len(members) - 1) / 2)
        for layer, members in per_layer.items()
        for i, head in enumerate(members)
    }
    logits = (n_layers, 0.0)
    fig = go.Figure()
    for inp, colour in EDGE_COLOURS.items():
        xs: list[float | None] = []
        ys: list[float | None] = []
        for edge in found.edges:
            if edge.input != inp or edge.sender not in place:
                continue
            targets = (
                [logits] if inp == "logits" else [place[r] for r in edge.receivers if r in place]
            )
            for tx, ty in targets:
                sx, sy = place[edge.sender]
                xs += [sx, tx, None]
                ys += [sy, ty, None]
        if xs:
            name = "to logits" if inp == "logits" else f"into {inp}"
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": colour}, name=name))
    for cls in sorted(set(classes.values())):
        members = [h for h in heads if classes[h] == cls]
        fig.add_trace(
            go.Scatter(
                x=[place[h][0] for h in members],
                y=[place[h][1] for h in members],
                mode="markers+text",
                text=[str(h) for h in members],
                textposition="top center",
                marker={"size": 18},
                name=cls,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[logits[0]],
            y=[logits[1]],
            mode="markers+text",
            text=["logits"],
            textposition="top center",
            marker={"size": 20, "symbol": "square", "color": "#222222"},
            name="logits",
        )
    )
    fig.update_xaxes(
        tickvals=list(range(n_layers + 1)),
        ticktext=[f"layer {i}" for i in range(n_layers)] + ["output"],
    )
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title or f"Circuit found at threshold {found.threshold:g}")
    return fig


def name_mover_scatter_figure(data: NameMoverScatter) -> go.Figure:
    """Plotly scatter of `NameMoverScatter`: IO points and S points."""
    fig = go.Figure()
    for label, x, y in (("IO", data.attn_to_io, data.proj_io), ("S", data.attn_to_s, data.proj_s)):
        fig.add_trace(go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers", name=label))
    fig.update_layout(
        title=f"Head {Head(data.layer, data.head)}: attention from end vs. output on the name's "
        "unembedding",
        xaxis_title="attention probability on the name",
        yaxis_title="dot product of head output with W_U[name]",
    )
    return fig


def feature_circuit_graph(
    nodes: Sequence, effects: Sequence[float], edges: dict, hooks: Sequence[str],
    pos_names: Sequence[str], title: str = "Feature circuit",
) -> go.Figure:  # fmt: skip
    """A sparse feature circuit: nodes (`ioi.features.FeatureNode`) placed by token position (x)
    and hook point (y, nodes of one place stacked), sized by ``|IE|`` and coloured by its sign;
    edges drawn between them."""
    stacked: dict[tuple[str, int], int] = {}
    place = {}
    for node in nodes:
        k = stacked.get((node.hook, node.pos), 0)
        stacked[node.hook, node.pos] = k + 1
        place[node] = (node.pos, hooks.index(node.hook) + 0.12 * k)
    fig = go.Figure()
    xs: list[float | None] = []
    ys: list[float | None] = []
    for up, down in edges:
        if up in place and down in place:
            xs += [place[up][0], place[down][0], None]
            ys += [place[up][1], place[down][1], None]
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#999999"}, name="edges"))
    largest = max((abs(e) for e in effects), default=1.0) or 1.0
    for sign, colour in (("positive IE", "#b2182b"), ("negative IE", "#2166ac")):
        members = [
            (n, e) for n, e in zip(nodes, effects, strict=True) if (e >= 0) == (sign[0] == "p")
        ]
        if not members:
            continue
        fig.add_trace(
            go.Scatter(
                x=[place[n][0] for n, _ in members],
                y=[place[n][1] for n, _ in members],
                mode="markers+text",
                text=["err" if n.is_error else f"f{n.feature}" for n, _ in members],
                textposition="middle right",
                hovertext=[f"{n}: IE {e:.4f}" for n, e in members],
                marker={"size": [8 + 22 * abs(e) / largest for _, e in members], "color": colour},
                name=sign,
            )
        )
    fig.update_xaxes(
        tickvals=list(range(len(pos_names))), ticktext=list(pos_names), title="position"
    )
    fig.update_yaxes(tickvals=list(range(len(hooks))), ticktext=list(hooks), title="hook point")
    fig.update_layout(title=title)
    return fig


def faithfulness_curves_figure(
    curves: dict[str, tuple[Sequence[int], Sequence[float]]], title: str
) -> go.Figure:
    """One line per named curve of (number of edges, faithfulness), on a log x axis."""
    fig = go.Figure(
        [
            go.Scatter(x=list(xs), y=[float(v) for v in ys], mode="lines+markers", name=name)
            for name, (xs, ys) in curves.items()
        ]
    )
    fig.update_xaxes(type="log", title="edges kept (before pruning)")
    fig.update_layout(title=title, yaxis_title="faithfulness")
    return fig
