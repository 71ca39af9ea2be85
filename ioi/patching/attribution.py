"""Attribution patching: a first-order estimate of every site's patching effect at once.

For a site with activation ``a`` in the run being patched and ``a'`` in the source run,

    metric(patched) - metric(receiver)  ~=  sum over the site's entries of (a' - a) * d metric / d a

with the gradient taken in the receiver run. One forward and one backward pass of the receiver
(plus one forward of the source run) estimate every site, so it is a cheap screen before exact
activation patching; `compare_with_exact` reports how well the two agree on the same sites.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.inputs import check_baseline_finite, check_metric_finite, check_token_pair
from ioi.patching.api import MODES, activation_patching
from ioi.patching.engine import Metric, metric_output, metric_value
from ioi.patching.result import PatchResult
from ioi.patching.sites import Site, n_heads_at
from ioi.patching.sweep import Sweep


def attribution_patching(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    sites: Sweep | Sequence[Site],
    *,
    mode: str = "denoise",
) -> PatchResult:
    """Estimate the patching effect of every site from one gradient.

    Args:
        model: any `HookedTransformer`.
        clean_tokens, corrupted_tokens: same-shaped prompt batches, [batch, pos].
        metric: ``logits -> scalar``; must be differentiable. A per-prompt metric
            (``-> [batch]``) gives a result with per-prompt estimates (each prompt's own
            gradient: prompts do not interact in the model), whose mean is the scalar one.
        sites: a `Sweep` or a list of sites.
        mode: ``"denoise"`` (gradient in the corrupted run, clean activations patched in) or
            ``"noise"`` (gradient in the clean run, corrupted activations patched in).

    Returns:
        A `PatchResult` with ``method="attribution"`` whose ``effect`` is the receiver's metric
        plus the estimated change, so it reads like an exact result.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {', '.join(MODES)}")
    check_token_pair(model, clean_tokens, corrupted_tokens)
    grid = sites if isinstance(sites, Sweep) else Sweep.from_sites(sites)
    grid.check(model, *clean_tokens.shape)
    receiver, donor = (
        (corrupted_tokens, clean_tokens) if mode == "denoise" else (clean_tokens, corrupted_tokens)
    )
    names = sorted({site.hook_name for site in grid.sites})
    with torch.inference_mode():
        donor_logits, donor_cache = model.run_with_cache(donor, names_filter=lambda n: n in names)
        donor_values = metric_output(metric, donor_logits)
    donor_metric = float(donor_values.mean())
    check_baseline_finite(donor_metric, "the unpatched source run")
    receiver_values, acts, grads = _gradients(model, receiver, metric, names, metric_output)
    if receiver_values.shape != donor_values.shape:
        raise ValueError("the metric returned a scalar on one run and [batch] on the other")
    receiver_metric = float(receiver_values.mean())
    estimate = []
    first_site = {site.hook_name: site for site in reversed(grid.sites)}
    products = {
        name: _product(donor_cache[name].to(acts[name].device) - acts[name], grads[name], site)
        for name, site in first_site.items()
    }
    batch, n_pos = receiver.shape
    for site in grid.sites:
        mask = site.mask(batch, n_pos, n_heads_at(site.component, model.cfg))
        masked = products[site.hook_name] * mask.to(acts[site.hook_name].device)
        estimate.append(masked.flatten(1).sum(1))  # [batch]: each prompt's own estimate
    change = torch.stack(estimate).detach()  # [site, batch]
    check_metric_finite(change, lambda i: grid.sites[i].describe(), receiver_metric)
    clean, corrupted = (
        (donor_metric, receiver_metric) if mode == "denoise" else (receiver_metric, donor_metric)
    )
    if receiver_values.ndim == 0:
        effect = receiver_metric + change.sum(1).reshape(grid.shape)
        return PatchResult(effect.clone(), grid, clean, corrupted, mode, "run", "attribution")
    per_prompt = (receiver_values.detach() + change).reshape(*grid.shape, -1)
    runs = (donor_values, receiver_values) if mode == "denoise" else (receiver_values, donor_values)
    return PatchResult(
        per_prompt.mean(-1),
        grid,
        clean,
        corrupted,
        mode,
        "run",
        "attribution",
        per_prompt=per_prompt,
        clean_per_prompt=runs[0].detach().clone(),
        corrupted_per_prompt=runs[1].detach().clone(),
    )


def receiver_gradients(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    names: Sequence[str],
) -> tuple[float, dict[str, Tensor], dict[str, Tensor]]:
    """Metric, activations and d metric / d activation at each hook in ``names``.

    The gradient is taken through a zero tensor added at each hook, so it is the gradient with
    respect to that activation with every other path left intact, and parameter ``.grad`` fields
    are left untouched.
    """
    value, acts, grads = _gradients(model, tokens, metric, names, metric_value)
    return float(value), acts, grads


def per_prompt_gradients(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    names: Sequence[str],
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """`receiver_gradients` for a metric that returns a scalar or one value per prompt: the
    metric's value (a 0-d or [batch] tensor), activations, and gradients in which each batch
    row is that prompt's own gradient (prompts do not interact in the model)."""
    return _gradients(model, tokens, metric, names, metric_output)


def _gradients(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    names: Sequence[str],
    measure,
) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """`receiver_gradients` with the metric applied by ``measure`` (scalar or per prompt); a
    per-prompt metric's values are summed for one backward pass, which gives each prompt's own
    gradient in its batch row."""
    acts: dict[str, Tensor] = {}
    probes: dict[str, Tensor] = {}

    def probe(act: Tensor, hook) -> Tensor:
        acts[hook.name] = act.detach()
        probes[hook.name] = torch.zeros_like(act, requires_grad=True)
        return act + probes[hook.name]

    with torch.inference_mode(False), torch.enable_grad():
        with model.hooks(fwd_hooks=[(name, probe) for name in names]):
            logits = model(tokens)
        value = measure(metric, logits)
        if not value.requires_grad:
            raise ValueError("the metric is not differentiable in the logits; attribution needs it")
        grads = torch.autograd.grad(value.sum(), [probes[name] for name in names])
    return value.detach(), acts, dict(zip(names, grads, strict=True))


def _product(delta: Tensor, grad: Tensor, site: Site) -> Tensor:
    """(a' - a) * grad summed over the feature dim (patterns have none): [batch, *site dims]."""
    product = delta * grad
    return product if site.component == "pattern" else product.sum(-1)


@dataclass(frozen=True)
class AttributionComparison:
    """Attribution and exact patching on the same sites, and how well they agree.

    Attributes:
        attribution: the gradient estimate.
        exact: activation patching.
        pearson: correlation of the two ``change`` tensors over sites.
        max_abs_error: largest |estimated change - exact change|.
    """

    attribution: PatchResult
    exact: PatchResult
    pearson: float
    max_abs_error: float


def correlation(a: Float[Tensor, "..."], b: Float[Tensor, "..."]) -> float:
    """Pearson correlation of two same-shaped tensors, flattened (nan if either is constant)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    x = a.flatten().double() - a.double().mean()
    y = b.flatten().double() - b.double().mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denominator) if denominator > 0 else float("nan")


def compare_with_exact(
    model: HookedTransformer,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    sites: Sweep | Sequence[Site],
    *,
    mode: str = "denoise",
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
) -> AttributionComparison:
    """Run attribution and exact patching on the same sites and correlate them."""
    estimate = attribution_patching(model, clean_tokens, corrupted_tokens, metric, sites, mode=mode)
    exact = activation_patching(
        model,
        clean_tokens,
        corrupted_tokens,
        metric,
        estimate.sweep,
        mode=mode,
        max_sites_per_pass=max_sites_per_pass,
        memory_budget=memory_budget,
    )
    error = (estimate.change - exact.change.to(estimate.effect.device)).abs().max().item()
    return AttributionComparison(
        estimate,
        exact,
        correlation(estimate.change, exact.change.to(estimate.effect.device)),
        error,
    )
