"""Sparse feature circuits (Marks et al. 2024): nodes, edges and faithfulness.

A circuit is built in three steps, each a function below:

1. `select_nodes`: the feature and error nodes whose indirect effect ``|IE|`` (from
   `ioi.features.attribution.feature_attribution`) reaches a threshold.
2. `edge_attribution`: for nodes ``u`` and ``d`` of consecutive spliced hook points (in the
   model's forward order), Marks et al.'s edge effect

       IE(u -> d) = grad_d m . (d d / d u) . (u_corrupt - u_clean),

   the upstream node's change times the gradient of the downstream node's contribution to the
   metric, both in the clean run. An error node is a node like any other (its gradient is a
   vector, and so is its change).
3. `faithfulness`: the metric with every node *outside* the circuit mean-ablated (its mean over
   the prompts, per position), as a fraction of the full model's, both measured from the run
   with every node mean-ablated: ``(m(C) - m(empty)) / (m(model) - m(empty))``.
   `faithfulness_curve` gives it for the top ``n`` nodes, for each ``n``.

`feature_circuit` runs the three steps and returns a `FeatureCircuit`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.features.attribution import (
    FeatureAttribution,
    FeatureNode,
    check_nodes,
    check_saes,
    copy_metrics,
    decoder_grad,
    feature_attribution,
    node_values,
)
from ioi.features.splice import sae_hook_name, spliced
from ioi.inputs import check_baseline_finite, check_model_tokens, check_token_pair
from ioi.patching.attribution import receiver_gradients
from ioi.patching.engine import Metric, metric_value

Edge = tuple[FeatureNode, FeatureNode]


# ---- 1. nodes --------------------------------------------------------------------------------


def select_nodes(
    attribution: FeatureAttribution,
    *,
    threshold: float | None = None,
    top_n: int | None = None,
) -> list[FeatureNode]:
    """Nodes with ``|IE| >= threshold``, or the ``top_n`` largest; largest ``|IE|`` first."""
    if (threshold is None) == (top_n is None):
        raise ValueError("give exactly one of threshold (a minimum |IE|) or top_n (a node count)")
    if top_n is not None:
        if not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 1:
            raise ValueError(f"top_n must be a positive integer (a node count), got {top_n!r}")
        return attribution.top(top_n)
    if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not threshold >= 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")  # NaN too
    n_above = int((attribution.flat().abs() >= threshold).sum())
    return attribution.top(n_above) if n_above else []


# ---- 2. edges --------------------------------------------------------------------------------


def edge_attribution(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    nodes: Iterable[FeatureNode],
) -> dict[Edge, float]:
    """Edge effects between the given nodes of consecutive spliced hook points.

    Returns:
        ``{(upstream, downstream): IE}`` for every pair of nodes in consecutive hook points of
        ``saes`` (ordered as the model runs them).
    """
    saes = check_saes(model, saes)
    check_token_pair(model, clean_tokens, corrupted_tokens)
    nodes = check_nodes(saes, nodes, clean_tokens.shape[1])
    names = list(saes)
    with torch.no_grad():
        _, cache = model.run_with_cache(corrupted_tokens, names_filter=lambda n: n in saes)
    _, acts, grads = receiver_gradients(model, clean_tokens, metric, names)
    edges: dict[Edge, float] = {}
    for upper, lower in zip(names, names[1:], strict=False):
        ups = [n for n in nodes if n.hook == upper]
        downs = [n for n in nodes if n.hook == lower]
        if not ups or not downs:
            continue
        f_clean, e_clean = node_values(saes[upper], upper, acts[upper])
        f_corr, e_corr = node_values(saes[upper], upper, cache[upper].to(acts[upper].device))
        weights = _downstream_weights(saes[lower], lower, acts[lower], grads[lower], downs)
        for down, grad_x in _downstream_grads(
            model, saes[lower], clean_tokens, upper, lower, acts, downs, weights
        ):
            grad_f = decoder_grad(saes[upper], f_clean, grad_x)
            for up in ups:
                if up.feature is None:
                    delta = e_corr[:, up.pos] - e_clean[:, up.pos]
                    value = (delta * grad_x[:, up.pos]).sum()
                else:
                    delta = f_corr[:, up.pos, up.feature] - f_clean[:, up.pos, up.feature]
                    value = (delta * grad_f[:, up.pos, up.feature]).sum()
                edges[(up, down)] = float(value)
    return edges


def _downstream_weights(
    sae: SAE, name: str, act: Tensor, grad: Tensor, downs: Sequence[FeatureNode]
) -> list[Tensor]:
    """``grad_d m`` per prompt for each downstream node: [batch] for a feature, [batch, ...] for
    an error node."""
    features, _ = node_values(sae, name, act)
    grad_f = decoder_grad(sae, features, grad)
    return [grad[:, d.pos] if d.feature is None else grad_f[:, d.pos, d.feature] for d in downs]


def _downstream_grads(model, sae, tokens, upper, lower, acts, downs, weights):
    """For each downstream node ``d``: d (grad_d m . d) / d (upstream activation), [batch, pos, ...]."""
    with torch.inference_mode(False), torch.enable_grad():
        leaf = acts[upper].detach().clone().requires_grad_(True)
        seen: dict[str, Tensor] = {}

        def capture(act: Tensor, hook) -> None:
            seen["act"] = act

        hooks = [(upper, lambda act, hook: leaf), (lower, capture)]
        with model.hooks(fwd_hooks=hooks):
            model(tokens, return_type=None)
        x = seen["act"]
        features = sae.encode(x)
        error = x - sae.decode(features).to(x.dtype)
        for i, (down, weight) in enumerate(zip(downs, weights, strict=True)):
            if down.feature is None:
                contribution = (weight * error[:, down.pos]).sum()
            else:
                contribution = (weight * features[:, down.pos, down.feature]).sum()
            last = i == len(downs) - 1
            (grad,) = torch.autograd.grad(contribution, leaf, retain_graph=not last)
            yield down, grad


# ---- 3. faithfulness -------------------------------------------------------------------------


def node_means(
    model: HookedTransformer, saes: Mapping[str, SAE], tokens: Int[Tensor, "batch pos"]
) -> dict[str, tuple[Tensor, Tensor]]:
    """Each hook point's features and error averaged over the prompts: ([pos, d_sae], [pos, ...])."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in saes)
    out = {}
    for name, sae in saes.items():
        features, error = node_values(sae, name, cache[name])
        out[name] = (features.mean(0), error.mean(0))
    return out


def ablated_metric(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    keep: Iterable[FeatureNode],
    means: Mapping[str, tuple[Tensor, Tensor]],
) -> float:
    """The metric with every spliced node not in ``keep`` set to its mean (all SAEs spliced)."""
    keep = set(keep)
    hooks = []
    for name in saes:
        mean_f, mean_e = means[name]
        kept_f = torch.zeros(mean_f.shape, dtype=torch.bool, device=mean_f.device)
        kept_e = torch.zeros(mean_f.shape[0], dtype=torch.bool, device=mean_f.device)
        for node in keep:
            if node.hook == name:
                if node.feature is None:
                    kept_e[node.pos] = True
                else:
                    kept_f[node.pos, node.feature] = True
        hooks.append((sae_hook_name(name, "hook_sae_acts_post"), _keep_or_mean(kept_f, mean_f)))
        hooks.append((sae_hook_name(name, "hook_sae_error"), _keep_or_mean(kept_e, mean_e)))
    with torch.no_grad(), spliced(model, saes, error_term=True), model.hooks(fwd_hooks=hooks):
        return float(copy_metrics(model, tokens, metric, 1, list(saes))[0])


def _keep_or_mean(kept: Tensor, mean: Tensor):
    def hook(act: Tensor, hook) -> Tensor:
        mask = kept.reshape(kept.shape + (1,) * (act.ndim - 1 - kept.ndim))  # [pos, (1...)]
        return torch.where(mask, act, mean.to(act.dtype))

    return hook


def faithfulness(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    nodes: Iterable[FeatureNode],
) -> float:
    """``(m(C) - m(empty)) / (m(model) - m(empty))`` with nodes outside ``C`` mean-ablated over
    ``tokens``; 1 for the whole model, 0 for the empty circuit."""
    return faithfulness_curve(model, saes, tokens, metric, [list(nodes)])[0][1]


def faithfulness_curve(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    circuits: Sequence[Sequence[FeatureNode]],
) -> list[tuple[int, float]]:
    """``(number of nodes, faithfulness)`` for each circuit (e.g. the top ``n`` nodes, each ``n``).

    Raises:
        ValueError: ablating every node leaves the metric where the full model has it, so no
            fraction of it can be recovered; the metric is not finite on either run; a node
            outside the SAEs' features or the prompts' positions.
    """
    saes = check_saes(model, saes)
    check_model_tokens(model, tokens)
    circuits = [check_nodes(saes, nodes, tokens.shape[1]) for nodes in circuits]
    means = node_means(model, saes, tokens)
    with torch.no_grad():
        full = float(metric_value(metric, model(tokens)))
    check_baseline_finite(full, "the model's run")
    empty = ablated_metric(model, saes, tokens, metric, [], means)
    check_baseline_finite(empty, "the run with every node mean-ablated")
    if abs(full - empty) < 1e-9:
        raise ValueError(
            f"the metric is {full:.6g} with every node mean-ablated as without ablation, so "
            "faithfulness (a fraction of that difference) is undefined"
        )
    out = []
    for nodes in circuits:
        value = ablated_metric(model, saes, tokens, metric, nodes, means)
        out.append((len(set(nodes)), (value - empty) / (full - empty)))
    return out


# ---- the orchestrator ------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureCircuit:
    """A sparse feature circuit.

    Attributes:
        attribution: every node's indirect effect.
        nodes: the circuit's nodes, largest ``|IE|`` first.
        edges: ``{(upstream, downstream): IE}`` between nodes of consecutive hook points.
        threshold: the node threshold on ``|IE|``.
        faithfulness: of the circuit, with everything outside mean-ablated over the clean prompts.
        curve: ``(n_nodes, faithfulness)`` of the top ``n`` nodes for each ``n`` asked for.
    """

    attribution: FeatureAttribution
    nodes: tuple[FeatureNode, ...]
    edges: dict[Edge, float]
    threshold: float
    faithfulness: float
    curve: list[tuple[int, float]]

    def effect(self, node: FeatureNode) -> float:
        return self.attribution.effect(node)


def feature_circuit(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    threshold: float,
    method: str = "ig",
    steps: int = 10,
    curve_sizes: Sequence[int] = (),
) -> FeatureCircuit:
    """Nodes above ``threshold``, their edges, and the circuit's faithfulness.

    Steps: 1. attribute every node (``method``, ``steps``) and keep those with
    ``|IE| >= threshold``; 2. edges between kept nodes of consecutive hook points; 3.
    faithfulness of the circuit, and of the top ``n`` nodes for each ``n`` in ``curve_sizes``.
    """
    sizes = list(curve_sizes)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"curve_sizes must be positive node counts, got {sizes!r}")
    attribution = feature_attribution(
        model, saes, clean_tokens, corrupted_tokens, metric, method=method, steps=steps
    )
    nodes = select_nodes(attribution, threshold=threshold)
    edges = edge_attribution(model, saes, clean_tokens, corrupted_tokens, metric, nodes)
    circuits = [nodes] + [attribution.top(n) for n in sizes]
    points = faithfulness_curve(model, saes, clean_tokens, metric, circuits)
    return FeatureCircuit(attribution, tuple(nodes), edges, threshold, points[0][1], points[1:])
