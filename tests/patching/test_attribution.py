"""Attribution patching: its gradient term against finite differences, and its exact comparison."""

from __future__ import annotations

import pytest
import torch

import ioi.patching as ours
from ioi.patching import Site, sweep
from ioi.testing import N_POS, hooks_left, logit_diff, site_index, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model64():
    """Float64, so central differences are accurate to ~1e-9."""
    return tiny_model(dtype=torch.float64, positional_embedding_type="rotary", rotary_dim=8)


def interpolated_metric(model, receiver, donor_cache, site, t: float) -> float:
    """Metric with the site's entries moved a fraction ``t`` from receiver to donor values."""
    index = site_index(site, receiver.shape[0])

    def hook(act, hook):
        moved = act.clone()
        moved[index] = act[index] + t * (donor_cache[hook.name][index] - act[index])
        return moved

    with torch.inference_mode():
        logits = model.run_with_hooks(receiver, fwd_hooks=[(site.hook_name, hook)])
    return float(logit_diff(logits))


SITES = [
    Site("z", 0, 1),
    Site("z", 1, 2, pos=4),
    Site("resid_pre", 1, None, 3),
    Site("mlp_out", 0, None, (1, 5)),
    Site("k", 1, 0),
    Site("pattern", 1, 3, pos=5),
    Site("pattern", 0, 2, pos=4, src_pos=1),
    Site("resid_mid", 0, None, torch.tensor([2, 5, 4])),
]


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_attribution_equals_the_finite_difference_derivative(model64, mode):
    clean, corrupted = token_pair(seed=6)
    receiver, donor = (corrupted, clean) if mode == "denoise" else (clean, corrupted)
    _, donor_cache = model64.run_with_cache(donor)
    result = ours.attribution_patching(model64, clean, corrupted, logit_diff, SITES, mode=mode)
    assert result.method == "attribution"
    eps = 1e-4
    for site, estimate in zip(SITES, result.change.tolist(), strict=True):
        plus = interpolated_metric(model64, receiver, donor_cache, site, eps)
        minus = interpolated_metric(model64, receiver, donor_cache, site, -eps)
        derivative = (plus - minus) / (2 * eps)
        assert estimate == pytest.approx(derivative, rel=1e-5, abs=1e-8), site.describe()
    assert not hooks_left(model64)


def test_attribution_baselines_match_exact(model64):
    clean, corrupted = token_pair(seed=7)
    grid = sweep(model64, "z", N_POS)
    attribution = ours.attribution_patching(model64, clean, corrupted, logit_diff, grid)
    exact = ours.activation_patching(model64, clean, corrupted, logit_diff, grid)
    assert attribution.axes == exact.axes == ("layer", "head")
    assert attribution.clean_baseline == pytest.approx(exact.clean_baseline)
    assert attribution.corrupted_baseline == pytest.approx(exact.corrupted_baseline)


def test_compare_with_exact_reports_agreement():
    model = tiny_model(dtype=torch.float64)
    clean, corrupted = token_pair(seed=8)
    corrupted[:, :-2] = clean[:, :-2]  # only the last two positions differ
    grid = sweep(model, "resid_pre", N_POS, positions="each")
    comparison = ours.compare_with_exact(model, clean, corrupted, logit_diff, grid)
    estimate, exact = comparison.attribution, comparison.exact
    assert exact.method == "exact" and estimate.method == "attribution"
    assert comparison.pearson == pytest.approx(ours.correlation(estimate.change, exact.change))
    assert comparison.max_abs_error == pytest.approx(
        float((estimate.change - exact.change).abs().max())
    )
    # Positions the two runs share change nothing, in either method, up to float64 rounding:
    # the batched patched runs and the gradient run may take other kernels than the unpatched
    # run (2e-16 seen on some CPUs).
    assert exact.change[:, :-2].abs().max() < 1e-12
    assert estimate.change[:, :-2].abs().max() < 1e-12
    assert torch.any(exact.change[:, -2:] != 0)
    assert not hooks_left(model)


def test_correlation_helper():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert ours.correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert ours.correlation(a, -a) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        ours.correlation(a, a[:2])


def test_attribution_on_gqa_and_bad_mode():
    model = tiny_model(n_key_value_heads=2, dtype=torch.float64)
    clean, corrupted = token_pair(seed=9)
    result = ours.attribution_patching(
        model, clean, corrupted, logit_diff, sweep(model, "v", N_POS, positions="each")
    )
    assert result.effect.shape == (2, N_POS, 2)
    with pytest.raises(ValueError, match="valid modes"):
        ours.attribution_patching(model, clean, corrupted, logit_diff, [Site("z", 0)], mode="x")


def test_attribution_works_inside_inference_mode(model64):
    clean, corrupted = token_pair(seed=10)
    with torch.inference_mode():
        result = ours.attribution_patching(model64, clean, corrupted, logit_diff, [Site("z", 1, 0)])
    assert torch.isfinite(result.effect).all()
