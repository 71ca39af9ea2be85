"""Path patching the plain way: one sender per forward pass, hooks doing everything.

This is the literal algorithm, kept as the reference the fast engine is tested against and
timed against (``python -m ioi.bench path``). Read it first: the fast engine computes the same
numbers without running attention in the frozen passes.

    1. Cache the clean and the corrupted run.
    2. Patched pass: run the clean input with every head's ``hook_z`` frozen to the clean
       cache, except the sender, which takes its corrupted value (MLPs recomputed).
       Either read the logits (to the final residual) or record the receivers' q/k/v.
    3. Receivers only: run the clean input again with the receivers' inputs overwritten
       by the recorded values, and read the logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.patching.readout import Metric
from ioi.path_patching.nodes import (
    Receiver,
    Sender,
    check_sender,
)
from ioi.path_patching.positions import (
    DatasetLike,
    PositionSpec,
    dataset_tokens,
    position_mask,
    resolve_positions,
)


def _cache_runs(
    model: HookedTransformer, corrupted_toks: Tensor, clean_toks: Tensor
) -> tuple[ActivationCache, ActivationCache]:
    """Step 1: full caches of both runs (corrupted, clean)."""
    _, corrupted_cache = model.run_with_cache(corrupted_toks.to(model.cfg.device))
    _, clean_cache = model.run_with_cache(clean_toks.to(model.cfg.device))
    return corrupted_cache, clean_cache


def _freezing_hooks(
    model: HookedTransformer,
    sender: Sender,
    corrupted_cache: ActivationCache,
    clean_cache: ActivationCache,
    where: Tensor,
) -> list:
    """Hooks that freeze every head to the clean run and patch the sender (its corrupted
    value) at ``where``."""

    def freeze_z(z: Tensor, hook) -> Tensor:  # z: [batch, pos, head, d_head]
        frozen = clean_cache[hook.name].clone()
        if sender.kind == "head" and hook.layer() == sender.layer:
            corrupted = corrupted_cache[hook.name]
            frozen[:, :, sender.head][where] = corrupted[:, :, sender.head][where]
        return frozen

    def patch_mlp(out: Tensor, hook) -> Tensor:  # out: [batch, pos, d_model]
        patched = out.clone()
        patched[where] = corrupted_cache[hook.name][where]
        return patched

    hooks = [(get_act_name("z", layer), freeze_z) for layer in range(model.cfg.n_layers)]
    if sender.kind == "mlp":
        hooks.append((get_act_name("mlp_out", sender.layer), patch_mlp))
    return hooks


def plain_path_patch(
    model: HookedTransformer,
    patching_metric: Metric,
    corrupted_dataset: DatasetLike,
    clean_dataset: DatasetLike,
    sender: Sender,
    receivers: Sequence[Receiver] | None = None,
    *,
    corrupted_cache: ActivationCache | None = None,
    clean_cache: ActivationCache | None = None,
    sender_positions: PositionSpec = None,
    receiver_positions: PositionSpec = None,
) -> Tensor:
    """Path patching for one sender, by hooks on a full forward pass (the reference).

    Arguments as in `ioi.path_patching.path_patch`, for one sender; both caches are computed
    unless both are given.

    Returns:
        The metric of the patched logits (as a CPU tensor).
    """
    check_sender(model, sender)
    corrupted_toks = dataset_tokens(corrupted_dataset, "corrupted_dataset").to(model.cfg.device)
    clean_toks = dataset_tokens(clean_dataset, "clean_dataset").to(model.cfg.device)
    batch, n_pos = clean_toks.shape
    sender_where = position_mask(
        resolve_positions(sender_positions, clean_dataset, "sender_positions"), batch, n_pos
    ).to(model.cfg.device)
    if corrupted_cache is None or clean_cache is None:
        corrupted_cache, clean_cache = _cache_runs(model, corrupted_toks, clean_toks)
    freeze = _freezing_hooks(model, sender, corrupted_cache, clean_cache, sender_where)
    with torch.no_grad():
        if receivers is None:  # 2. patched pass, read the logits
            with model.hooks(fwd_hooks=freeze):
                logits = model(clean_toks)
            return torch.as_tensor(patching_metric(logits)).float().cpu()
        recorded: dict[str, Tensor] = {}

        def record(act: Tensor, hook) -> None:
            recorded[hook.name] = act.clone()

        names = sorted({get_act_name(r.input, r.layer) for r in receivers})
        with model.hooks(fwd_hooks=freeze + [(n, record) for n in names]):  # 2. record
            model(clean_toks)
        recv_where = position_mask(
            resolve_positions(receiver_positions, clean_dataset, "receiver_positions"),
            batch,
            n_pos,
        ).to(model.cfg.device)

        def overwrite(act: Tensor, hook) -> Tensor:  # 3. act: [batch, pos, head, d_head]
            for r in receivers:
                if get_act_name(r.input, r.layer) == hook.name:
                    act[:, :, r.head][recv_where] = recorded[hook.name][:, :, r.head][recv_where]
            return act

        with model.hooks(fwd_hooks=[(n, overwrite) for n in names]):
            logits = model(clean_toks)
        return torch.as_tensor(patching_metric(logits)).float().cpu()


def plain_path_patch_head_to_final_resid_post(
    model: HookedTransformer,
    patching_metric: Metric,
    corrupted_dataset: DatasetLike,
    clean_dataset: DatasetLike,
    *,
    sender_positions: PositionSpec = None,
) -> Float[Tensor, "layer head"]:
    """Every head to the logits, one forward pass per head (the reference for the benchmark)."""
    corrupted_toks = dataset_tokens(corrupted_dataset, "corrupted_dataset")
    clean_toks = dataset_tokens(clean_dataset, "clean_dataset")
    with torch.no_grad():
        corrupted_cache, clean_cache = _cache_runs(model, corrupted_toks, clean_toks)
    grid = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            grid[layer, head] = plain_path_patch(
                model,
                patching_metric,
                corrupted_dataset,
                clean_dataset,
                Sender("head", layer, head),
                corrupted_cache=corrupted_cache,
                clean_cache=clean_cache,
                sender_positions=sender_positions,
            )
    return grid
