"""Backup name movers (Wang et al. 2022, section 3.4): ablate the name movers, watch others step in.

Knock out the name movers (mean over the ABC prompts of the same template) and compare every
head's direct logit attribution before and after. If the model had no backup, the logit
difference would fall by the name movers' own attribution (the *naive prediction*); heads whose
attribution rises compensate for part of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.circuit.ablation import (
    MeanAblation,
    _check_alignment,
    _means_for,
    logit_diff_with_hooks,
    replace_where,
)
from ioi.head import Head, HeadLike
from ioi.heads import per_head_logit_diffs


@dataclass(frozen=True)
class BackupResult:
    """Direct logit attribution of every head before and after the knockout."""

    ablated: tuple[
        tuple[int, int], ...
    ]  # `Head` values when built by `backup_name_mover_experiment`
    dla_before: Float[Tensor, "layer head"]
    dla_after: Float[Tensor, "layer head"]
    logit_diff_before: float
    logit_diff_after: float

    @property
    def change(self) -> Float[Tensor, "layer head"]:
        """DLA after minus before."""
        return self.dla_after - self.dla_before

    @property
    def naive_prediction(self) -> float:
        """The logit difference expected with no compensation: before minus the ablated heads' DLA."""
        lost = sum(float(self.dla_before[lay, h]) for lay, h in self.ablated)
        return self.logit_diff_before - lost

    def backup_heads(self, min_change: float) -> list[tuple[Head, float]]:
        """Heads (not ablated) whose DLA rose by at least ``min_change``, largest first."""
        change = self.change
        found = [
            (Head(lay, h), float(change[lay, h]))
            for lay in range(change.shape[0])
            for h in range(change.shape[1])
            if (lay, h) not in self.ablated and float(change[lay, h]) >= min_change
        ]
        return sorted(found, key=lambda item: -item[1])


def _knockout_hooks(ablation: MeanAblation, heads: Sequence[Head], at: str | None) -> list:
    """``hook_z`` hooks replacing ``heads`` by their template means at ``at`` (None: everywhere)."""
    ds, model = ablation.ds, ablation.model
    _check_alignment(ablation.means, ds)
    if at is not None and at not in ds.word_idx:
        raise ValueError(f"unknown position key {at!r}; valid keys: {sorted(ds.word_idx)}")
    hooks = []
    for layer in sorted({lay for lay, _ in heads}):
        mask = torch.zeros(ds.toks.shape[0], ds.toks.shape[1], model.cfg.n_heads, dtype=torch.bool)
        for lay, h in heads:
            if lay != layer:
                continue
            if at is None:
                mask[:, :, h] = True
            else:
                mask[torch.arange(ds.N), ds.word_idx[at], h] = True  # one position per prompt

        mean = _means_for(ablation.means, ds, layer)
        hooks.append((get_act_name("z", layer), replace_where(mask, mean)))
    return hooks


def _dla_under(
    model: HookedTransformer, ablation: MeanAblation, hooks: list
) -> Float[Tensor, "layer head"]:
    """Every head's DLA at ``end`` in a run under ``hooks``."""
    ds = ablation.ds
    names = [get_act_name("z", lay) for lay in range(model.cfg.n_layers)] + ["ln_final.hook_scale"]
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        _, cache = model.run_with_cache(
            ds.toks.to(model.cfg.device), names_filter=names, return_type=None
        )
    return per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"]).detach().cpu()


def backup_name_mover_experiment(
    ablation: MeanAblation, name_movers: Sequence[HeadLike], at: str | None = "end"
) -> BackupResult:
    """Knock out ``name_movers`` (at ``at``, default ``end``) and record every head's DLA.

    Raises:
        ValueError: no heads, a head outside the model, or an unknown position key.
    """
    model = ablation.model
    heads = tuple(dict.fromkeys(Head.coerce(h) for h in name_movers))
    if not heads:
        raise ValueError("name_movers is empty; pass the heads to knock out, e.g. [(9, 9), (9, 6)]")
    bad = [str(h) for h in heads if h.layer >= model.cfg.n_layers or h.head >= model.cfg.n_heads]
    if bad:
        raise ValueError(
            f"heads {', '.join(bad)} are not in this model (layers 0..{model.cfg.n_layers - 1}, "
            f"heads 0..{model.cfg.n_heads - 1})"
        )
    hooks = _knockout_hooks(ablation, heads, at)
    return BackupResult(
        ablated=heads,
        dla_before=_dla_under(model, ablation, []),
        dla_after=_dla_under(model, ablation, hooks),
        logit_diff_before=float(logit_diff_with_hooks(model, ablation.ds).mean()),
        logit_diff_after=float(logit_diff_with_hooks(model, ablation.ds, hooks).mean()),
    )
