"""Blocks with fused LayerNorm and GELU (`ioi.patching.blocks`) must compute what TransformerLens's
blocks compute, call every hook point a block owns, and fall back to TransformerLens's modules
where fusing would skip a hook or does not apply."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tl_patching
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.components import Attention, LayerNorm

import ioi.patching as ours
import ioi.patching.blocks as blocks
from ioi.metrics import make_logit_diff_metric
from ioi.testing import BATCH, hooks_left, logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

VARIANTS = {
    "gelu_new": dict(act_fn="gelu_new"),
    "gelu": {},
    "relu": dict(act_fn="relu"),
    "solu_ln": dict(act_fn="solu_ln"),
    "ln_pre": dict(normalization_type="LNPre", act_fn="gelu_new"),
    "rms_gated": dict(normalization_type="RMS", gated_mlp=True, act_fn="silu"),
    "shortformer": dict(positional_embedding_type="shortformer", act_fn="gelu_new"),
    "rotary": dict(positional_embedding_type="rotary", rotary_dim=8, act_fn="gelu_new"),
    "parallel": dict(parallel_attn_mlp=True, act_fn="gelu_new"),
    "attn_only": dict(attn_only=True),
    "norm_after": dict(use_normalization_before_and_after=True, normalization_type="RMS"),
    "three_layers": dict(n_layers=3, act_fn="gelu_new"),
}


def _embedded(model, tokens):
    resid, _, shortformer, _ = model.input_to_embed(tokens)
    return resid, shortformer


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_run_blocks_equals_transformer_lens(variant):
    model = tiny_model(seed=3, **VARIANTS[variant])
    tokens, _ = token_pair()
    with torch.inference_mode():
        resid, shortformer = _embedded(model, tokens)
        extra = {} if shortformer is None else {"shortformer_pos_embed": shortformer}
        n = model.cfg.n_layers
        want = model(resid, start_at_layer=0, stop_at_layer=n, **extra)
        got = blocks.run_blocks(model, resid, 0, n, **extra)
        assert not torch.equal(got, resid)  # the blocks did run
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # a later start: only the blocks from there on
        mid = model(resid, start_at_layer=0, stop_at_layer=1, **extra)
        torch.testing.assert_close(
            blocks.run_blocks(model, mid, 1, n, **extra), want, atol=1e-5, rtol=1e-5
        )
    assert not hooks_left(model)


def test_gpt2_blocks_take_the_fused_kernels(monkeypatch):
    """A GPT-2-like block never calls TransformerLens's LayerNorm, attention or gelu_new."""
    model = tiny_model(seed=1, act_fn="gelu_new")
    tokens, _ = token_pair()
    with torch.inference_mode():
        resid, _ = _embedded(model, tokens)
        want = model(resid, start_at_layer=0, stop_at_layer=2)

        def refuse(*args, **kwargs):
            raise AssertionError("TransformerLens's own module ran")

        monkeypatch.setattr(LayerNorm, "forward", refuse)
        monkeypatch.setattr(Attention, "forward", refuse)
        for block in model.blocks:
            monkeypatch.setattr(block.mlp, "act_fn", refuse)
        got = blocks.run_blocks(model, resid, 0, 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_a_hook_on_a_norm_scale_falls_back_and_fires():
    model = tiny_model(seed=2, act_fn="gelu_new")
    tokens, _ = token_pair()
    seen = []

    def double_scale(scale, hook):
        seen.append(hook.name)
        return scale * 2

    hooks = [("blocks.1.ln2.hook_scale", double_scale)]
    with torch.inference_mode():
        resid, _ = _embedded(model, tokens)
        with model.hooks(fwd_hooks=hooks):
            want = model(resid, start_at_layer=0, stop_at_layer=2)
        with model.hooks(fwd_hooks=hooks):
            got = blocks.run_blocks(model, resid, 0, 2)
        plain = blocks.run_blocks(model, resid, 0, 2)
    assert seen == ["blocks.1.ln2.hook_scale"] * 2
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # the hook changed the result


@pytest.mark.parametrize(
    "name", ["blocks.0.hook_resid_pre", "blocks.0.mlp.hook_post", "blocks.1.hook_mlp_out"]
)
def test_hook_points_of_a_fused_block_still_fire(name):
    model = tiny_model(seed=4, act_fn="gelu_new")
    tokens, _ = token_pair()
    seen = []

    def zero(act, hook):
        seen.append(hook.name)
        return torch.zeros_like(act)

    with torch.inference_mode():
        resid, _ = _embedded(model, tokens)
        with model.hooks(fwd_hooks=[(name, zero)]):
            want = model(resid, start_at_layer=0, stop_at_layer=2)
            got = blocks.run_blocks(model, resid, 0, 2)
    assert seen == [name, name]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not hooks_left(model)


@pytest.mark.parametrize("name", ["attn_head_out_all_pos", "resid_pre", "attn_head_out_by_pos"])
def test_gelu_new_sweeps_match_transformer_lens(name):
    """GPT-2's activation, through the fused blocks, against TransformerLens's own sweeps."""
    model = tiny_model(seed=6, n_layers=3, act_fn="gelu_new")
    clean, corrupted = token_pair()
    _, cache = model.run_with_cache(clean)

    declared = make_logit_diff_metric(torch.tensor([[3, 7]] * BATCH))
    for metric in (declared, logit_diff):  # logit_diff declares nothing: detection serves it
        want = getattr(tl_patching, f"get_act_patch_{name}")(model, corrupted, cache, metric)
        got = getattr(ours, f"get_act_patch_{name}")(model, corrupted, cache, metric)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
        assert float(want.abs().max()) > 1e-2  # the sweep moves the metric
    assert not hooks_left(model)


def _attention_inputs(seed=0, batch=3, n_pos=6, d_model=32):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n_pos, d_model, generator=gen)


@pytest.mark.parametrize("variant", ["plain", "shortformer", "scaled_by_layer", "float64"])
def test_fused_attention_equals_transformer_lens(variant):
    """The fused attention against TransformerLens's, alone, after a cached prefix of keys and
    values, and with a padding mask that leaves one query row no key at all (TransformerLens
    gives that row a pattern of 0, not NaN)."""
    overrides = {
        "plain": {},
        "shortformer": dict(positional_embedding_type="shortformer"),
        "scaled_by_layer": dict(scale_attn_by_inverse_layer_idx=True),
        "float64": dict(dtype=torch.float64),
    }[variant]
    model = tiny_model(seed=7, **overrides)
    attn = model.blocks[1].attn
    assert blocks.attention_fuses(attn)
    x = _attention_inputs().to(attn.W_Q.dtype)
    batch, n_pos, _ = x.shape
    with torch.inference_mode():
        torch.testing.assert_close(blocks.attention(attn, x, x, x), attn(x, x, x))
        # a frozen prefix of 4 cached positions, then 6 new ones
        past_k, past_v = (torch.randn(batch, 4, 4, 8, dtype=x.dtype) for _ in range(2))

        def entry():
            return TransformerLensKeyValueCacheEntry(past_k, past_v, frozen=True)

        mask = torch.ones(batch, 4 + n_pos, dtype=torch.long)
        mask[0, :5] = 0  # prompt 0: no prefix and not its first new position
        mask[1, :2] = 0
        want = attn(x, x, x, past_kv_cache_entry=entry(), attention_mask=mask)
        got = blocks.attention(attn, x, x, x, past_kv_cache_entry=entry(), attention_mask=mask)
        assert torch.isfinite(got).all() and torch.isfinite(want).all()
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got[0, 0], attn.b_O)  # no key: z = 0, the output is b_O


def test_fused_attention_gradients_equal_transformer_lens():
    model = tiny_model(seed=8)
    attn = model.blocks[0].attn
    x = _attention_inputs(seed=1)
    grads = []
    for fn in (lambda t: attn(t, t, t), lambda t: blocks.attention(attn, t, t, t)):
        leaf = x.clone().requires_grad_(True)
        fn(leaf).pow(2).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("name", ["hook_pattern", "hook_attn_scores"])
def test_a_hook_on_scores_or_pattern_falls_back_and_fires(name):
    """The fused softmax computes neither the scores nor the pattern as TransformerLens does:
    a hook on either runs TransformerLens's own attention, and sees its values."""
    model = tiny_model(seed=9)
    attn = model.blocks[1].attn
    seen = []

    def spy(act, hook):
        seen.append(act.clone())
        return act

    x = _attention_inputs(seed=2)
    with torch.inference_mode():
        with model.hooks(fwd_hooks=[(f"blocks.1.attn.{name}", spy)]):
            assert not blocks.attention_fuses(attn)
            got = blocks.attention(attn, x, x, x)
        assert blocks.attention_fuses(attn)  # the hook is gone with its context
        want = attn(x, x, x)
    assert len(seen) == 1 and seen[0].shape == (3, 4, 6, 6)
    torch.testing.assert_close(got, want)
    assert not hooks_left(model)


@pytest.mark.parametrize("name", ["hook_q", "hook_k", "hook_v", "hook_z"])
def test_fused_attention_fires_its_other_hooks(name):
    """Hooks on q, k, v and z still fire in the fused attention, and their edits count."""
    model = tiny_model(seed=10)
    attn = model.blocks[0].attn
    seen = []

    def halve(act, hook):
        seen.append(hook.name)
        return act / 2

    x = _attention_inputs(seed=3)
    with torch.inference_mode():
        plain = blocks.attention(attn, x, x, x)
        with model.hooks(fwd_hooks=[(f"blocks.0.attn.{name}", halve)]):
            assert blocks.attention_fuses(attn)
            got = blocks.attention(attn, x, x, x)
            want = attn(x, x, x)
    assert seen == [f"blocks.0.attn.{name}"] * 2
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, plain, atol=1e-3)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(positional_embedding_type="rotary", rotary_dim=8),
        dict(attn_scores_soft_cap=5.0),
        dict(use_attn_result=True),
        dict(attention_dir="bidirectional"),
    ],
    ids=["rotary", "soft_cap", "attn_result", "bidirectional"],
)
def test_attention_the_fused_path_does_not_know_runs_transformer_lens(overrides):
    model = tiny_model(seed=11, **overrides)
    attn = model.blocks[0].attn
    assert not blocks.attention_fuses(attn)
    x = _attention_inputs(seed=4)
    with torch.inference_mode():
        torch.testing.assert_close(blocks.attention(attn, x, x, x), attn(x, x, x))
