"""Section 6 answers: the EAP score of one edge."""

from __future__ import annotations

import contextlib

import torch
from transformer_lens.utilities import get_act_name

from ioi.edges.runs import receiver_hook, sender_delta, split_inputs
from tests.checks.corpus import correct, variant, wrong


def _delta(model, clean, corrupted, sender, *, shift=0, whole_layer=False, clean_only=False):
    if sender.kind == "head" and whole_layer:
        name = get_act_name("attn_out", sender.layer)
        return corrupted[name] - clean[name]
    if sender.kind == "head":
        h = sender.head + shift
        W_O = model.W_O[sender.layer, h]
        z_clean = clean["z", sender.layer][:, :, h]
        return (
            z_clean @ W_O if clean_only else (corrupted["z", sender.layer][:, :, h] - z_clean) @ W_O
        )
    name = "resid_pre" if sender.kind == "embed" else "mlp_out"
    if clean_only:
        return clean[name, sender.layer]
    return corrupted[name, sender.layer] - clean[name, sender.layer]


def _hook_name(model, receiver, at):
    if at == "output" and receiver.kind == "mlp":
        return get_act_name("mlp_out", receiver.layer)
    if at == "resid":
        if receiver.kind == "mlp":
            return get_act_name("resid_mid", receiver.layer)
        if receiver.kind != "logits":
            return get_act_name("resid_pre", receiver.layer)
    return receiver_hook(model, receiver)


def _eap(
    model,
    clean_tokens,
    corrupted_tokens,
    metric,
    edge,
    *,
    sign=1.0,
    grad_on="clean",
    at="input",
    reduce="score",
    shift=0,
    whole_layer=False,
    clean_only=False,
    post=None,
    detached=False,
    restore_flags=True,
    head_sum=False,
    grads_enabled=True,
):
    _, clean = model.run_with_cache(clean_tokens)
    _, corrupted = model.run_with_cache(corrupted_tokens)
    delta = sign * _delta(
        model,
        clean,
        corrupted,
        edge.sender,
        shift=shift,
        whole_layer=whole_layer,
        clean_only=clean_only,
    )
    kept = {}

    def keep(act, hook):
        if detached:  # keeps a copy the model never uses
            kept["x"] = act.detach().clone().requires_grad_()
            return act
        act = act if act.requires_grad else act.requires_grad_()
        kept["x"] = act
        return act

    name = _hook_name(model, edge.receiver, at)
    tokens = clean_tokens if grad_on == "clean" else corrupted_tokens
    old = (model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    try:
        grads_on = torch.enable_grad() if grads_enabled else contextlib.nullcontext()
        with grads_on, model.hooks(fwd_hooks=[(name, keep)]):
            logits = model(tokens)
            values = metric(logits)
            value = values.mean() if reduce == "twice" else values.sum()
            (grad,) = torch.autograd.grad(
                value, kept["x"], allow_unused=detached, materialize_grads=detached
            )
    finally:
        if restore_flags:
            model.cfg.use_split_qkv_input, model.cfg.use_hook_mlp_in = old
    if grad.ndim == 4:  # head_sum: every head's slice added up, not this receiver's
        grad = grad.sum(2) if head_sum else grad[:, :, edge.receiver.head]
    product = delta * grad
    if reduce == "pos":
        out = product.sum(-1).mean(0)
    elif reduce == "d_model":
        out = product.sum(1).mean(0)
    elif reduce == "sum":
        out = product.sum()
    elif reduce == "mean_pos":
        out = product.sum(-1).mean(1).mean()
    elif reduce == "mean_all":
        out = product.mean()
    else:
        out = product.sum((1, 2)).mean()
    return post(out) if post else out


variant("eap_edge_score", "wrong_sign", _eap, "clean - corrupted.", sign=-1.0)
variant(
    "eap_edge_score",
    "gradient_at_corrupted",
    _eap,
    "Gradient on the corrupted run.",
    grad_on="corrupted",
)
variant(
    "eap_edge_score",
    "receiver_output_gradient",
    _eap,
    "MLP receiver: gradient at hook_mlp_out.",
    at="output",
)
variant("eap_edge_score", "residual_gradient", _eap, "Gradient at the residual stream.", at="resid")
variant(
    "eap_edge_score",
    "not_summed_over_positions",
    _eap,
    "Summed over d_model only.",
    reduce="pos",
)
variant(
    "eap_edge_score",
    "summed_wrong_axis",
    _eap,
    "Summed over positions, not d_model.",
    reduce="d_model",
)
variant("eap_edge_score", "sum_not_mean", _eap, "Summed over prompts.", reduce="sum")
variant(
    "eap_edge_score",
    "mean_over_positions",
    _eap,
    "Averaged over positions, not summed.",
    reduce="mean_pos",
)
variant(
    "eap_edge_score",
    "mean_over_positions",
    _eap,
    "(delta * grad).mean(): averaged over positions and d_model too.",
    fn_name="eap_mean_all",
    reduce="mean_all",
)
variant(
    "eap_edge_score",
    "gradients_off",
    _eap,
    "No torch.enable_grad(): in the notebook autograd finds no graph.",
    grads_enabled=False,
)
variant(
    "eap_edge_score",
    "averaged_twice",
    _eap,
    "Gradient of metric.mean(), then .mean().",
    reduce="twice",
)
variant("eap_edge_score", "clean_activation_only", _eap, "a_u(clean) . grad.", clean_only=True)
variant("eap_edge_score", "wrong_head", _eap, "Sender head + 1.", shift=1)
variant(
    "eap_edge_score",
    "whole_layer_sender",
    _eap,
    "The attention layer's change.",
    whole_layer=True,
)
variant(
    "eap_edge_score",
    "squared_or_absolute",
    _eap,
    "abs() of the score.",
    post=torch.abs,
    fn_name="eap_abs",
)
variant(
    "eap_edge_score",
    "squared_or_absolute",
    _eap,
    "The score squared.",
    post=lambda x: x**2,
    fn_name="eap_squared",
)
variant("eap_edge_score", "zero_score", _eap, "Gradient of a detached copy: zeros.", detached=True)
variant(
    "eap_edge_score",
    "flag_left_on",
    _eap,
    "Split-input flags never restored.",
    restore_flags=False,
)


@wrong("eap_edge_score", "end_position_only")
def eap_at_end(model, clean_tokens, corrupted_tokens, metric, edge):
    """Only each prompt's end position (taken from the metric's declared positions)."""
    _, clean = model.run_with_cache(clean_tokens)
    _, corrupted = model.run_with_cache(corrupted_tokens)
    delta = sender_delta(model, edge.sender, dict(clean.items()), dict(corrupted.items()))
    grad = _receiver_grad(model, clean_tokens, metric, edge)
    end = metric.logit_positions
    rows = torch.arange(delta.shape[0])
    return (delta[rows, end] * grad[rows, end]).sum(-1).mean()


@wrong("eap_edge_score", "hooks_left")
def eap_hook_left(model, clean_tokens, corrupted_tokens, metric, edge):
    """Adds its hook with model.add_hook and never removes it."""
    kept = {}
    name = receiver_hook(model, edge.receiver)

    def keep(act, hook):
        act = act if act.requires_grad else act.requires_grad_()
        kept["x"] = act
        return act

    _, clean = model.run_with_cache(clean_tokens)
    _, corrupted = model.run_with_cache(corrupted_tokens)
    delta = sender_delta(model, edge.sender, dict(clean.items()), dict(corrupted.items()))
    with split_inputs(model):
        model.add_hook(name, keep)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(metric(model(clean_tokens)).sum(), kept["x"])
    grad = grad[:, :, edge.receiver.head] if grad.ndim == 4 else grad
    return (delta * grad).sum((1, 2)).mean()


# ---- answers the checker was not designed for: they must still fail ---------------------------


variant(
    "eap_edge_score",
    "wrong_values",
    _eap,
    "q/k/v receivers: the gradient summed over the head axis of the split input.",
    head_sum=True,
    fn_name="eap_heads_summed",
)


@wrong("eap_edge_score", "wrong_values")
def eap_midpoint_gradient(model, clean_tokens, corrupted_tokens, metric, edge):
    """The mean of the clean and the corrupted gradients (a two-point EAP-IG of its own)."""
    a = _eap(model, clean_tokens, corrupted_tokens, metric, edge)
    b = _eap(model, clean_tokens, corrupted_tokens, metric, edge, grad_on="corrupted")
    return (a + b) / 2


# ---- correct alternatives ----------------------------------------------------------------------


def _receiver_grad(model, tokens, metric, edge):
    name = receiver_hook(model, edge.receiver)
    probe = {}

    def add_probe(act, hook):
        probe["x"] = torch.zeros_like(act, requires_grad=True)
        return act + probe["x"]

    with torch.enable_grad(), split_inputs(model), model.hooks(fwd_hooks=[(name, add_probe)]):
        value = metric(model(tokens)).sum()
        (grad,) = torch.autograd.grad(value, probe["x"])
    return grad[:, :, edge.receiver.head] if grad.ndim == 4 else grad


@correct("eap_edge_score", "a zero probe added at the receiver; the library's sender_delta")
def eap_probe(model, clean_tokens, corrupted_tokens, metric, edge):
    _, clean = model.run_with_cache(clean_tokens)
    _, corrupted = model.run_with_cache(corrupted_tokens)
    delta = sender_delta(model, edge.sender, dict(clean.items()), dict(corrupted.items()))
    grad = _receiver_grad(model, clean_tokens, metric, edge)
    return torch.einsum("bpd,bpd->b", delta, grad).mean()


@correct("eap_edge_score", "gradient of the mean metric, products summed over prompts")
def eap_mean_metric(model, clean_tokens, corrupted_tokens, metric, edge):
    _, clean = model.run_with_cache(clean_tokens)
    _, corrupted = model.run_with_cache(corrupted_tokens)
    delta = sender_delta(model, edge.sender, dict(clean.items()), dict(corrupted.items()))
    grad = _receiver_grad(model, clean_tokens, lambda logits: metric(logits).mean(), edge)
    return (delta * grad).sum()


@correct("eap_edge_score", "a TransformerLens backward hook; .backward() of the mean metric")
def eap_backward_hook(model, clean_tokens, corrupted_tokens, metric, edge):
    _, clean = model.run_with_cache(clean_tokens)
    _, corrupted = model.run_with_cache(corrupted_tokens)
    delta = sender_delta(model, edge.sender, dict(clean.items()), dict(corrupted.items()))
    grads = {}

    def save(grad, hook):
        grads["g"] = grad.detach()

    name = receiver_hook(model, edge.receiver)
    with torch.enable_grad(), split_inputs(model), model.hooks(bwd_hooks=[(name, save)]):
        metric(model(clean_tokens)).mean().backward()
    model.zero_grad(set_to_none=True)
    grad = grads["g"][:, :, edge.receiver.head] if grads["g"].ndim == 4 else grads["g"]
    return torch.einsum("bpd,bpd->", delta, grad)
