"""`activation_patching`: patch a sweep of sites in either direction and get a `PatchResult`.

Modes:

- ``denoise``: run the corrupted prompts and patch in clean activations. A large effect means
  the site *suffices* to restore the behaviour. (This is what TransformerLens's
  ``get_act_patch_*`` functions do.)
- ``noise``: run the clean prompts and patch in corrupted activations. A large effect means
  the behaviour *needs* the site.

``ablation="zero"`` or ``"mean"`` replaces the patched-in values by zeros or by the batch mean
of the source run (or of ``mean_cache``), keeping the mode's choice of run to patch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from ioi.inputs import check_baseline_finite, check_token_pair
from ioi.patching.engine import Metric, metric_output, patch_sites
from ioi.patching.result import PatchResult
from ioi.patching.sites import Site
from ioi.patching.sources import MeanSource, RunSource, Source, ZeroSource
from ioi.patching.sweep import Sweep

MODES = ("denoise", "noise")
ABLATIONS = (None, "zero", "mean")


def activation_patching(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    sites: Sweep | Sequence[Site],
    *,
    mode: str = "denoise",
    ablation: str | None = None,
    mean_cache: ActivationCache | None = None,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> PatchResult:
    """Patch every site of a sweep and measure the metric.

    Args:
        model: any `HookedTransformer`.
        clean_tokens: prompts where the model shows the behaviour, [batch, pos].
        corrupted_tokens: same-shaped prompts where it does not.
        metric: ``logits [batch, pos, d_vocab] -> scalar``, e.g. from `ioi.metrics`; or
            ``-> [batch]`` (``reduce="none"``): the result then keeps per-prompt effects and
            gives intervals (`PatchResult.interval`), with ``effect`` their mean.
        sites: a `Sweep` (results keep its axes) or a list of sites (one ``site`` axis).
        mode: ``"denoise"`` or ``"noise"`` (see module docs).
        ablation: ``None`` (patch from the other run), ``"zero"`` or ``"mean"``.
        mean_cache: for mean ablation, the run to average over (default: the source run).
        max_sites_per_pass, memory_budget, progress: see `ioi.patching.engine.patch_sites`.

    Returns:
        A `PatchResult` with both baselines.

    Example:
        >>> grid = sweep(model, "z", n_pos=tokens.shape[1])
        >>> result = activation_patching(model, clean, corrupt, metric, grid, mode="noise")
        >>> heatmap(result).show()  # ioi.patching.heatmap
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; valid: None, 'zero', 'mean'")
    check_token_pair(model, clean_tokens, corrupted_tokens)
    grid = sites if isinstance(sites, Sweep) else Sweep.from_sites(sites)
    grid.check(model, *clean_tokens.shape)
    receiver, donor = (
        (corrupted_tokens, clean_tokens) if mode == "denoise" else (clean_tokens, corrupted_tokens)
    )
    names = {site.hook_name for site in grid.sites}
    donor_values, donor_cache = _run_cached(model, donor, metric, names)
    with torch.inference_mode():
        receiver_values = metric_output(metric, model(receiver))
    donor_metric, receiver_metric = float(donor_values.mean()), float(receiver_values.mean())
    check_baseline_finite(
        donor_metric, f"the unpatched {'clean' if mode == 'denoise' else 'corrupted'} run"
    )
    check_baseline_finite(
        receiver_metric, f"the unpatched {'corrupted' if mode == 'denoise' else 'clean'} run"
    )
    source = _source(ablation, donor_cache, mean_cache)
    effect = patch_sites(
        model,
        receiver,
        grid.sites,
        metric,
        source,
        max_sites_per_pass=max_sites_per_pass,
        memory_budget=memory_budget,
        progress=progress,
    )
    clean, corrupted = (
        (donor_metric, receiver_metric) if mode == "denoise" else (receiver_metric, donor_metric)
    )
    per_prompt = effect.ndim == 2  # [site, batch] from a per-prompt metric
    values = effect.reshape(*grid.shape, -1) if per_prompt else None
    runs = (donor_values, receiver_values) if mode == "denoise" else (receiver_values, donor_values)
    return PatchResult(
        effect=values.mean(-1) if per_prompt else effect.reshape(grid.shape),
        sweep=grid,
        clean_baseline=clean,
        corrupted_baseline=corrupted,
        mode=mode,
        source=ablation or "run",
        per_prompt=values,
        clean_per_prompt=_per_prompt_or_none(runs[0], per_prompt),
        corrupted_per_prompt=_per_prompt_or_none(runs[1], per_prompt),
    )


def _per_prompt_or_none(values: Tensor, keep: bool) -> Tensor | None:
    if not keep:
        return None
    if values.ndim != 1:
        raise ValueError(
            "the metric returned a scalar on an unpatched run but [batch] when patched"
        )
    return values.detach().clone()


def _run_cached(
    model: HookedTransformer, tokens: Tensor, metric: Metric, names: set[str]
) -> tuple[Tensor, ActivationCache]:
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        return metric_output(metric, logits), cache


def _source(
    ablation: str | None, donor_cache: ActivationCache, mean_cache: ActivationCache | None
) -> Source:
    if ablation == "zero":
        return ZeroSource()
    if ablation == "mean":
        return MeanSource(donor_cache if mean_cache is None else mean_cache)
    return RunSource(donor_cache, role="cache of the source run")
