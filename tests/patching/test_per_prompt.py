"""Per-prompt effects and intervals of `PatchResult`, against TransformerLens and scalar runs."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tl_patching

import ioi.patching as ours
from ioi.metrics import make_ioi_metric, make_logit_diff_metric
from ioi.patching import Site, sweep
from ioi.testing import BATCH, N_POS, hooks_left, logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def per_prompt_diff(logits):
    """The test's own per-prompt metric (declares nothing: the engine detects what it reads)."""
    return logits[:, -1, 3] - logits[:, -1, 7]


@pytest.fixture(scope="module")
def base():
    model = tiny_model()
    clean, corrupted = token_pair(seed=2, shared_prefix=1)
    return model, clean, corrupted


@pytest.fixture(scope="module")
def big():
    """A batch of 24 prompts, enough for intervals that can exclude zero."""
    model = tiny_model(seed=1)
    gen = torch.Generator().manual_seed(5)
    clean = torch.randint(0, 61, (24, N_POS), generator=gen)
    corrupted = torch.randint(0, 61, (24, N_POS), generator=gen)
    corrupted[:, 0] = clean[:, 0]
    return model, clean, corrupted


GRIDS = {
    "z each pos": lambda m: sweep(m, "z", N_POS, positions="each"),
    "resid_pre each pos": lambda m: sweep(m, "resid_pre", N_POS, positions="each"),
    "pattern": lambda m: sweep(m, "pattern", N_POS),
    "mlp_out": lambda m: sweep(m, "mlp_out", N_POS, positions="each"),
}


@pytest.mark.parametrize("grid", list(GRIDS))
@pytest.mark.parametrize(
    "mode, ablation", [("denoise", None), ("noise", None), ("noise", "zero"), ("denoise", "mean")]
)
def test_per_prompt_mean_equals_scalar(base, grid, mode, ablation):
    model, clean, corrupted = base
    sites = GRIDS[grid](model)
    scalar = ours.activation_patching(
        model, clean, corrupted, logit_diff, sites, mode=mode, ablation=ablation
    )
    each = ours.activation_patching(
        model, clean, corrupted, per_prompt_diff, sites, mode=mode, ablation=ablation
    )
    assert scalar.per_prompt is None
    assert each.per_prompt.shape == (*sites.shape, BATCH)
    torch.testing.assert_close(each.effect, scalar.effect, atol=1e-6, rtol=0)
    torch.testing.assert_close(each.effect, each.per_prompt.mean(-1), atol=0, rtol=0)
    assert each.clean_baseline == pytest.approx(scalar.clean_baseline, abs=1e-6)
    assert each.corrupted_baseline == pytest.approx(scalar.corrupted_baseline, abs=1e-6)
    assert not hooks_left(model)


def test_metric_reading_every_logit_takes_the_full_path(base):
    """A per-prompt metric over the whole vocabulary (no partial readout) gives the same mean."""
    model, clean, corrupted = base
    each = lambda logits: logits[:, -1].log_softmax(-1)[:, 3]  # noqa: E731
    grid = sweep(model, "resid_pre", N_POS, positions="each")
    a = ours.activation_patching(model, clean, corrupted, each, grid)
    b = ours.activation_patching(model, clean, corrupted, lambda x: each(x).mean(), grid)
    torch.testing.assert_close(a.effect, b.effect, atol=1e-6, rtol=0)
    assert a.per_prompt.shape == (*grid.shape, BATCH)


@pytest.mark.parametrize(
    "tl_fn, component, positions",
    [
        (tl_patching.get_act_patch_resid_pre, "resid_pre", "each"),
        (tl_patching.get_act_patch_attn_head_out_all_pos, "z", "all"),
        (tl_patching.get_act_patch_attn_head_v_by_pos, "v", "each"),
    ],
)
def test_each_prompt_equals_transformer_lens(base, tl_fn, component, positions):
    """Prompt ``b``'s per-prompt effect is TransformerLens's result for a metric of prompt b."""
    model, clean, corrupted = base
    _, clean_cache = model.run_with_cache(clean)
    grid = sweep(model, component, N_POS, positions=positions)
    ours_result = ours.activation_patching(model, clean, corrupted, per_prompt_diff, grid)
    for b in range(BATCH):
        expected = tl_fn(
            model, corrupted, clean_cache, lambda logits, b=b: per_prompt_diff(logits)[b]
        )
        torch.testing.assert_close(
            ours_result.per_prompt[..., b], expected.reshape(grid.shape), atol=1e-5, rtol=0
        )
    assert not hooks_left(model)


def test_declared_per_prompt_factory_matches_detected(base):
    """`make_logit_diff_metric(reduce="none")` (declared logits) equals an undeclared lambda."""
    model, clean, corrupted = base
    answers = torch.tensor([[3, 7]] * BATCH)
    declared = make_logit_diff_metric(answers, reduce="none")
    grid = sweep(model, "z", N_POS, positions="each")
    a = ours.activation_patching(model, clean, corrupted, declared, grid, mode="noise")
    b = ours.activation_patching(model, clean, corrupted, per_prompt_diff, grid, mode="noise")
    torch.testing.assert_close(a.per_prompt, b.per_prompt, atol=1e-6, rtol=0)


def test_normalised_factory_per_prompt_mean_is_the_scalar_metric(base):
    model, clean, corrupted = base
    answers = torch.tensor([[3, 7], [5, 2], [1, 9]])
    scalar = make_ioi_metric(1.3, -0.4, answers)
    each = make_ioi_metric(1.3, -0.4, answers, reduce="none")
    logits = model(clean)
    assert each(logits).shape == (BATCH,)
    torch.testing.assert_close(each(logits).mean(), scalar(logits), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="valid: 'mean'.*'none'"):
        make_ioi_metric(1.3, -0.4, answers, reduce="sum")
    with pytest.raises(ValueError, match="valid: 'mean'.*'none'"):
        make_logit_diff_metric(answers, reduce="max")


def test_interval_mean_matches_values(big):
    model, clean, corrupted = big
    grid = sweep(model, "z", N_POS)
    result = ours.activation_patching(model, clean, corrupted, per_prompt_diff, grid)
    for value in ("effect", "change", "normalized"):
        est = result.interval(value, resamples=200)
        assert est.shape == result.effect.shape and est.n == 24
        torch.testing.assert_close(est.mean.float(), result.values(value), atol=1e-5, rtol=1e-5)
        assert bool((est.low <= est.mean + 1e-9).all() and (est.mean <= est.high + 1e-9).all())


def test_change_interval_is_paired_by_hand(big):
    """The change's SE is std/sqrt(n) of each prompt's patched-minus-unpatched difference."""
    model, clean, corrupted = big
    result = ours.activation_patching(model, clean, corrupted, per_prompt_diff, [Site("z", 1, 2)])
    diffs = (result.per_prompt[0] - result.corrupted_per_prompt).double()
    est = result.interval("change")
    assert est.se.item() == pytest.approx(diffs.std().item() / 24**0.5, rel=1e-6)


def test_significant_by_interval_selects_exactly_the_cells_excluding_zero(big):
    model, clean, corrupted = big
    grid = sweep(model, "z", N_POS, positions="each")
    result = ours.activation_patching(model, clean, corrupted, per_prompt_diff, grid)
    est = result.interval("change", seed=3)
    want = {
        site.describe()
        for site, flag in zip(result.sites, est.excludes_zero().flatten().tolist(), strict=True)
        if flag
    }
    rows = result.significant(by="interval", seed=3)
    assert {row["site"] for row in rows} == want
    # Position 0 is shared by both runs: patching it changes nothing, on every prompt, so its
    # interval is exactly the point 0 (the unpatched baseline is the engine's own, bitwise).
    assert bool((est.low[:, 0] == 0).all() and (est.high[:, 0] == 0).all())
    assert 0 < len(want) < len(result.sites)  # the test can tell the two kinds apart
    changes = [abs(row["change"]) for row in rows]
    assert changes == sorted(changes, reverse=True)
    assert all(row["change_low"] > 0 or row["change_high"] < 0 for row in rows)


def test_table_has_interval_columns(big):
    model, clean, corrupted = big
    result = ours.activation_patching(model, clean, corrupted, per_prompt_diff, [Site("z", 0, 1)])
    (row,) = result.table(resamples=100)
    assert row["n"] == 24
    assert row["change_low"] <= row["change"] <= row["change_high"]
    assert row["normalized_low"] <= row["normalized"] <= row["normalized_high"]
    assert "change_low" not in result.table(intervals=False)[0]


def test_scalar_result_has_no_interval(base):
    model, clean, corrupted = base
    result = ours.activation_patching(model, clean, corrupted, logit_diff, [Site("z", 0, 0)])
    with pytest.raises(ValueError, match="pass a per-prompt metric"):
        result.interval()
    with pytest.raises(ValueError, match="pass a per-prompt metric"):
        result.significant(by="interval")
    assert "change_low" not in result.table()[0]


def test_bad_interval_options_raise(big):
    model, clean, corrupted = big
    result = ours.activation_patching(model, clean, corrupted, per_prompt_diff, [Site("z", 0, 1)])
    with pytest.raises(ValueError, match="valid: threshold, interval"):
        result.significant(by="ci")
    with pytest.raises(ValueError, match="valid: effect, change, normalized"):
        result.interval("delta")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        result.interval(level=95)
    with pytest.raises(ValueError, match="at least 1"):
        result.interval(resamples=0)


def test_metric_of_another_shape_raises(base):
    model, clean, corrupted = base
    with pytest.raises(ValueError, match=r"a scalar or one value per prompt \(shape \[3\]\)"):
        ours.activation_patching(
            model, clean, corrupted, lambda logits: logits[:, -1, :2], [Site("z", 0, 0)]
        )
    assert not hooks_left(model)


def test_dropin_still_refuses_a_per_prompt_metric(base):
    model, clean, corrupted = base
    _, cache = model.run_with_cache(clean)
    with pytest.raises(ValueError, match="must return a scalar"):
        ours.get_act_patch_attn_head_out_by_pos(model, corrupted, cache, per_prompt_diff)
    assert not hooks_left(model)


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_attribution_per_prompt(base, mode):
    """Per-prompt estimates: their mean is the scalar estimate, and prompt b's is the scalar
    estimate of a metric that reads prompt b only."""
    model, clean, corrupted = base
    grid = sweep(model, "z", N_POS, positions="each")
    scalar = ours.attribution_patching(model, clean, corrupted, logit_diff, grid, mode=mode)
    each = ours.attribution_patching(model, clean, corrupted, per_prompt_diff, grid, mode=mode)
    assert each.per_prompt.shape == (*grid.shape, BATCH) and each.method == "attribution"
    torch.testing.assert_close(each.effect, scalar.effect, atol=1e-6, rtol=0)
    for b in range(BATCH):
        one = ours.attribution_patching(
            model, clean, corrupted, lambda logits, b=b: per_prompt_diff(logits)[b], grid, mode=mode
        )
        torch.testing.assert_close(each.per_prompt[..., b], one.effect, atol=1e-5, rtol=0)
    assert each.interval().shape == grid.shape
    assert not hooks_left(model)


def test_heatmap_masks_cells_whose_interval_contains_zero(big):
    model, clean, corrupted = big
    grid = sweep(model, "z", N_POS, positions="each")
    result = ours.activation_patching(model, clean, corrupted, per_prompt_diff, grid)
    keep = result.interval("change", seed=1).excludes_zero()
    fig = ours.heatmap(result, value="change", mask=True, seed=1)
    shown = torch.tensor(
        [[[z is not None and z == z for z in row] for row in trace.z] for trace in fig.data]
    )  # one trace per layer: [layer, pos, head]; NaN (blank) where masked
    assert torch.equal(shown, keep)
    assert 0 < int(keep.sum()) < keep.numel()
    assert "percentile bootstrap" in fig.layout.title.text and "n=24" in fig.layout.title.text
    unmasked = ours.heatmap(result, value="change")
    assert all(z == z for trace in unmasked.data for row in trace.z for z in row)
    scalar = ours.activation_patching(model, clean, corrupted, logit_diff, grid)
    with pytest.raises(ValueError, match="per-prompt metric"):
        ours.heatmap(scalar, mask=True)


def test_normalised_interval_needs_distinct_baselines(base):
    model, clean, _ = base
    result = ours.activation_patching(model, clean, clean, per_prompt_diff, [Site("z", 0, 0)])
    assert result.interval("change").shape == (1,)
    with pytest.raises(ValueError, match="baselines are equal.*interval\\('change'\\)"):
        result.interval("normalized")
    assert "normalized_low" not in result.table()[0]
