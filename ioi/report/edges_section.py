"""The report's edge-circuit section (`ioi.edges` on the report's model and prompts).

`edge_results` computes everything once into an `EdgeResults`; the section, ``results.json``
and the site's edge page are renderers of that object (`agreement_table`, `top_edges_table`,
`overlap_table`, `curve_figure`, `edges_numbers`). It is kept cheap, as the report runs it on
every ``ioi replicate``: the first few prompts, a few EAP-IG points, and exact patching of only
the top edges by |EAP|, all named in its text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from functools import cached_property

import torch

from ioi.edges import (
    ABLATIONS,
    METHODS,
    EdgeAgreement,
    EdgeCircuit,
    EdgeGraph,
    EdgeScores,
    FaithfulnessCurve,
    HeadOverlap,
    compare_edges,
    compare_heads,
    edge_attribution,
    edge_circuit,
    exact_edge_patching,
    faithfulness_curve,
)
from ioi.head import Head, HeadLike
from ioi.metrics import make_ioi_metric
from ioi.report import figures as F
from ioi.report import tables as T
from ioi.report.analysis import Setup
from ioi.report.document import Figure, Section, Table
from ioi.statistics import DEFAULT_LEVEL, Estimate

KEY, TITLE = "edges", "Edge circuits"
GOOD_AGREEMENT = 0.9  # Spearman at or above this is called "close" in the text


def _positive_int(name: str, value: object, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"EdgeSettings.{name} must be an int >= {low}, got {value!r}")


@dataclass(frozen=True)
class EdgeSettings:
    """How much the section computes (small, so that the report stays fast).

    Args:
        prompts: at most this many prompts (the first of the report's); fewer if it has fewer.
        steps: EAP-IG's integration points.
        exact_edges: K, the top edges by |EAP| that are also patched exactly.
        top_k: how many edges the top-k overlap compares (at most ``exact_edges``).
        curve: numbers of edges on the faithfulness curve (all edges are always added).
        rank_by: which estimate (``"eap"`` or ``"eap-ig"``) ranks the edges of the curve.
        min_faithfulness: the edge circuit compared with the node circuit is the smallest
            point of the curve whose faithfulness (corrupted ablation) reaches this.
    """

    prompts: int = 16
    steps: int = 5
    exact_edges: int = 10
    top_k: int = 5
    curve: tuple[int, ...] = (2, 5, 10, 20, 50, 100)
    rank_by: str = "eap-ig"
    min_faithfulness: float = 0.8

    def __post_init__(self) -> None:
        _positive_int("prompts", self.prompts, 2)
        _positive_int("steps", self.steps)
        _positive_int("exact_edges", self.exact_edges)
        _positive_int("top_k", self.top_k)
        if self.top_k > self.exact_edges:
            raise ValueError(
                f"EdgeSettings.top_k ({self.top_k}) must be at most exact_edges "
                f"({self.exact_edges}): the overlap compares edges that were patched exactly"
            )
        if not isinstance(self.curve, tuple) or not self.curve:
            raise ValueError(f"EdgeSettings.curve must be a non-empty tuple, got {self.curve!r}")
        for n in self.curve:
            _positive_int("curve", n)
        if self.rank_by not in METHODS:
            raise ValueError(f"EdgeSettings.rank_by must be one of {METHODS}, got {self.rank_by!r}")
        value = self.min_faithfulness
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"EdgeSettings.min_faithfulness must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class EdgeResults:
    """Everything the section shows, computed once.

    Attributes:
        settings: what was computed.
        prompts: prompts used (the first of the report's).
        scores: ``"eap"`` and ``"eap-ig"`` scores of every edge.
        exact: exact patching of the top ``settings.exact_edges`` edges by |EAP|.
        agreement: per estimate, its agreement with ``exact`` on those edges.
        curves: per ablation (``"corrupted"``, ``"mean"``), the faithfulness curve.
        circuit_edges: the curve point chosen for the edge circuit (see `EdgeSettings`);
            ``circuit_reaches``: whether it reaches ``min_faithfulness`` (False: every edge).
        circuit: that circuit; ``overlap``: its heads against ``node_heads``.
    """

    settings: EdgeSettings
    prompts: int
    scores: dict[str, EdgeScores]
    exact: EdgeScores
    agreement: dict[str, EdgeAgreement]
    curves: dict[str, FaithfulnessCurve]
    circuit_edges: int
    circuit_reaches: bool
    circuit: EdgeCircuit
    node_heads: frozenset[Head]
    overlap: HeadOverlap

    @cached_property
    def exact_interval(self) -> Estimate:
        """Mean, SE and seeded bootstrap interval over prompts of each exact edge effect."""
        return self.exact.interval(level=DEFAULT_LEVEL, seed=0)

    @property
    def n_edges(self) -> int:
        return len(self.scores["eap"].graph)


def edge_results(
    setup: Setup, node_heads: Iterable[HeadLike], settings: EdgeSettings | None = None
) -> EdgeResults:
    """EAP, EAP-IG, exact patching of the top edges, the curves and the head overlap.

    Steps:
        1. The first ``settings.prompts`` prompt pairs (IOI, ABC) and the report's normalised
           logit-difference metric on them (baselines from all of the report's prompts).
        2. EAP and EAP-IG scores of every edge.
        3. Exact patching of the top ``exact_edges`` edges by |EAP|; both estimates compared
           with it on those edges.
        4. Faithfulness curves (corrupted and mean ablation), edges ranked by ``rank_by``.
        5. The edge circuit at the first curve point reaching ``min_faithfulness`` (all edges
           if none does), its heads against ``node_heads``.
    """
    s = settings or EdgeSettings()
    model, ds = setup.model, setup.ds
    n = min(s.prompts, ds.N)
    clean, corrupted = ds.toks[:n], setup.abc.toks[:n]
    args = (setup.clean_logit_diff, setup.corrupted_logit_diff)
    args += (ds.answer_tokens[:n], ds.word_idx["end"][:n])
    metric = make_ioi_metric(*args)
    per_prompt = make_ioi_metric(*args, reduce="none")  # scores keep each prompt's own
    graph = EdgeGraph.from_model(model)
    with torch.enable_grad():  # the site may call this where gradients are off
        scores = {
            method: edge_attribution(
                model, graph, clean, corrupted, per_prompt, method=method, steps=s.steps
            )
            for method in METHODS
        }
    k = min(s.exact_edges, len(graph))
    top = graph.subset(scores["eap"].top(k))
    exact = exact_edge_patching(model, top, clean, corrupted, per_prompt)
    agreement = {
        method: compare_edges(est.subset(top), exact, min(s.top_k, k))
        for method, est in scores.items()
    }
    sizes = sorted({min(c, len(graph)) for c in s.curve} | {len(graph)})
    ranked = scores[s.rank_by]
    curves = {
        ablation: faithfulness_curve(
            model, ranked, clean, corrupted, metric, sizes, ablation=ablation
        )
        for ablation in ABLATIONS
    }
    corrupted_curve = curves["corrupted"]
    reached = [
        size
        for size, f in zip(corrupted_curve.n_edges, corrupted_curve.faithfulness, strict=True)
        if f >= s.min_faithfulness
    ]
    circuit_edges = reached[0] if reached else len(graph)
    circuit = edge_circuit(ranked, circuit_edges)
    node_heads = frozenset(Head.coerce(h) for h in node_heads)
    return EdgeResults(
        s,
        n,
        scores,
        exact,
        agreement,
        curves,
        circuit_edges,
        bool(reached),
        circuit,
        node_heads,
        compare_heads(circuit, node_heads),
    )


# ---- renderers ---------------------------------------------------------------------------


def agreement_table(r: EdgeResults) -> Table:
    """Pearson, Spearman and top-k overlap of each estimate with exact patching."""
    return Table.build(
        "Agreement with exact edge patching",
        ("estimate", "steps", "edges (N)", "top k", "Pearson", "Spearman", "top-k overlap",
         "max |error|"),
        [
            (method, a.estimate.steps, len(a.exact.graph), a.top_k, a.pearson, a.spearman,
             a.top_k_overlap, a.max_abs_error)
            for method, a in r.agreement.items()
        ],
    )  # fmt: skip


def top_edges_table(r: EdgeResults) -> Table:
    """The exactly patched edges (the top by |EAP|) with their three scores, and the exact
    effect's SE and interval over prompts."""
    eap, ig = r.scores["eap"], r.scores["eap-ig"]
    est = r.exact_interval
    return Table.build(
        f"Top {len(r.exact.graph)} edges by |EAP|",
        ("edge", "EAP", "EAP-IG", "exact", *T.interval_columns(est.level)),
        [
            (str(e), eap.score(e), ig.score(e), float(v), *T.interval_cells(est, i))
            for i, (e, v) in enumerate(
                zip(r.exact.graph.edges, r.exact.scores.tolist(), strict=True)
            )
        ],
    )


def overlap_table(r: EdgeResults) -> Table:
    """The edge circuit's heads against the node circuit's."""
    o = r.overlap
    return Table.build(
        "Heads: edge circuit vs node circuit",
        ("set", "heads", "count"),
        [
            (label, " ".join(map(str, sorted(heads))) or "-", len(heads))
            for label, heads in (
                ("both", o.both),
                ("edge circuit only", o.only_edges),
                ("node circuit only", o.only_nodes),
            )
        ],
    )


def curve_figure(r: EdgeResults) -> Figure:
    """Faithfulness against the number of edges kept, one line per ablation."""
    return Figure(
        "edge_faithfulness",
        F.faithfulness_curves_figure(
            {a: (c.n_edges, c.faithfulness) for a, c in r.curves.items()},
            f"Faithfulness of the top n edges (ranked by {r.settings.rank_by})",
        ),
        "Edges outside the top n (pruned to paths from the embeddings to the logits) carry "
        "their corrupted (ABC) value, or their mean over these prompts at each position; 1 is "
        "the model with every edge, 0 with none.",
    )


def edges_numbers(r: EdgeResults) -> dict:
    """Every number the section shows, JSON-ready."""
    eap, ig = r.scores["eap"], r.scores["eap-ig"]
    return {
        "settings": {f.name: getattr(r.settings, f.name) for f in fields(r.settings)},
        "prompts": r.prompts,
        "n_edges": r.n_edges,
        "clean_metric": eap.clean_metric,
        "scores": {
            str(e): {"eap": a, "eap-ig": b}
            for e, a, b in zip(
                eap.graph.edges, eap.scores.tolist(), ig.scores.tolist(), strict=True
            )
        },  # fmt: skip
        "exact": {
            str(e): v for e, v in zip(r.exact.graph.edges, r.exact.scores.tolist(), strict=True)
        },
        "exact_interval": {
            str(e): dict(
                zip(("se", "low", "high"), T.interval_cells(r.exact_interval, i), strict=True)
            )
            for i, e in enumerate(r.exact.graph.edges)
        },
        "intervals": T.method_numbers(r.exact_interval),
        "agreement": {
            method: {
                "n": len(a.exact.graph),
                "top_k": a.top_k,
                "pearson": a.pearson,
                "spearman": a.spearman,
                "top_k_overlap": a.top_k_overlap,
                "max_abs_error": a.max_abs_error,
            }
            for method, a in r.agreement.items()
        },
        "curves": {
            ablation: {
                "n_edges": c.n_edges,
                "n_kept": c.n_kept,
                "metric": c.metric,
                "faithfulness": c.faithfulness,
                "clean_metric": c.clean_metric,
                "ablated_metric": c.ablated_metric,
            }
            for ablation, c in r.curves.items()
        },
        "circuit": {
            "n_edges": r.circuit_edges,
            "reaches_min_faithfulness": r.circuit_reaches,
            "edges": [str(e) for e in r.circuit.edges],
            "heads": sorted(str(h) for h in r.circuit.heads()),
        },
        "node_heads": sorted(str(h) for h in r.node_heads),
        "overlap": {
            "both": sorted(str(h) for h in r.overlap.both),
            "edge_only": sorted(str(h) for h in r.overlap.only_edges),
            "node_only": sorted(str(h) for h in r.overlap.only_nodes),
            "jaccard": r.overlap.jaccard,
        },
    }


def edges_text(r: EdgeResults) -> list[str]:
    """The section's paragraphs; every number and every judgement is computed from ``r``."""
    s = r.settings
    parts = []
    for method, a in r.agreement.items():
        close = a.spearman >= GOOD_AGREEMENT
        parts.append(
            f"{method}: Spearman {a.spearman:.2f}, Pearson {a.pearson:.2f}, "
            f"{a.top_k_overlap:.0%} of the exact top {a.top_k} "
            + ("(close" if close else "(not close")
            + f": Spearman {'>=' if close else '<'} {GOOD_AGREEMENT})"
        )
    o, curve = r.overlap, r.curves["corrupted"]
    return [
        f"Every edge of the model ({r.n_edges}: embeddings, head and MLP outputs into every "
        "head's q, k, v input, every MLP and the logits) scored by EAP (one gradient at the "
        f"clean run) and EAP-IG ({s.steps} points), on the first {r.prompts} prompt pairs "
        "(IOI and ABC), with the report's normalised logit difference (baselines over all its "
        f"prompts; on these the IOI run scores {curve.clean_metric:.3f}, the ABC run "
        f"{curve.ablated_metric:.3f}). The top {len(r.exact.graph)} edges by |EAP| are also "
        "patched exactly, each alone (`ioi.edges.exact_edge_patching`). Kept small so the "
        "report stays fast.",
        f"Agreement with exact patching on those N = {len(r.exact.graph)} edges: "
        + "; ".join(parts)
        + ".",
        f"The edge circuit is the top {r.circuit_edges} edges by {s.rank_by} "
        + (
            f"(the first point of the curve whose faithfulness reaches {s.min_faithfulness:g})"
            if r.circuit_reaches
            else f"(every edge: no smaller point of the curve reaches {s.min_faithfulness:g})"
        )
        + f", {len(r.circuit.edges)} after pruning; it touches {len(r.circuit.heads())} heads. "
        f"Against the node circuit's {len(r.node_heads)} heads: {len(o.both)} in both, "
        f"{len(o.only_edges)} only in the edge circuit, {len(o.only_nodes)} only in the node "
        f"circuit (Jaccard {o.jaccard:.2f}).",
        T.interval_sentence(T.method_numbers(r.exact_interval), "The exact effects'"),
    ]


def section_edges(ctx, settings: EdgeSettings | None = None) -> Section:
    """EAP and EAP-IG against exact edge patching, the faithfulness curve, the head overlap.

    ``settings``: None takes the report's (``ctx.settings.edges``).
    """
    chosen, _ = ctx.discovery
    r = edge_results(ctx.setup, chosen.discovered.heads(), settings or ctx.settings.edges)
    section = Section(KEY, TITLE)
    section.text = edges_text(r)
    section.tables += [agreement_table(r), overlap_table(r), top_edges_table(r)]
    section.figures.append(curve_figure(r))
    section.numbers = edges_numbers(r)
    return section
