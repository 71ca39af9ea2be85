"""Checker for section 6's edge attribution patching (EAP) exercise: the score of one edge.

The expected value comes from `ioi.edges.edge_attribution` on a graph of that one edge, with
the per-prompt metric averaged over prompts. The mistakes are computed from one set of
ingredients per edge (both runs' caches, both runs' gradients at the hooks a learner might
pick), so every candidate is a few products, not another forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens.utilities import get_act_name

from ioi.checks.core import exercise, gradients_off_error, one_thread
from ioi.checks.fixtures import IOIBatch, ioi_batch
from ioi.edges import Edge, EdgeGraph, EdgeReceiver, EdgeSender, edge_attribution
from ioi.edges.runs import receiver_hook, split_inputs
from ioi.metrics import make_ioi_metric

EAP = exercise(
    "eap_edge_score",
    hint="delta = a_u(corrupted) - a_u(clean) from the two caches (a head: (z' - z)[:, :, h] @ "
    "W_O[layer, h]; the embeddings: blocks.0.hook_resid_pre; an MLP: hook_mlp_out); the "
    "gradient of metric(model(clean_tokens)).sum() with respect to the receiver's input "
    "(receiver_hook(model, edge.receiver), inside `with split_inputs(model):`, on the clean "
    "run); then (delta * grad).sum over positions and d_model, .mean() over prompts.",
    diagnoses={
        "wrong_sign": "the score has the opposite sign: the change is a_u(corrupted) - "
        "a_u(clean) (the patched run gives the receiver the corrupted sender), not clean - "
        "corrupted",
        "gradient_at_corrupted": "the gradient was taken on the corrupted run; EAP expands "
        "around the run being patched, the clean one: take the gradient of metric(model("
        "clean_tokens))",
        "receiver_output_gradient": "the gradient is with respect to the receiver's output "
        "(hook_mlp_out); the edge changes what the receiver reads, so take it at its input "
        "(hook_mlp_in: receiver_hook(model, edge.receiver))",
        "residual_gradient": "the gradient is with respect to the whole residual stream at the "
        "receiver's layer; that counts every reader of the stream (all heads' q, k, v and the "
        "MLP), not this one receiver: take it at the receiver's own input (hook_q_input etc., "
        "one head's slice) inside `with split_inputs(model):`",
        "not_summed_over_positions": "the result still has a position axis: the edge carries "
        "the sender's change at every position, so sum the products over positions (and "
        "d_model) before averaging over prompts",
        "summed_wrong_axis": "the products were summed over positions but not over d_model: "
        "the dot product runs over d_model, and then over positions",
        "end_position_only": "only the final (`end`) position was counted; the edge carries "
        "the sender's change at every position, and each contributes: sum over all of them",
        "mean_over_positions": "the products were averaged over positions (or d_model) where "
        "they are summed: the edge's effect is the sum of its effects at every position, and "
        "a dot product over d_model is a sum too. Only the prompts are averaged",
        "sum_not_mean": "the result is the expected one times the number of prompts: average "
        "the per-prompt scores over prompts (the metric is per prompt; the library scores the "
        "mean of it)",
        "averaged_twice": "the result is the expected one divided by the number of prompts: "
        "the gradient of metric(...).mean() already carries 1 / n, so sum the products over "
        "prompts then, or take the gradient of .sum() and average the scores",
        "clean_activation_only": "you multiplied the gradient by the sender's clean activation, "
        "not by its change: the first-order term is (a_u(corrupted) - a_u(clean)) . grad",
        "wrong_head": "this is the score of a neighbouring head (head index off by one, at the "
        "sender or at the receiver): edge.sender.head and edge.receiver.head index the head "
        "axis of z and of the split input",
        "whole_layer_sender": "the change is that of the whole attention layer (hook_attn_out), "
        "not of the one sender head: take (z' - z)[:, :, h] @ W_O[layer, h]",
        "squared_or_absolute": "the score is the square or the absolute value of the expected "
        "one; keep its sign, which says whether the edge helps or hurts the metric",
        "zero_score": "the score is 0: the gradient came back as zeros (taken with respect to a "
        "detached copy, or with allow_unused / materialize_grads hiding that it was never "
        "used), or the change is zero (both activations read from the same cache)",
    },
    shared=("sum_not_mean", "gradients_off"),
)


CASES: tuple[Edge, ...] = (
    Edge(EdgeSender("head", 0, 1), EdgeReceiver("mlp", 0)),
    Edge(EdgeSender("head", 0, 2), EdgeReceiver("k", 1, 3)),
    Edge(EdgeSender("embed"), EdgeReceiver("v", 0, 3)),
    Edge(EdgeSender("head", 1, 0), EdgeReceiver("logits")),
    Edge(EdgeSender("mlp", 0), EdgeReceiver("k", 1, 3)),
)
"""Edges of every sender kind and every receiver kind, scores of both signs on the toy. An
MLP receiver comes first: its score at the end position alone is neither 0 nor the whole
score (a k or v receiver's is 0 there, a logits receiver's is all of it), so the first edge
already tells "end position only" from "a zero gradient"."""


@dataclass(frozen=True)
class _Parts:
    """What every candidate is made of, for one edge: both runs' activations and gradients."""

    clean: dict[str, Tensor]
    corrupted: dict[str, Tensor]
    grads: dict[str, dict[str, Tensor]]  # run -> hook name -> d sum(metric) / d activation
    end: Tensor  # [batch] each prompt's final position


def _hooks_for(model, edge: Edge) -> list[str]:
    """The receiver's input and the other places a learner might take the gradient."""
    r = edge.receiver
    names = [receiver_hook(model, r)]
    if r.kind == "mlp":
        names += [get_act_name("mlp_out", r.layer), get_act_name("resid_mid", r.layer)]
    elif r.kind in ("q", "k", "v"):
        names.append(get_act_name("resid_pre", r.layer))
    return names


def _gradients(model, tokens: Tensor, metric, names: list[str]) -> dict[str, Tensor]:
    probes: dict[str, Tensor] = {}

    def probe(act: Tensor, hook) -> Tensor:
        probes[hook.name] = torch.zeros_like(act, requires_grad=True)
        return act + probes[hook.name]

    with torch.enable_grad(), split_inputs(model), model.hooks([(n, probe) for n in names]):
        value = metric(model(tokens)).sum()
        grads = torch.autograd.grad(value, [probes[n] for n in names])
    return dict(zip(names, grads, strict=True))


def _parts(b: IOIBatch, metric, edge: Edge) -> _Parts:
    names = _hooks_for(b.model, edge)
    return _Parts(
        clean=dict(b.clean_cache.items()),
        corrupted=dict(b.corrupted_cache.items()),
        grads={
            "clean": _gradients(b.model, b.ds.toks, metric, names),
            "corrupted": _gradients(b.model, b.abc.toks, metric, names),
        },
        end=b.end,
    )


def sender_value(model, acts: dict[str, Tensor], sender: EdgeSender, head_shift: int = 0) -> Tensor:
    """The sender's activation in the residual stream, [batch, pos, d_model]."""
    if sender.kind == "embed":
        return acts[get_act_name("resid_pre", 0)]
    if sender.kind == "mlp":
        return acts[get_act_name("mlp_out", sender.layer)]
    h = sender.head + head_shift
    return acts[get_act_name("z", sender.layer)][:, :, h] @ model.blocks[sender.layer].attn.W_O[h]


def eap_variant(
    model,
    parts: _Parts,
    edge: Edge,
    *,
    run: str = "clean",
    at: str = "input",
    delta: str = "change",
    sender_shift: int = 0,
    receiver_shift: int = 0,
    reduce: str = "score",
) -> Tensor:
    """The EAP score with switches for the mistakes.

    ``run``: where the gradient is taken; ``at``: ``"input"``, ``"output"`` (hook_mlp_out) or
    ``"resid"`` (the residual stream the receiver reads); ``delta``: ``"change"``,
    ``"clean"`` (a_u(clean) alone) or ``"layer"`` (the whole attention layer's change);
    ``reduce``: ``"score"`` (sum over positions and d_model, mean over prompts), ``"pos"``
    (keep positions), ``"d_model"`` (keep d_model), ``"end"`` (the end position only).
    """
    r = edge.receiver
    names = _hooks_for(model, edge)
    name = {"input": names[0], "output": names[min(1, len(names) - 1)], "resid": names[-1]}[at]
    grad = parts.grads[run][name]
    if grad.ndim == 4:  # [batch, pos, head, d_model]: this receiver head's slice
        grad = grad[:, :, r.head + receiver_shift]
    if delta == "clean":
        change = sender_value(model, parts.clean, edge.sender)
    elif delta == "layer":
        name = get_act_name("attn_out", edge.sender.layer)
        change = parts.corrupted[name] - parts.clean[name]
    else:
        change = sender_value(model, parts.corrupted, edge.sender, sender_shift) - sender_value(
            model, parts.clean, edge.sender, sender_shift
        )
    product = (change * grad).detach()  # [batch, pos, d_model]
    if reduce == "pos":
        return product.sum(-1).mean(0)
    if reduce == "d_model":
        return product.sum(1).mean(0)
    if reduce == "end":
        return product.sum(-1)[torch.arange(product.shape[0]), parts.end].mean()
    return product.sum((1, 2)).mean()


def _unless_zero(candidate: Tensor) -> Tensor | None:
    """The candidate, unless it is 0 (then a zero result is `zero_score`, not this mistake)."""
    return None if float(candidate.detach().abs()) < 1e-6 else candidate


def _neighbours(edge: Edge, n_heads: int) -> list[dict[str, int]]:
    shifts = []
    for field, head in (("sender_shift", edge.sender.head), ("receiver_shift", edge.receiver.head)):
        if head is not None:
            shifts += [{field: s} for s in (-1, 1) if 0 <= head + s < n_heads]
    return shifts


@one_thread()
def test_eap_edge_score(eap_edge_score_fn: Callable) -> None:
    """Check ``eap_edge_score(model, clean_tokens, corrupted_tokens, metric, edge) -> tensor``."""
    ex, b = EAP, ioi_batch(6)
    model = b.model
    metric = make_ioi_metric(
        b.clean_logit_diff, b.corrupted_logit_diff, b.answer_tokens, b.end, reduce="none"
    )

    def mean_metric(logits: Tensor) -> Tensor:
        return metric(logits).mean()

    calls, results = [], []
    for edge in CASES:  # every edge first: an absolute value shows only across signs
        call = (
            f"eap_edge_score(model, clean_tokens, corrupted_tokens, metric, edge={edge})  "
            f"[{b.describe()}; gradients off, as in the notebook]"
        )
        with torch.no_grad():  # as the notebook runs: the function turns gradients on itself
            got = ex.call(
                eap_edge_score_fn,
                model,
                b.ds.toks.clone(),
                b.abc.toks.clone(),
                metric,
                edge,
                call=call,
                model=model,
                raised_as=gradients_off_error,
            )
        calls.append(call)
        results.append(got)
    never_negative = all(
        isinstance(g, Tensor | float) and float(torch.as_tensor(g).detach().min()) >= 0
        for g in results
    )
    for edge, call, got in zip(CASES, calls, results, strict=True):
        graph = EdgeGraph((edge,))
        expected = edge_attribution(model, graph, b.ds.toks, b.abc.toks, mean_metric).scores[0]
        expected = expected.float()
        parts = _parts(b, metric, edge)

        def v(parts=parts, edge=edge, **how) -> Tensor:
            return eap_variant(model, parts, edge, **how)

        r = edge.receiver
        mistakes = {
            "squared_or_absolute": lambda e=expected: [e.abs(), e**2] if never_negative else None,
            "wrong_sign": lambda e=expected: -e,
            "gradient_at_corrupted": lambda v=v: v(run="corrupted"),
            "receiver_output_gradient": lambda v=v, r=r: (
                v(at="output") if r.kind == "mlp" else None
            ),
            "residual_gradient": lambda v=v, r=r: v(at="resid") if r.kind != "logits" else None,
            "not_summed_over_positions": lambda v=v: v(reduce="pos"),
            "summed_wrong_axis": lambda v=v: v(reduce="d_model"),
            "end_position_only": lambda v=v: _unless_zero(v(reduce="end")),
            "mean_over_positions": lambda e=expected, n=b.ds.toks.shape[1], d=model.cfg.d_model: [
                e / n,
                e / d,
                e / (n * d),
            ],
            "sum_not_mean": lambda e=expected: e * b.ds.N,
            "averaged_twice": lambda e=expected: e / b.ds.N,
            "clean_activation_only": lambda v=v: v(delta="clean"),
            "wrong_head": lambda v=v, edge=edge: [
                v(**shift) for shift in _neighbours(edge, model.cfg.n_heads)
            ],
            "whole_layer_sender": lambda v=v, edge=edge: (
                v(delta="layer") if edge.sender.kind == "head" else None
            ),
            "zero_score": lambda: torch.tensor(0.0),
        }
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-6, rtol=1e-3)
    ex.passed(f"{len(CASES)} edges of every sender and receiver kind agree with ioi.edges")
