"""Edge attribution patching: EAP and EAP-IG, first-order estimates of every edge's effect.

Sign convention (the same as exact edge patching, `ioi.edges.exact`): an edge's score estimates
``M(patched) - M(clean)`` where the patched run gives the receiver's input the sender's
corrupted value, ``input_v + (a_u(corrupted) - a_u(clean))``, everything else clean.

* EAP (Syed et al. 2023): ``score(u -> v) = (a_u(corrupted) - a_u(clean)) . dM/d(input_v)``,
  the gradient at the clean run; one forward and one backward pass for all edges.
* EAP-IG (Hanna et al. 2024): the same product with the gradient averaged over ``steps`` runs
  whose input embeddings (``blocks.0.hook_resid_pre``, token plus position) are
  ``e_clean + (k / steps) (e_corrupted - e_clean)`` for ``k = 0 .. steps - 1``: a Riemann sum
  that starts at the clean end and never evaluates the corrupted end, the same points as the
  paper's code (which counts from the corrupted end, ``k = 1 .. steps``). ``steps=1`` is EAP.

The gradient with respect to a receiver's input is taken through ``hook_q_input`` /
``hook_k_input`` / ``hook_v_input`` (split per head), ``hook_mlp_in`` and the last
``hook_resid_post`` (the logits' input), using `ioi.patching.attribution.receiver_gradients`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.edges.graph import Edge, EdgeGraph, EdgeSender
from ioi.edges.runs import (
    check_inputs,
    head_deltas,
    position_mask,
    receiver_hook,
    run_cache,
    split_inputs,
)
from ioi.inputs import check_baseline_finite, check_metric_finite
from ioi.patching.attribution import per_prompt_gradients
from ioi.patching.readout import Metric
from ioi.statistics import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Estimate, bootstrap

METHODS = ("eap", "eap-ig")


@dataclass(frozen=True)
class EdgeScores:
    """One score per edge of ``graph`` (aligned with ``graph.edges``) and how it was computed.

    Attributes:
        graph: the edges scored.
        scores: [edge] ``M(patched) - M(clean)``, estimated or exact.
        method: ``"eap"``, ``"eap-ig"`` or ``"exact"``.
        steps: EAP-IG's number of points (1 for EAP, 0 for exact).
        clean_metric: ``M(clean)`` (the mean over prompts for a per-prompt metric).
        per_prompt: [edge, batch] each prompt's own score, when the metric returned one value
            per prompt (e.g. ``make_logit_diff_metric(..., reduce="none")``); ``scores`` is
            then their mean. None for a scalar metric.
    """

    graph: EdgeGraph
    scores: Float[Tensor, " edge"]
    method: str
    steps: int
    clean_metric: float
    per_prompt: Float[Tensor, "edge batch"] | None = None

    def interval(
        self,
        *,
        level: float | int = DEFAULT_LEVEL,
        resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
    ) -> Estimate:
        """Mean, standard error and seeded bootstrap interval over prompts of every edge's
        score (the same resampled prompts for every edge; `ioi.statistics.bootstrap`).

        Raises:
            ValueError: the scores have no per-prompt values (a scalar metric was used), or
                bad bootstrap options.
        """
        if self.per_prompt is None:
            raise ValueError(
                "these edge scores have no per-prompt values, so no interval: score with a "
                "per-prompt metric (e.g. make_logit_diff_metric(..., reduce='none'), or any "
                "metric returning one value per prompt [batch])"
            )
        return bootstrap(self.per_prompt, level=level, resamples=resamples, seed=seed)

    def subset(self, edges: EdgeGraph | Sequence[Edge]) -> EdgeScores:
        """The scores of ``edges`` only (an `EdgeGraph` made by ``self.graph.subset``, or edges
        of ``self.graph``), as scores of that graph, in its order."""
        graph = edges if isinstance(edges, EdgeGraph) else self.graph.subset(edges)
        idx = torch.tensor([self.graph.index(e) for e in graph.edges], dtype=torch.long)
        rows = None if self.per_prompt is None else self.per_prompt[idx]
        return EdgeScores(graph, self.scores[idx], self.method, self.steps, self.clean_metric, rows)

    def score(self, edge: Edge) -> float:
        """The score of one edge (ValueError if the graph lacks it)."""
        return float(self.scores[self.graph.index(edge)])

    def top(self, n: int) -> list[Edge]:
        """The ``n`` edges of largest ``|score|``, largest first."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        order = self.scores.abs().argsort(descending=True, stable=True)[:n]
        return [self.graph.edges[i] for i in order.tolist()]


def check_method(method: object, steps: object) -> None:
    """Raise ValueError for an unknown method or a step count that is not an int >= 1."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (1 is plain EAP), got {steps!r}")


def edge_attribution(
    model: HookedTransformer,
    graph: EdgeGraph,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    method: str = "eap",
    steps: int = 5,
) -> EdgeScores:
    """EAP or EAP-IG scores of every edge of ``graph`` (see the module docstring).

    Steps:
        1. Check the inputs; run clean and corrupted, keeping what senders' changes need.
        2. Receivers' input gradients: at the clean run (EAP) or averaged over the
           interpolated runs (EAP-IG), one forward and backward pass each.
        3. Products of each sender's change with each receiver's gradient, summed over the
           edge's positions and the batch.

    Args:
        metric: logits -> one number, differentiable (e.g. a mean logit difference), or one
            value per prompt ([batch]): then each prompt's own scores are kept (``per_prompt``;
            prompts do not interact, so the gradient of their sum is each prompt's own).
        method: ``"eap"`` or ``"eap-ig"``.
        steps: EAP-IG's number of points (ignored by ``"eap"``).

    Raises:
        ValueError: an unknown method, ``steps < 1``, an edge whose sender does not come before
            its receiver, token batches of different shapes, positions for another batch, a
            metric (or a gradient of it) that is NaN or infinite.
    """
    check_method(method, steps)
    clean, corrupted = check_inputs(model, graph, clean_tokens, corrupted_tokens)
    steps = 1 if method == "eap" else steps
    clean_logits, clean_acts = run_cache(model, clean)
    _, corrupted_acts = run_cache(model, corrupted)
    value, grads = _mean_gradients(model, graph, clean, corrupted_acts, clean_acts, metric, steps)
    check_baseline_finite(value.detach(), "the clean run")
    with torch.no_grad():
        rows = _products(model, graph, clean_acts, corrupted_acts, grads)  # [edge, batch]
    check_metric_finite(rows, lambda i: f"edge {graph.edges[i]}")
    if value.ndim == 0:  # a scalar metric: the batch rows are parts of one sum
        return EdgeScores(graph, rows.sum(1), method, steps, float(value))
    return EdgeScores(graph, rows.mean(1), method, steps, float(value.mean()), rows)


def _mean_gradients(
    model: HookedTransformer,
    graph: EdgeGraph,
    clean: Tensor,
    corrupted_acts: dict,
    clean_acts: dict,
    metric: Metric,
    steps: int,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Step 2: the clean metric (scalar or [batch]) and d metric / d receiver input at each
    receiver hook, averaged over the points (per prompt for a per-prompt metric)."""
    names = sorted({receiver_hook(model, e.receiver) for e in graph.edges})
    embed = get_act_name("resid_pre", 0)
    e_clean, e_corrupted = clean_acts[embed], corrupted_acts[embed]
    total: dict[str, Tensor] = {}
    value = None
    for k in range(steps):
        alpha = k / steps

        def interpolate(act: Tensor, hook, alpha=alpha) -> Tensor:
            return e_clean + alpha * (e_corrupted - e_clean)

        with split_inputs(model), model.hooks(fwd_hooks=[(embed, interpolate)]):
            point, _, grads = per_prompt_gradients(model, clean, metric, names)
        value = point if k == 0 else value  # k = 0 is the clean run itself
        for name, g in grads.items():
            total[name] = g if name not in total else total[name] + g
    return value, {name: g / steps for name, g in total.items()}


def _sender_group(sender: EdgeSender) -> tuple[str, int]:
    return ("head", sender.layer) if sender.kind == "head" else (sender.kind, sender.layer)


def _products(
    model: HookedTransformer,
    graph: EdgeGraph,
    clean_acts: dict,
    corrupted_acts: dict,
    grads: dict[str, Tensor],
) -> Float[Tensor, "edge batch"]:
    """Step 3: per (sender group, receiver hook, position label), all products at once, each
    prompt's own (summed over positions and d_model)."""
    deltas: dict[tuple[str, int], Tensor] = {}  # group -> [batch, pos, sender, d_model]
    tables: dict[tuple, Tensor] = {}
    batch = next(iter(grads.values())).shape[0]
    scores = torch.empty(len(graph.edges), batch, dtype=torch.float64)
    for i, edge in enumerate(graph.edges):
        group = _sender_group(edge.sender)
        if group not in deltas:
            deltas[group] = _group_delta(model, group, clean_acts, corrupted_acts)
        name = receiver_hook(model, edge.receiver)
        key = (group, name, edge.pos)
        if key not in tables:
            grad = grads[name]
            grad = grad if grad.ndim == 4 else grad[:, :, None]  # [batch, pos, receiver, d_model]
            if edge.pos is not None:
                grad = grad * position_mask(graph, edge.pos, grad)[..., None, None]
            tables[key] = (
                einops.einsum(deltas[group], grad, "b p s d, b p r d -> s r b").double().cpu()
            )
        s = edge.sender.head if edge.sender.kind == "head" else 0
        r = edge.receiver.head if edge.receiver.head is not None else 0
        scores[i] = tables[key][s, r]  # [batch]
    return scores


def _group_delta(
    model: HookedTransformer, group: tuple[str, int], clean_acts: dict, corrupted_acts: dict
) -> Float[Tensor, "batch pos sender d_model"]:
    kind, layer = group
    if kind == "head":
        return head_deltas(model, layer, clean_acts, corrupted_acts)
    name = get_act_name("resid_pre" if kind == "embed" else "mlp_out", layer)
    return (corrupted_acts[name] - clean_acts[name])[:, :, None]
