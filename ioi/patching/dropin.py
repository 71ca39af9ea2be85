"""Drop-in replacements for ``transformer_lens.patching.get_act_patch_*``.

Same names, same arguments ``(model, corrupted_tokens, clean_cache, patching_metric)``, same
result shapes and values (to float rounding), but computed by `ioi.patching.engine`: many sites
per forward pass, each pass starting at its layer. Each also takes keyword-only knobs:
``max_sites_per_pass``, ``memory_budget`` (bytes) and ``progress``.

Each drop-in is a real ``def`` (its own signature and docstring, for ``help`` and editors) whose
body `ioi.wrappers.body_from` supplies: the ``@_dropin(...)`` line above it names the grids it
sweeps, and `_run` is the one body they all share.

Differences from TransformerLens, on purpose:

- MLP sweeps on attn-only models raise `ValueError` (TransformerLens silently returns the
  unpatched metric everywhere, as the MLP hook never fires).
- For k/v under grouped-query attention the head axis indexes kv heads (as TransformerLens
  intends); the ``*_every`` functions pad those rows with zeros to ``n_heads`` like TransformerLens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from ioi.inputs import check_model_tokens
from ioi.patching.engine import Metric, patch_sites
from ioi.patching.sources import RunSource, check_cache
from ioi.patching.sweep import Sweep, sweep
from ioi.wrappers import F, body_from


@dataclass(frozen=True)
class _Grid:
    """One sweep of a drop-in: a component at all positions together or at each position."""

    component: str
    positions: str  # "all" or "each"
    src_positions: str = "all"  # pattern only: "each" sweeps single (dest, src) entries
    axes: tuple[str, ...] | None = None  # result axes, if not sweep()'s default order

    def build(self, model: HookedTransformer, n_pos: int) -> Sweep:
        return sweep(
            model,
            self.component,
            n_pos,
            positions=self.positions,
            src_positions=self.src_positions,
            axes=self.axes,
        )


def _dropin(*grids: _Grid, pad_heads: bool = False) -> Callable[[F], F]:
    """The body of a drop-in that sweeps ``grids``: one grid's result, or all of them stacked
    (head axes zero-padded to ``n_heads`` if ``pad_heads``, as TransformerLens's ``*_every``)."""
    return body_from(_run, grids, pad_heads)


def _run(
    grids: tuple[_Grid, ...],
    pad_heads: bool,
    model: HookedTransformer,
    corrupted_tokens: Int[Tensor, "batch pos"],
    clean_cache: ActivationCache | Mapping[str, Tensor],
    metric: Metric,
    *,
    max_sites_per_pass: int | None,
    memory_budget: int | None,
    progress: bool,
) -> Tensor:
    """Check the inputs, then patch all grids' sites in one engine call (so they share passes)."""
    tokens = check_model_tokens(model, corrupted_tokens, "corrupted_tokens")
    check_cache(clean_cache, "clean_cache")
    sweeps = [grid.build(model, tokens.shape[1]) for grid in grids]
    values = patch_sites(
        model,
        corrupted_tokens,
        [site for s in sweeps for site in s.sites],
        metric,
        RunSource(clean_cache, role="clean_cache"),
        max_sites_per_pass=max_sites_per_pass,
        memory_budget=memory_budget,
        progress=progress,
        allow_per_prompt=False,  # TransformerLens's originals take one number per site
    )
    sizes = [len(s.sites) for s in sweeps]
    results = [chunk.reshape(s.shape) for chunk, s in zip(values.split(sizes), sweeps, strict=True)]
    if len(results) == 1:
        return results[0]
    if pad_heads:  # kv heads under grouped-query attention: zero rows up to n_heads
        n_heads = model.cfg.n_heads
        results = [torch.nn.functional.pad(r, (0, n_heads - r.shape[-1])) for r in results]
    return torch.stack(results)


@_dropin(*(_Grid(c, "all") for c in ("z", "q", "k", "v", "pattern")), pad_heads=True)
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
    ...


@_dropin(
    *(_Grid(c, "each") for c in ("z", "q", "k", "v")),
    _Grid("pattern", "each", axes=("layer", "dest_pos", "head")),
    pad_heads=True,
)
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
    ...


@_dropin(*(_Grid(c, "each") for c in ("resid_pre", "attn_out", "mlp_out")))
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
    ...


@_dropin(_Grid("resid_pre", "each"))
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
    ...


@_dropin(_Grid("resid_mid", "each"))
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
    ...


@_dropin(_Grid("attn_out", "each"))
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
    ...


@_dropin(_Grid("mlp_out", "each"))
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
    ...


@_dropin(_Grid("z", "all"))
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
    ...


@_dropin(_Grid("q", "all"))
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
    ...


@_dropin(_Grid("k", "all"))
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
    ...


@_dropin(_Grid("v", "all"))
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
    ...


@_dropin(_Grid("pattern", "all"))
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
    ...


@_dropin(_Grid("z", "each"))
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
    ...


@_dropin(_Grid("q", "each"))
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
    ...


@_dropin(_Grid("k", "each"))
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
    ...


@_dropin(_Grid("v", "each"))
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
    ...


@_dropin(_Grid("pattern", "each"))
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
    ...


@_dropin(_Grid("pattern", "each", src_positions="each"))
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
    ...
