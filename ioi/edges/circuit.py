"""A circuit made of edges: the top-scored edges, pruned to paths from the embeddings to the logits,
and its faithfulness as edges are added.

Running a circuit: every receiver's input is rebuilt as the clean run's input minus, for each
edge *outside* the circuit, the sender's current output plus its ablated output::

    input_v = input_v(current run) - sum_{u -> v not kept} (a_u(current run) - a_u(ablated))

so that a kept edge carries the sender's output in this (already patched) run and a dropped edge
carries the sender's corrupted value (``ablation="corrupted"``) or its mean over the clean batch
at each position (``ablation="mean"``). Keeping every edge gives the clean run, keeping none the
corrupted run (tests check both). Pruning treats each head or MLP as one node over all positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.circuit.compare import jaccard
from ioi.edges.attribution import EdgeScores
from ioi.edges.graph import Edge, EdgeGraph, EdgeReceiver, EdgeSender
from ioi.edges.runs import check_inputs, position_mask, receiver_hook, split_inputs
from ioi.head import Head, HeadLike
from ioi.inputs import check_baseline_finite
from ioi.patching.engine import metric_value
from ioi.patching.readout import Metric

ABLATIONS = ("corrupted", "mean")


def _node(end: EdgeSender | EdgeReceiver) -> tuple:
    """The component behind a sender or receiver: ("head", L, h), ("mlp", L), embed, logits."""
    if end.kind in ("q", "k", "v", "head"):
        return ("head", end.layer, end.head)
    if end.kind == "mlp":
        return ("mlp", end.layer)
    return (end.kind,)


def prune(edges: Iterable[Edge]) -> list[Edge]:
    """The edges on some path from the embeddings to the logits (order kept)."""
    edges = _edges(edges, "prune's edges")
    reached = {("embed",)}
    for e in sorted(edges, key=lambda e: e.sender.writes_before):  # forward order
        if _node(e.sender) in reached:
            reached.add(_node(e.receiver))
    feeds = {("logits",)}
    for e in sorted(edges, key=lambda e: -e.sender.writes_before):  # backward order
        if _node(e.receiver) in feeds:
            feeds.add(_node(e.sender))
    return [e for e in edges if _node(e.sender) in reached and _node(e.receiver) in feeds]


def _edges(edges: Iterable[Edge], what: str) -> list[Edge]:
    """``edges`` as a list, each an `Edge` (TypeError naming the first that is not)."""
    if isinstance(edges, str | Edge):
        raise TypeError(f"{what} must be a collection of Edge objects, got {edges!r}")
    out = list(edges)
    for e in out:
        if not isinstance(e, Edge):
            raise TypeError(
                f"{what} must be Edge objects (e.g. from scores.top(n) or graph.edges), got "
                f"{type(e).__name__} {e!r}"
            )
    return out


@dataclass(frozen=True)
class EdgeCircuit:
    """The kept edges and the heads they touch."""

    edges: tuple[Edge, ...]

    def heads(self) -> frozenset[Head]:
        """Every head that sends or receives along a kept edge."""
        return frozenset(
            Head(end.layer, end.head)
            for e in self.edges
            for end in (e.sender, e.receiver)
            if end.head is not None
        )


def edge_circuit(scores: EdgeScores, n: int) -> EdgeCircuit:
    """The top ``n`` edges by ``|score|``, pruned to paths from the embeddings to the logits."""
    return EdgeCircuit(tuple(prune(scores.top(n))))


@dataclass(frozen=True)
class HeadOverlap:
    """An edge circuit's heads against another circuit's (e.g. `ioi.circuit.discover_circuit`)."""

    both: frozenset[Head]
    only_edges: frozenset[Head]
    only_nodes: frozenset[Head]
    jaccard: float


def compare_heads(circuit: EdgeCircuit, node_heads: Iterable[HeadLike]) -> HeadOverlap:
    """Set overlap of the edge circuit's heads with ``node_heads`` (e.g. ``found.heads()``)."""
    mine, theirs = circuit.heads(), frozenset(Head.coerce(h) for h in node_heads)
    return HeadOverlap(mine & theirs, mine - theirs, theirs - mine, jaccard(mine, theirs))


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Faithfulness of the top-n edge circuits, one entry per n.

    Attributes:
        n_edges: the n asked for.
        n_kept: edges left after pruning.
        metric: the metric of each circuit's run.
        faithfulness: ``(metric - corrupted) / (clean - corrupted)``: 1 is the clean run, 0 the
            ablated (no edges) run.
        clean_metric, ablated_metric: the two ends.
        ablation: ``"corrupted"`` or ``"mean"``.
    """

    n_edges: tuple[int, ...]
    n_kept: tuple[int, ...]
    metric: tuple[float, ...]
    faithfulness: tuple[float, ...]
    clean_metric: float
    ablated_metric: float
    ablation: str


def faithfulness_curve(
    model: HookedTransformer,
    scores: EdgeScores,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    n_edges: Sequence[int],
    *,
    ablation: str = "corrupted",
) -> FaithfulnessCurve:
    """`run_circuit` for the top-n edge circuit of each n in ``n_edges``.

    Raises:
        ValueError: an unknown ablation, ``n_edges`` not a non-empty list of ints >= 0, a
            metric that is not finite at either end, or ends that are equal (no faithfulness).
        TypeError: ``n_edges`` is not a list.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {ABLATIONS}")
    if isinstance(n_edges, str) or not isinstance(n_edges, Iterable):
        raise TypeError(f"n_edges must be a list of edge counts, e.g. [10, 100], got {n_edges!r}")
    ns = list(n_edges)
    if not ns or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in ns):
        raise ValueError(f"n_edges must be a non-empty list of ints >= 0, got {ns!r}")
    graph = scores.graph
    every = run_circuit(model, graph, graph.edges, clean_tokens, corrupted_tokens, metric, ablation)
    none = run_circuit(model, graph, (), clean_tokens, corrupted_tokens, metric, ablation)
    check_baseline_finite(every, "the clean run (every edge kept)")
    check_baseline_finite(none, f"the ablated run (no edge kept, ablation={ablation!r})")
    if every == none:
        raise ValueError(
            f"the metric is {every} with every edge kept and with none, so faithfulness "
            "(metric - ablated) / (clean - ablated) is undefined; use runs (clean and "
            "corrupted tokens, or the ablation) that the metric tells apart"
        )
    kept, values = [], []
    for n in ns:
        circuit = edge_circuit(scores, n)
        kept.append(len(circuit.edges))
        values.append(
            run_circuit(
                model, graph, circuit.edges, clean_tokens, corrupted_tokens, metric, ablation
            )
        )
    faith = [(v - none) / (every - none) for v in values]
    return FaithfulnessCurve(
        tuple(ns), tuple(kept), tuple(values), tuple(faith), every, none, ablation
    )


def run_circuit(
    model: HookedTransformer,
    graph: EdgeGraph,
    kept: Iterable[Edge],
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    ablation: str = "corrupted",
) -> float:
    """The metric of the clean run with every edge of ``graph`` outside ``kept`` ablated.

    One forward pass: hooks record each sender's output as the run goes and correct each
    receiver's input (see the module docstring). Hooks and flags are restored after the call.

    Raises:
        ValueError: an edge of ``kept`` that is not in ``graph``, an unknown ablation, or bad
            tokens (as `ioi.edges.edge_attribution`).
        TypeError: ``kept`` holds something that is not an `Edge`.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {ABLATIONS}")
    clean, corrupted = check_inputs(model, graph, clean_tokens, corrupted_tokens)
    kept = set(_edges(kept, "kept"))
    for e in kept:
        graph.index(e)  # an edge outside the graph would be silently ignored
    dropped = [e for e in graph.edges if e not in kept]
    cfg = model.cfg
    old = cfg.use_attn_result
    try:
        cfg.use_attn_result = True
        with split_inputs(model):
            reference = _sender_outputs(model, clean if ablation == "mean" else corrupted)
            if ablation == "mean":
                reference = {k: v.mean(0, keepdim=True).expand_as(v) for k, v in reference.items()}
            hooks = _circuit_hooks(model, graph, dropped, reference)
            with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
                logits = model(clean)
    finally:
        cfg.use_attn_result = old
    return float(metric_value(metric, logits))


def _sender_names(model: HookedTransformer) -> dict[str, str]:
    names = {"embed": get_act_name("resid_pre", 0)}
    for layer in range(model.cfg.n_layers):
        names[f"head{layer}"] = get_act_name("result", layer)  # [batch, pos, head, d_model]
        if not model.cfg.attn_only:
            names[f"mlp{layer}"] = get_act_name("mlp_out", layer)
    return names


def _sender_outputs(model: HookedTransformer, tokens: Tensor) -> dict[str, Tensor]:
    names = _sender_names(model)
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names.values())
    return {key: cache[name] for key, name in names.items()}


def _key(sender: EdgeSender) -> str:
    return "embed" if sender.kind == "embed" else f"{sender.kind}{sender.layer}"


def _circuit_hooks(model, graph: EdgeGraph, dropped: Sequence[Edge], reference: dict) -> list:
    """Recording hooks on the senders, correcting hooks on the receivers of dropped edges.

    Each correcting hook subtracts, for every receiver, the sum of its dropped senders' changes
    (``current - reference``) in one product: the senders' changes side by side ([batch, pos,
    sender, d_model]) times a 0/1 matrix [receiver, sender] of the dropped edges, one per
    position label; a loop over tens of thousands of edges (GPT-2 small has 32,491) would make
    a run cost seconds of small tensor operations.
    """
    names = _sender_names(model)
    current: dict[str, Tensor] = {}

    def record(key):
        def hook(act, hook):
            current[key] = act
            return act

        return hook

    grouped: dict[tuple[str, str | None], list[Edge]] = {}
    for e in dropped:
        grouped.setdefault((receiver_hook(model, e.receiver), e.pos), []).append(e)
    plans: dict[str, list[tuple[str | None, list[str], Tensor]]] = {}
    for (name, pos), edges in grouped.items():
        keys = list(dict.fromkeys(_key(e.sender) for e in edges))  # first-seen order
        offset, width = {}, 0
        for key in keys:
            offset[key] = width
            width += model.cfg.n_heads if key.startswith("head") else 1
        rows = 1 + max(-1 if e.receiver.head is None else e.receiver.head for e in edges)
        coef = torch.zeros(max(rows, 1), width)
        for e in edges:
            col = offset[_key(e.sender)] + (e.sender.head if e.sender.kind == "head" else 0)
            coef[0 if e.receiver.head is None else e.receiver.head, col] = 1.0
        plans.setdefault(name, []).append((pos, keys, coef))

    def correct(plan):
        def hook(act, hook):  # act: [batch, pos, head, d_model] or [batch, pos, d_model]
            out = act.clone()
            for pos, keys, coef in plan:
                parts = [current[k] - reference[k] for k in keys]
                delta = torch.cat([d if d.ndim == 4 else d[:, :, None] for d in parts], 2)
                if pos is not None:  # the edges read and write at one labelled position
                    delta = delta * position_mask(graph, pos, delta)[:, :, None, None]
                change = torch.einsum("bpsd,rs->bprd", delta, coef.to(delta))
                if act.ndim == 3:
                    out -= change[:, :, 0]
                else:
                    out[:, :, : change.shape[2]] -= change
            return out

        return hook

    hooks = [(name, record(key)) for key, name in names.items()]
    return hooks + [(name, correct(plan)) for name, plan in plans.items()]
