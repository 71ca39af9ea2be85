"""How well an edge-score estimate (EAP, EAP-IG) agrees with exact edge patching on the same edges."""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.edges.attribution import EdgeScores, edge_attribution
from ioi.edges.exact import exact_edge_patching
from ioi.edges.graph import EdgeGraph
from ioi.patching.attribution import correlation
from ioi.patching.readout import Metric


@dataclass(frozen=True)
class EdgeAgreement:
    """An estimate and exact patching on the same edges, and how well they agree.

    Attributes:
        estimate, exact: the two scorings of the same edges (``estimate.graph.edges`` order).
        pearson, spearman: correlations of the two score vectors (nan if either is constant).
        top_k: how many edges the overlap compares.
        top_k_overlap: the fraction of the exact top-k (by ``|score|``) that the estimate's
            top-k also holds, in 0..1.
        max_abs_error: largest ``|estimate - exact|``.
    """

    estimate: EdgeScores
    exact: EdgeScores
    pearson: float
    spearman: float
    top_k: int
    top_k_overlap: float
    max_abs_error: float


def compare_edges(estimate: EdgeScores, exact: EdgeScores, top_k: int = 50) -> EdgeAgreement:
    """Pearson, Spearman and top-k overlap of two scorings of the same edges.

    Raises:
        ValueError: the two score different edges, or ``top_k`` is not in 1..number of edges.
    """
    from ioi.features.attribution import spearman  # the library's one rank correlation

    if estimate.graph.edges != exact.graph.edges:
        raise ValueError(
            "the estimate and the exact scores are for different edges; score the same "
            "EdgeGraph (e.g. exact_edge_patching(..., estimate.graph.subset(...)))"
        )
    n = len(exact.graph)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n:
        raise ValueError(f"top_k must be an int in 1..{n} (the number of edges), got {top_k!r}")
    a, b = estimate.scores.double(), exact.scores.double()
    top_a = set(estimate.top(top_k))
    overlap = sum(e in top_a for e in exact.top(top_k)) / top_k
    return EdgeAgreement(
        estimate,
        exact,
        correlation(a, b),
        spearman(a, b),
        top_k,
        overlap,
        float((a - b).abs().max()),
    )


def agreement_with_exact(
    model: HookedTransformer,
    graph: EdgeGraph,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    method: str = "eap",
    steps: int = 5,
    n_exact: int | None = None,
    top_k: int = 50,
    edges_per_pass: int = 32,
) -> EdgeAgreement:
    """Estimate every edge, patch the ``n_exact`` top estimated edges exactly (None: all),
    and compare the two on those edges (`compare_edges`).

    Raises:
        ValueError: ``n_exact`` is not None or an int >= 1, or as `edge_attribution`,
            `exact_edge_patching` and `compare_edges`.
    """
    if n_exact is not None and (
        isinstance(n_exact, bool) or not isinstance(n_exact, int) or n_exact < 1
    ):
        raise ValueError(
            f"n_exact must be None (patch every edge exactly) or an int >= 1, got {n_exact!r}"
        )
    full = edge_attribution(
        model, graph, clean_tokens, corrupted_tokens, metric, method=method, steps=steps
    )
    chosen = graph if n_exact is None else graph.subset(full.top(n_exact))
    estimate = full.subset(chosen)
    exact = exact_edge_patching(
        model, chosen, clean_tokens, corrupted_tokens, metric, edges_per_pass=edges_per_pass
    )
    return compare_edges(estimate, exact, min(top_k, len(chosen)))
