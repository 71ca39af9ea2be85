"""Mean ablation of every head outside a circuit (Wang et al. 2022, section 4).

A head outside the circuit has its output (``hook_z``) replaced by its mean over the reference
(ABC) prompts *of the same template*, so positions line up token by token. A circuit head
keeps its own output only at its class's position, per prompt: for prompt ``i`` a head of a
class kept at ``"S2"`` keeps ``z[i, word_idx["S2"][i]]`` and is mean-ablated everywhere else.
MLPs are never ablated. Every hook lives only inside one call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.dataset import IOIDataset
from ioi.head import Head

KeepMap = Mapping[tuple[int, int], Sequence[str] | None]  # a Head or any (layer, head) pair
"""head -> the word_idx keys where it keeps its output (None: every position)."""


@dataclass(frozen=True)
class TemplateMeans:
    """Every head's ``z`` averaged over the reference prompts of each template.

    ``z[layer]`` is [template, pos, head, d_head]; ``row_of`` maps a template index to its
    row; ``seq_len`` holds each template's token count (prompts of a template align).
    """

    z: tuple[Tensor, ...]
    row_of: Mapping[int, int]
    seq_len: Mapping[int, int]


@torch.no_grad()
def template_means(model: HookedTransformer, ref: IOIDataset) -> TemplateMeans:
    """Per-template means of every head's output over ``ref`` (e.g. the ABC dataset)."""
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(
        ref.toks.to(model.cfg.device), names_filter=names, return_type=None
    )
    rows = {int(ref.template_idx[g[0]]): i for i, g in enumerate(ref.groups)}
    seq_len = {int(ref.template_idx[g[0]]): int(ref.seq_lens[g[0]]) for g in ref.groups}
    z = tuple(
        torch.stack([cache[name][g.to(cache[name].device)].mean(0) for g in ref.groups])
        for name in names
    )
    return TemplateMeans(z, rows, seq_len)


def _check_alignment(means: TemplateMeans, ds: IOIDataset) -> None:
    templates = sorted(set(ds.template_idx.tolist()))
    missing = [t for t in templates if t not in means.row_of]
    if missing:
        raise ValueError(
            f"templates {missing} of the dataset are not in the reference dataset (which has "
            f"{sorted(means.row_of)}); build the reference from the same prompts, e.g. "
            "ds.gen_flipped_prompts('ABB->XYZ, BAB->XYZ')"
        )
    for g in ds.groups:
        t = int(ds.template_idx[g[0]])
        if int(ds.seq_lens[g[0]]) != means.seq_len[t]:
            raise ValueError(
                f"template {t} has {int(ds.seq_lens[g[0]])} tokens here but {means.seq_len[t]} "
                "in the reference dataset (different prepend_bos?); positions must align"
            )


def _means_for(
    means: TemplateMeans, ds: IOIDataset, layer: int
) -> Float[Tensor, "batch pos head d_head"]:
    """Each prompt's template mean, cut or zero-padded to the dataset's width."""
    per_template = means.z[layer]
    rows = torch.tensor([means.row_of[int(t)] for t in ds.template_idx], device=per_template.device)
    expanded = per_template[rows]  # [batch, ref_pos, head, d_head]
    n_pos = ds.toks.shape[1]
    if expanded.shape[1] >= n_pos:
        return expanded[:, :n_pos]
    pad = expanded.new_zeros(expanded.shape[0], n_pos - expanded.shape[1], *expanded.shape[2:])
    return torch.cat([expanded, pad], dim=1)  # padding lies past every prompt's end


def keep_masks(
    model: HookedTransformer, ds: IOIDataset, keep: KeepMap
) -> list[Bool[Tensor, "batch pos head"]]:
    """Per layer, True where a head keeps its own output (per prompt, at its own positions).

    Raises:
        ValueError: a position key not in ``ds.word_idx`` (the valid keys are listed) or a
            head outside the model.
        TypeError: an entry that is one string, not a tuple of keys.
    """
    batch, n_pos = ds.toks.shape
    masks = [
        torch.zeros(batch, n_pos, model.cfg.n_heads, dtype=torch.bool)
        for _ in range(model.cfg.n_layers)
    ]
    rows = torch.arange(batch)
    for (layer, head), keys in keep.items():
        if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
            raise ValueError(
                f"head {Head(layer, head)} is not in this model (layers 0..{model.cfg.n_layers - 1}, "
                f"heads 0..{model.cfg.n_heads - 1})"
            )
        if keys is None:
            masks[layer][:, :, head] = True
            continue
        if isinstance(keys, str):
            raise TypeError(
                f"keep[{Head(layer, head)}] is the string {keys!r}; an entry is a tuple of "
                f"position keys, e.g. ({keys!r},), or None for every position"
            )
        for key in keys:
            if key not in ds.word_idx:
                raise ValueError(f"unknown position key {key!r}; valid keys: {sorted(ds.word_idx)}")
            masks[layer][rows, ds.word_idx[key], head] = True  # one position per prompt
    return masks


def mean_ablation_hooks(
    model: HookedTransformer, ds: IOIDataset, means: TemplateMeans, keep: KeepMap
) -> list[tuple[str, object]]:
    """``hook_z`` hooks that mean-ablate every head except where ``keep`` keeps it."""
    _check_alignment(means, ds)
    hooks = []
    for layer, mask in enumerate(keep_masks(model, ds, keep)):
        if bool(mask.all()):
            continue  # nothing ablated in this layer

        mean = _means_for(means, ds, layer)
        hooks.append((get_act_name("z", layer), replace_where(~mask, mean)))
    return hooks


def replace_where(mask: Bool[Tensor, "batch pos head"], values: Tensor):
    """A ``hook_z`` hook writing ``values`` [batch, pos, head, d_head] where ``mask`` is True."""

    def hook_fn(z: Tensor, hook) -> Tensor:  # z: [batch, pos, head, d_head]
        return torch.where(mask.to(z.device)[..., None], values.to(z.device, z.dtype), z)

    return hook_fn


@torch.no_grad()
def answer_logit_diff(
    model: HookedTransformer,
    toks: Int[Tensor, "batch pos"],
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"],
    hooks: Sequence[tuple[str, object]] = (),
) -> Float[Tensor, " batch"]:
    """Per-prompt logit difference (correct - incorrect) at ``positions`` under ``hooks``,
    unembedding only the two answer columns (a logit difference needs no other)."""
    with model.hooks(fwd_hooks=list(hooks)):
        resid = model(toks.to(model.cfg.device), stop_at_layer=model.cfg.n_layers)
    rows = torch.arange(toks.shape[0], device=resid.device)
    at = resid[rows, positions.to(resid.device)][:, None]  # [batch, 1, d_model] for ln_final
    normed = model.ln_final(at)[:, 0]
    answers = answer_tokens.to(resid.device)
    logits = (
        einops.einsum(
            normed, model.W_U[:, answers], "batch d_model, d_model batch two -> batch two"
        )
        + model.b_U[answers]
    )
    return (logits[:, 0] - logits[:, 1]).float().cpu()


def logit_diff_with_hooks(
    model: HookedTransformer, ds: IOIDataset, hooks: Sequence[tuple[str, object]] = ()
) -> Float[Tensor, " batch"]:
    """Per-prompt IO - S logit difference at ``end`` of ``ds`` under ``hooks``."""
    return answer_logit_diff(model, ds.toks, ds.answer_tokens, ds.word_idx["end"], hooks)


@dataclass(frozen=True)
class MeanAblation:
    """A model, a dataset and the reference means: evaluates ``F`` for any kept set of heads.

    Example:
        >>> ablation = MeanAblation.build(model, ioi, abc)
        >>> ablation.logit_diff(None)                      # F(M), the full model
        >>> ablation.logit_diff(circuit.kept_positions())  # F(C)
    """

    model: HookedTransformer
    ds: IOIDataset
    means: TemplateMeans

    @classmethod
    def build(cls, model: HookedTransformer, ds: IOIDataset, ref: IOIDataset) -> MeanAblation:
        """Means over ``ref`` (the ABC version of ``ds``), per template."""
        means = template_means(model, ref)
        _check_alignment(means, ds)
        return cls(model, ds, means)

    def logit_diff(self, keep: KeepMap | None, per_prompt: bool = False) -> Tensor:
        """Mean (or per-prompt) logit difference with every head outside ``keep`` ablated.

        ``keep=None`` runs the full model (no ablation); ``keep={}`` ablates every head.
        """
        hooks = [] if keep is None else mean_ablation_hooks(self.model, self.ds, self.means, keep)
        values = logit_diff_with_hooks(self.model, self.ds, hooks)
        return values if per_prompt else values.mean()

    def all_heads_except(self, removed: Sequence[tuple[int, int]]) -> dict[Head, None]:
        """Keep map of ``M \\ K``: every head everywhere, except those removed."""
        cfg = self.model.cfg
        gone = set(removed)
        return {
            Head(lay, h): None
            for lay in range(cfg.n_layers)
            for h in range(cfg.n_heads)
            if (lay, h) not in gone
        }
