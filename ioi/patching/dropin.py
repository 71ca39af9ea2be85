"""Drop-in replacements for ``transformer_lens.patching.get_act_patch_*``.

Same names, same arguments ``(model, corrupted_tokens, clean_cache, patching_metric)``, same
result shapes and values (to float rounding), but computed by `ioi.patching.engine`: many sites
per forward pass, each pass starting at its layer. Each also takes keyword-only knobs:
``max_sites_per_pass``, ``memory_budget`` (bytes) and ``progress``.

Differences from TransformerLens, on purpose:

- MLP sweeps on attn-only models raise `ValueError` (TransformerLens silently returns the
  unpatched metric everywhere, as the MLP hook never fires).
- For k/v under grouped-query attention the head axis indexes kv heads (as TransformerLens
  intends); the ``*_every`` functions pad those rows with zeros to ``n_heads`` like TransformerLens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from ioi.inputs import check_model_tokens
from ioi.patching.engine import Metric, patch_sites
from ioi.patching.sources import RunSource, check_cache
from ioi.patching.sweep import Sweep, sweep


@dataclass(frozen=True)
class _Knobs:
    max_sites_per_pass: int | None
    memory_budget: int | None
    progress: bool


def _patch(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    metric: Metric,
    grids: list[Sweep],
    knobs: _Knobs,
) -> list[Tensor]:
    """Patch all grids' sites in one engine call (so they share passes); one tensor per grid."""
    sites = [site for grid in grids for site in grid.sites]
    values = patch_sites(
        model,
        corrupted_tokens,
        sites,
        metric,
        RunSource(clean_cache, role="clean_cache"),
        max_sites_per_pass=knobs.max_sites_per_pass,
        memory_budget=knobs.memory_budget,
        progress=knobs.progress,
    )
    sizes = [len(grid.sites) for grid in grids]
    return [
        chunk.reshape(grid.shape) for chunk, grid in zip(values.split(sizes), grids, strict=True)
    ]


def _n_pos(
    model: HookedTransformer,
    corrupted_tokens: object,
    clean_cache: object,
) -> int:
    """Check the inputs every drop-in shares (before any sweep is built); their sequence length."""
    tokens = check_model_tokens(model, corrupted_tokens, "corrupted_tokens")
    check_cache(clean_cache, "clean_cache")
    return tokens.shape[1]


def _pad_heads(result: Tensor, n_heads: int) -> Tensor:
    """Zero-pad the last (head) axis to ``n_heads``, as TransformerLens does for kv heads."""
    return torch.nn.functional.pad(result, (0, n_heads - result.shape[-1]))


def get_act_patch_attn_head_all_pos_every(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "component layer head"]:
    """Denoising patch of every head's output, query, key, value and pattern at all positions.

    Same arguments and result as
    ``transformer_lens.patching.get_act_patch_attn_head_all_pos_every``; all five sweeps share
    forward passes.

    Returns:
        [5, n_layers, n_heads] for (z, q, k, v, pattern); k/v rows beyond
        ``n_key_value_heads`` are zero under grouped-query attention.
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    n_pos = _n_pos(model, corrupted_tokens, clean_cache)
    grids = [sweep(model, c, n_pos, positions="all") for c in ("z", "q", "k", "v", "pattern")]
    results = _patch(model, corrupted_tokens, clean_cache, metric, grids, knobs)
    return torch.stack([_pad_heads(r, model.cfg.n_heads) for r in results])


def get_act_patch_attn_head_by_pos_every(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "component layer pos head"]:
    """Denoising patch of every head's output, query, key, value and pattern row, per position.

    Same arguments and result as
    ``transformer_lens.patching.get_act_patch_attn_head_by_pos_every``.

    Returns:
        [5, n_layers, pos, n_heads] for (z, q, k, v, pattern by destination position); k/v
        entries beyond ``n_key_value_heads`` are zero under grouped-query attention.
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    n_pos = _n_pos(model, corrupted_tokens, clean_cache)
    grids = [sweep(model, c, n_pos, positions="each") for c in ("z", "q", "k", "v")]
    grids.append(
        sweep(model, "pattern", n_pos, positions="each", axes=("layer", "dest_pos", "head"))
    )
    results = _patch(model, corrupted_tokens, clean_cache, metric, grids, knobs)
    return torch.stack([_pad_heads(r, model.cfg.n_heads) for r in results])


def get_act_patch_block_every(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "component layer pos"]:
    """Denoising patch of resid_pre, attn_out and mlp_out at each layer and position.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_block_every``.
    Raises `ValueError` for attn-only models, which have no MLP.

    Returns:
        [3, n_layers, pos] for (resid_pre, attn_out, mlp_out).
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    n_pos = _n_pos(model, corrupted_tokens, clean_cache)
    components = ("resid_pre", "attn_out", "mlp_out")
    grids = [sweep(model, c, n_pos, positions="each") for c in components]
    return torch.stack(_patch(model, corrupted_tokens, clean_cache, metric, grids, knobs))


def get_act_patch_resid_pre(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos"]:
    """Denoising patch of the residual stream entering each block, at each position.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_resid_pre``.

    Returns:
        Metric per patch, shape [n_layers, pos].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "resid_pre", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_resid_mid(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos"]:
    """Denoising patch of the residual stream between attention and MLP of each block, at each position.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_resid_mid``.

    Returns:
        Metric per patch, shape [n_layers, pos].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "resid_mid", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_out(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos"]:
    """Denoising patch of the output of each attention layer, at each position.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_out``.

    Returns:
        Metric per patch, shape [n_layers, pos].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "attn_out", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_mlp_out(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos"]:
    """Denoising patch of the output of each MLP layer, at each position (raises for attn-only models).

    Same arguments and result as ``transformer_lens.patching.get_act_patch_mlp_out``.

    Returns:
        Metric per patch, shape [n_layers, pos].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "mlp_out", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_out_all_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head"]:
    """Denoising patch of each head's output (z) at all positions together.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos``.

    Returns:
        Metric per patch, shape [n_layers, n_heads].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "z", _n_pos(model, corrupted_tokens, clean_cache), positions="all")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_q_all_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head"]:
    """Denoising patch of each head's queries at all positions together.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_q_all_pos``.

    Returns:
        Metric per patch, shape [n_layers, n_heads].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "q", _n_pos(model, corrupted_tokens, clean_cache), positions="all")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_k_all_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head"]:
    """Denoising patch of each key head's keys at all positions together (kv heads under grouped-query attention).

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_k_all_pos``.

    Returns:
        Metric per patch, shape [n_layers, n_heads] ([n_layers, n_key_value_heads] under grouped-query attention).
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "k", _n_pos(model, corrupted_tokens, clean_cache), positions="all")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_v_all_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head"]:
    """Denoising patch of each value head's values at all positions together (kv heads under grouped-query attention).

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_v_all_pos``.

    Returns:
        Metric per patch, shape [n_layers, n_heads] ([n_layers, n_key_value_heads] under grouped-query attention).
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "v", _n_pos(model, corrupted_tokens, clean_cache), positions="all")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_pattern_all_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head"]:
    """Denoising patch of each head's whole attention pattern.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_pattern_all_pos``.

    Returns:
        Metric per patch, shape [n_layers, n_heads].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "pattern", _n_pos(model, corrupted_tokens, clean_cache), positions="all")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_out_by_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos head"]:
    """Denoising patch of each head's output (z) at each position.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_out_by_pos``.

    Returns:
        Metric per patch, shape [n_layers, pos, n_heads].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "z", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_q_by_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos head"]:
    """Denoising patch of each head's query at each position.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_q_by_pos``.

    Returns:
        Metric per patch, shape [n_layers, pos, n_heads].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "q", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_k_by_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos head"]:
    """Denoising patch of each key head's key at each position (kv heads under grouped-query attention).

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_k_by_pos``.

    Returns:
        Metric per patch, shape [n_layers, pos, n_heads] ([n_layers, pos, n_key_value_heads] under grouped-query attention).
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "k", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_v_by_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer pos head"]:
    """Denoising patch of each value head's value at each position (kv heads under grouped-query attention).

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_v_by_pos``.

    Returns:
        Metric per patch, shape [n_layers, pos, n_heads] ([n_layers, pos, n_key_value_heads] under grouped-query attention).
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "v", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_pattern_by_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head pos"]:
    """Denoising patch of each head's attention pattern row for each destination position.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_pattern_by_pos``.

    Returns:
        Metric per patch, shape [n_layers, n_heads, dest_pos].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(model, "pattern", _n_pos(model, corrupted_tokens, clean_cache), positions="each")
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]


def get_act_patch_attn_head_pattern_dest_src_pos(
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    patching_metric: Metric,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> Float[Tensor, "layer head pos pos"]:
    """Denoising patch of each single entry (destination, source) of each head's attention pattern.

    Same arguments and result as ``transformer_lens.patching.get_act_patch_attn_head_pattern_dest_src_pos``.

    Returns:
        Metric per patch, shape [n_layers, n_heads, dest_pos, src_pos].
    """
    knobs = _Knobs(max_sites_per_pass, memory_budget, progress)
    grid = sweep(
        model,
        "pattern",
        _n_pos(model, corrupted_tokens, clean_cache),
        positions="each",
        src_positions="each",
    )
    return _patch(model, corrupted_tokens, clean_cache, patching_metric, [grid], knobs)[0]
