"""Sites, sweeps, modes, sources, model variants and results of the general patching API."""

from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch
import transformer_lens.patching as tl_patching
from jaxtyping import TypeCheckError

import ioi.patching as ours
from ioi.patching import LastK, PerPrompt, Site, Together, sweep
from ioi.patching.plan import copies_per_pass, plan_passes
from ioi.testing import (
    BATCH,
    N_POS,
    hooks_left,
    logit_diff,
    reference_patch,
    tiny_model,
    token_pair,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def base():
    model = tiny_model()
    clean, corrupted = token_pair(seed=2, shared_prefix=1)
    return model, clean, corrupted


def from_run(model, tokens):
    _, cache = model.run_with_cache(tokens)
    return lambda name, act: cache[name]


def check_against_loop(model, clean, corrupted, sites, mode="denoise", **kwargs):
    """The engine (through `activation_patching`) equals the per-site loop, in either mode."""
    receiver, donor = (corrupted, clean) if mode == "denoise" else (clean, corrupted)
    result = ours.activation_patching(
        model, clean, corrupted, logit_diff, sites, mode=mode, max_sites_per_pass=5, **kwargs
    )
    expected = reference_patch(
        model, receiver, list(result.sites), logit_diff, from_run(model, donor)
    )
    torch.testing.assert_close(result.effect.flatten(), expected, atol=1e-4, rtol=0)
    assert not hooks_left(model)
    return result


# --- model variants, against the plain loop ----------------------------------------------------

VARIANTS = {
    "rotary": dict(positional_embedding_type="rotary", rotary_dim=8),
    "rms_gated": dict(normalization_type="RMS", gated_mlp=True, act_fn="silu"),
    "gqa_rotary": dict(
        n_key_value_heads=2,
        positional_embedding_type="rotary",
        rotary_dim=8,
        normalization_type="RMS",
    ),
    "shortformer": dict(positional_embedding_type="shortformer"),
    "alibi": dict(positional_embedding_type="alibi"),
    "parallel": dict(parallel_attn_mlp=True),
    "attn_only": dict(attn_only=True),
    "softcap": dict(output_logits_soft_cap=2.0, final_rms=True, normalization_type="RMS"),
    # Keys normed or clamped after hook_k: prefix reuse would read the wrong keys.
    "qk_norm": dict(use_qk_norm=True, normalization_type="RMS"),
    "clip_qkv": dict(clip_qkv=0.1),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request):
    model = tiny_model(**VARIANTS[request.param])
    clean, corrupted = token_pair(seed=3, shared_prefix=1)
    return request.param, model, clean, corrupted


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "z", "q", "k", "v", "pattern"])
@pytest.mark.parametrize("positions", ["each", "all"])
def test_variants_match_per_site_loop(variant, component, positions):
    name, model, clean, corrupted = variant
    grid = sweep(model, component, N_POS, positions=positions)
    check_against_loop(model, clean, corrupted, grid)


def test_variants_mlp_and_resid_mid(variant):
    name, model, clean, corrupted = variant
    for component in ("mlp_out", "resid_mid", "resid_post"):
        grid = sweep(model, component, N_POS, positions="each")
        if name == "attn_only" and component in ("mlp_out", "resid_mid"):
            with pytest.raises(ValueError, match="attn_only"):
                ours.activation_patching(model, clean, corrupted, logit_diff, grid)
        elif name == "parallel" and component == "resid_mid":
            with pytest.raises(ValueError, match="resid_mid"):
                ours.activation_patching(model, clean, corrupted, logit_diff, grid)
        else:
            check_against_loop(model, clean, corrupted, grid)


def test_attn_only_mlp_sweeps_raise():
    model = tiny_model(attn_only=True)
    clean, corrupted = token_pair()
    _, cache = model.run_with_cache(clean)
    for fn in (ours.get_act_patch_mlp_out, ours.get_act_patch_block_every):
        with pytest.raises(ValueError, match="valid components"):
            fn(model, corrupted, cache, logit_diff)
    assert not hooks_left(model)


def test_grouped_query_heads_are_kv_heads():
    model = tiny_model(n_key_value_heads=2, positional_embedding_type="rotary", rotary_dim=8)
    clean, corrupted = token_pair(seed=4)
    _, cache = model.run_with_cache(clean)
    k = ours.get_act_patch_attn_head_k_by_pos(model, corrupted, cache, logit_diff)
    v = ours.get_act_patch_attn_head_v_all_pos(model, corrupted, cache, logit_diff)
    assert k.shape == (2, N_POS, 2) and v.shape == (2, 2)
    grid = sweep(model, "k", N_POS, positions="each")
    expected = reference_patch(
        model, corrupted, list(grid.sites), logit_diff, from_run(model, clean)
    )
    torch.testing.assert_close(k.flatten(), expected, atol=1e-4, rtol=0)
    every = ours.get_act_patch_attn_head_all_pos_every(model, corrupted, cache, logit_diff)
    assert every.shape == (5, 2, 4)
    assert torch.all(every[2:4, :, 2:] == 0), "kv rows beyond n_key_value_heads are zero padding"
    # TransformerLens 3.9 handles kv heads too; both must agree.
    tl_every = tl_patching.get_act_patch_attn_head_all_pos_every(
        model, corrupted, cache, logit_diff
    )
    torch.testing.assert_close(every, tl_every, atol=1e-4, rtol=0)
    torch.testing.assert_close(every[3, :, :2], v, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="valid kv heads: 0..1"):
        ours.patch_sites(model, corrupted, [Site("k", 0, 3)], logit_diff, ours.RunSource(cache))


class LeftPaddingTokenizer:
    """Just enough of a tokenizer for TransformerLens to build a left-padding attention mask."""

    padding_side = "left"
    pad_token_id = 0
    bos_token_id = 1


@pytest.mark.parametrize("positional", ["rotary", "standard"])
def test_left_padded_prompts_use_the_attention_mask(positional):
    """With left padding TransformerLens masks pads and shifts positions; patching must agree."""
    model = tiny_model(positional_embedding_type=positional, rotary_dim=8)
    model.tokenizer = LeftPaddingTokenizer()
    try:
        clean, corrupted = token_pair(seed=5)
        clean[clean == 0], corrupted[corrupted == 0] = 2, 2
        clean[0, :2] = corrupted[0, :2] = 0  # the first prompt is left-padded by two tokens
        padded = model(clean)
        model.tokenizer = None
        assert not torch.allclose(padded, model(clean)), "the fake tokenizer built no mask"
        model.tokenizer = LeftPaddingTokenizer()
        for component in ("z", "resid_pre", "k"):
            grid = sweep(model, component, N_POS, positions="each")
            check_against_loop(model, clean, corrupted, grid)
    finally:
        model.tokenizer = None


# --- modes and sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_modes_match_loop(base, mode):
    model, clean, corrupted = base
    check_against_loop(model, clean, corrupted, sweep(model, "z", N_POS, positions="each"), mode)


@pytest.mark.parametrize("mode", ["denoise", "noise"])
def test_zero_ablation_matches_loop(base, mode):
    model, clean, corrupted = base
    grid = sweep(model, "z", N_POS, positions="each")
    result = ours.activation_patching(
        model, clean, corrupted, logit_diff, grid, mode=mode, ablation="zero"
    )
    receiver = corrupted if mode == "denoise" else clean
    expected = reference_patch(
        model, receiver, list(grid.sites), logit_diff, lambda name, act: torch.zeros_like(act)
    )
    torch.testing.assert_close(result.effect.flatten(), expected, atol=1e-4, rtol=0)
    assert result.source == "zero"


def test_mean_ablation_matches_loop(base):
    model, clean, corrupted = base
    grid = sweep(model, "resid_mid", N_POS, positions="each")
    _, reference_cache = model.run_with_cache(token_pair(seed=9)[0])
    result = ours.activation_patching(
        model,
        clean,
        corrupted,
        logit_diff,
        grid,
        mode="noise",
        ablation="mean",
        mean_cache=reference_cache,
    )
    expected = reference_patch(
        model,
        clean,
        list(grid.sites),
        logit_diff,
        lambda name, act: reference_cache[name].mean(0, keepdim=True),
    )
    torch.testing.assert_close(result.effect.flatten(), expected, atol=1e-4, rtol=0)


def test_unchanged_positions_cost_nothing_and_give_the_baseline(base):
    """Clean and corrupted share position 0, so patching it must return the receiver metric."""
    model, clean, corrupted = base
    result = ours.activation_patching(
        model, clean, corrupted, logit_diff, sweep(model, "resid_pre", N_POS, positions="each")
    )
    assert torch.allclose(result.effect[0, 0], torch.tensor(result.corrupted_baseline), atol=1e-6)
    _, cache = model.run_with_cache(clean)
    tl = tl_patching.get_act_patch_resid_pre(model, corrupted, cache, logit_diff)
    torch.testing.assert_close(result.effect, tl, atol=1e-4, rtol=0)


# --- position specs --------------------------------------------------------------------------


def test_position_specs_build_the_right_sites(base):
    model, _, _ = base
    assert sweep(model, "z", N_POS, positions="last").axes == ("layer", "head")
    assert {s.pos for s in sweep(model, "z", N_POS, positions="last").sites} == {N_POS - 1}
    grid = sweep(model, "resid_pre", N_POS, positions=LastK(2))
    assert grid.shape == (2, 2) and [s.pos for s in grid.sites[:2]] == [N_POS - 2, N_POS - 1]
    grid = sweep(model, "z", N_POS, positions=[1, 4], heads="all", axes=("pos", "layer"))
    assert grid.shape == (2, 2) and grid.sites[1] == Site("z", 1, None, 1)
    grid = sweep(model, "resid_pre", N_POS, positions=Together([4, 2]), layers=1)
    assert grid.shape == () and grid.sites == (Site("resid_pre", 1, None, (2, 4)),)
    named = {"first": torch.tensor([1, 2, 3]), "end": torch.tensor([5, 5, 4])}
    grid = sweep(model, "z", N_POS, positions=named, layers=[1])
    assert grid.axes == ("layer", "pos", "head") and grid.labels[1] == ("first", "end")
    assert grid.sites[0].pos == PerPrompt((1, 2, 3))
    pattern = sweep(model, "pattern", N_POS, positions="each", src_positions=[0, 2])
    assert pattern.axes == ("layer", "head", "dest_pos", "src_pos")
    assert pattern.shape == (2, 4, N_POS, 2)


def test_together_and_per_prompt_positions_match_loop(base):
    model, clean, corrupted = base
    ends = torch.tensor([5, 3, 4])
    sites = [
        Site("z", 0, 1, (2, 4)),
        Site("resid_pre", 1, None, ends),
        Site("q", 1, 3, ends),
        Site("pattern", 1, 2, ends),
        Site("pattern", 0, 0, (3, 5), src_pos=1),
        Site("v", 0, None, 2),
    ]
    result = check_against_loop(model, clean, corrupted, sites)
    assert result.axes == ("site",)
    check_against_loop(model, clean, corrupted, sites, mode="noise")


# --- bad inputs -----------------------------------------------------------------------------


def test_invalid_sites_list_the_valid_choices(base):
    model, clean, corrupted = base
    with pytest.raises(ValueError, match="valid components: resid_pre, resid_mid"):
        Site("attn_pattern", 0)
    with pytest.raises(ValueError, match="has no head axis"):
        Site("resid_pre", 0, head=1)
    with pytest.raises(ValueError, match="src_pos is only valid"):
        Site("z", 0, 1, src_pos=2)
    with pytest.raises(ValueError, match="valid layers: 0..1"):
        sweep(model, "z", N_POS, layers=[0, 2])
    with pytest.raises(ValueError, match="valid heads: 0..3"):
        sweep(model, "z", N_POS, heads=[4])
    with pytest.raises(ValueError, match="valid: 0..5"):
        sweep(model, "z", N_POS, positions=[6])
    with pytest.raises(ValueError, match="valid: 'all', 'each', 'last'"):
        sweep(model, "z", N_POS, positions="every")
    with pytest.raises(ValueError, match="only applies to component 'pattern'"):
        sweep(model, "z", N_POS, src_positions="each")
    with pytest.raises(ValueError, match="ordering of the swept axes"):
        sweep(model, "z", N_POS, axes=("head", "pos"))
    _, cache = model.run_with_cache(clean)
    for site, message in [
        (Site("z", 2, 0), "valid layers: 0..1"),
        (Site("z", 0, 4), "valid heads: 0..3"),
        (Site("resid_pre", 0, None, 6), "valid positions: 0..5"),
        (Site("resid_pre", 0, None, PerPrompt((1, 2))), "batch has 3 prompts"),
    ]:
        with pytest.raises(ValueError, match=message):
            ours.patch_sites(model, corrupted, [site], logit_diff, ours.RunSource(cache))
    assert not hooks_left(model)


def test_layer_out_of_range_in_drop_in_raises(base):
    model, clean, corrupted = base
    _, cache = model.run_with_cache(clean)
    with pytest.raises(ValueError, match="out of range"):
        ours.patch_sites(model, corrupted, [Site("mlp_out", 5)], logit_diff, ours.RunSource(cache))


def test_cache_from_a_different_length_raises(base):
    model, clean, corrupted = base
    _, short_cache = model.run_with_cache(clean[:, :-1])
    with pytest.raises(ValueError, match="same batch size and sequence length"):
        ours.get_act_patch_resid_pre(model, corrupted, short_cache, logit_diff)
    # Under test the jaxtyping annotations ("batch pos" on both) catch this first; without the
    # runtime checker the function's own ValueError does.
    with pytest.raises((ValueError, TypeCheckError), match="same shape|pos"):
        ours.activation_patching(model, clean[:, :-1], corrupted, logit_diff, [Site("z", 0, 0)])
    assert not hooks_left(model)


def test_cache_missing_an_activation_raises(base):
    model, clean, corrupted = base
    _, cache = model.run_with_cache(clean, names_filter=lambda name: "resid_pre" in name)
    with pytest.raises(ValueError, match="has no activation 'blocks.0.attn.hook_z'"):
        ours.get_act_patch_attn_head_out_all_pos(model, corrupted, cache, logit_diff)


def test_non_scalar_metric_raises(base):
    model, clean, corrupted = base
    _, cache = model.run_with_cache(clean)
    per_prompt = lambda logits: logits[:, -1, 3] - logits[:, -1, 7]  # noqa: E731
    with pytest.raises(ValueError, match="must return a scalar"):
        ours.get_act_patch_resid_pre(model, corrupted, cache, per_prompt)
    assert not hooks_left(model)


def test_bad_modes_and_knobs_raise(base):
    model, clean, corrupted = base
    grid = [Site("z", 0, 0)]
    with pytest.raises(ValueError, match="valid modes: denoise, noise"):
        ours.activation_patching(model, clean, corrupted, logit_diff, grid, mode="both")
    with pytest.raises(ValueError, match="valid: None, 'zero', 'mean'"):
        ours.activation_patching(model, clean, corrupted, logit_diff, grid, ablation="random")
    with pytest.raises(ValueError, match="max_sites_per_pass"):
        ours.activation_patching(model, clean, corrupted, logit_diff, grid, max_sites_per_pass=0)


# --- planning ----------------------------------------------------------------------------------


def test_plan_covers_every_changing_site_once_within_capacity():
    layers = [0, 0, 0, 1, 1, 1, 1, 0]
    starts = [0, 3, None, 2, 2, 5, 0, 3]
    passes = plan_passes(layers, starts, n_pos=6, batch=4, capacity=2, device=torch.device("cpu"))
    seen = sorted(i for p in passes for i in p.site_ids)
    assert seen == [0, 1, 3, 4, 5, 6, 7]
    for p in passes:
        assert len(p.site_ids) <= 2
        assert {layers[i] for i in p.site_ids} == {p.layer}
        assert p.start_pos == min(starts[i] for i in p.site_ids)


def test_cpu_passes_are_cache_sized_unless_the_caller_says_otherwise():
    cpu, gib = torch.device("cpu"), 1024**3
    gpt2 = tiny_model(d_model=768, d_head=64, n_heads=12, d_mlp=3072, n_layers=1).cfg
    # GPT-2's width: about 512 token rows per pass, so 2 copies of 16 x 15 tokens, 1 of 20 x 15.
    assert copies_per_pass(gpt2, 16, 15, cpu, 64 * gib, None) == 2
    assert copies_per_pass(gpt2, 20, 15, cpu, 64 * gib, None) == 1
    # A narrower model fits more rows; an explicit limit replaces the cache bound.
    assert copies_per_pass(tiny_model().cfg, 20, 15, cpu, 64 * gib, None) == 40
    assert copies_per_pass(gpt2, 20, 15, cpu, 64 * gib, 7) == 7
    # The memory budget bounds every case.
    assert copies_per_pass(gpt2, 20, 15, cpu, 1, 7) == 1


# --- results and plots ----------------------------------------------------------------------


def test_patch_result_views(base):
    model, clean, corrupted = base
    grid = sweep(model, "z", N_POS, positions="each")
    result = ours.activation_patching(model, clean, corrupted, logit_diff, grid)
    assert result.axes == ("layer", "pos", "head") and result.effect.shape == (2, N_POS, 4)
    gap = result.clean_baseline - result.corrupted_baseline
    torch.testing.assert_close(result.normalized, (result.effect - result.corrupted_baseline) / gap)
    rows = result.table()
    assert len(rows) == 2 * N_POS * 4
    assert rows[5]["site"] == "z L0 H1 @1" and rows[5]["layer_label"] == "0"
    assert rows[5]["effect"] == pytest.approx(float(result.effect[0, 1, 1]))
    top = result.top_k(3)
    assert [abs(r["change"]) for r in top] == sorted(
        (abs(r["change"]) for r in rows), reverse=True
    )[:3]
    threshold = 0.05
    significant = result.significant(threshold)
    expected = sum(abs(r["change"]) >= threshold * abs(gap) for r in rows)
    assert len(significant) == expected
    assert result.to_dataframe().shape[0] == len(rows)


def test_heatmaps_for_one_two_and_three_axes(base):
    model, clean, corrupted = base
    for grid, n_traces in [
        (sweep(model, "z", N_POS, positions="each"), 2),
        (sweep(model, "z", N_POS), 1),
        ([Site("z", 0, 0), Site("resid_pre", 1)], 1),
        (sweep(model, "resid_pre", N_POS, layers=1, positions=Together([2, 3])), 1),
        (sweep(model, "pattern", N_POS, positions="each", src_positions="each"), 8),
    ]:
        result = ours.activation_patching(model, clean, corrupted, logit_diff, grid)
        fig = ours.heatmap(result)
        assert isinstance(fig, go.Figure) and len(fig.data) == n_traces
        assert isinstance(ours.heatmap(result, value="effect"), go.Figure)
        assert not hasattr(result, "heatmap"), "a result does not know how it is drawn"


def test_batch_shapes_are_checked(base):
    model, clean, corrupted = base
    assert clean.shape == (BATCH, N_POS)
    with pytest.raises((ValueError, TypeCheckError), match=r"\[batch, pos\]|batch pos"):
        ours.patch_sites(model, corrupted[0], [Site("z", 0, 0)], logit_diff, ours.ZeroSource())
