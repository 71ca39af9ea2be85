"""Head-output sites skip their layer's attention: `block_after_z` finishes the block from the
(patched) ``z``. It must equal the block run in full, and sweeps through it must equal
TransformerLens's, with declared, plain and fall-back metrics; where it does not apply (a hooked
block, a post-attention norm, parallel attention and MLP) the engine runs the whole block.
"""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tl_patching

import ioi.patching as ours
import ioi.patching.engine as engine
import ioi.patching.tail as tail
from ioi.metrics import make_logit_diff_metric
from ioi.testing import BATCH, hooks_left, logit_diff, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

APPLIES = {
    "gpt2_like": {},
    "rms_gated": dict(normalization_type="RMS", gated_mlp=True, act_fn="silu"),
    "grouped_query": dict(n_key_value_heads=2),
    "rotary": dict(positional_embedding_type="rotary", rotary_dim=8),
    "three_layers": dict(n_layers=3),
}
NOT_APPLIES = {
    "parallel": dict(parallel_attn_mlp=True),
    "attn_only": dict(attn_only=True),
    "attn_result": dict(use_attn_result=True),
    "norm_after": dict(use_normalization_before_and_after=True, normalization_type="RMS"),
}


def _softmax_metric(logits):
    return logits[:, -1].softmax(-1)[:, 3].mean()


def _argmax_metric(logits):
    return (logits[:, -1].argmax(-1) == 3).float().mean()


def _block_io(model, tokens, layer):
    """Block ``layer``'s input, its heads' z and its output on ``tokens``."""
    names = [f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.attn.hook_z"]
    names.append(f"blocks.{layer}.hook_resid_post")
    kept = {}

    def keep(act, hook):
        kept[hook.name] = act

    with torch.inference_mode(), model.hooks(fwd_hooks=[(n, keep) for n in names]):
        model(tokens)
    return (kept[n] for n in names)


@pytest.mark.parametrize("variant", list(APPLIES))
def test_block_after_z_equals_the_full_block(variant):
    model = tiny_model(seed=5, **APPLIES[variant])
    tokens, _ = token_pair(seed=3)
    for layer in range(model.cfg.n_layers):
        assert tail.block_after_z_applies(model, layer)
        resid_pre, z, resid_post = _block_io(model, tokens, layer)
        with torch.inference_mode():
            got = tail.block_after_z(model, layer, resid_pre, z)
        torch.testing.assert_close(got, resid_post, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(NOT_APPLIES))
def test_blocks_it_cannot_finish_are_refused(variant):
    model = tiny_model(seed=5, **NOT_APPLIES[variant])
    assert not tail.block_after_z_applies(model, 0)


def test_a_hook_in_the_block_is_refused():
    model = tiny_model(seed=5)
    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda act, hook: act)]):
        assert not tail.block_after_z_applies(model, 0)
    assert tail.block_after_z_applies(model, 0)


@pytest.mark.parametrize("variant", ["gpt2_like", "three_layers", "parallel"])
@pytest.mark.parametrize("metric_kind", ["declared", "plain", "softmax", "argmax"])
@pytest.mark.parametrize(
    "name", ["get_act_patch_attn_head_out_all_pos", "get_act_patch_attn_head_out_by_pos"]
)
@pytest.mark.parametrize("shared_prefix", [1, 3])
def test_head_sweeps_equal_transformer_lens(monkeypatch, variant, metric_kind, name, shared_prefix):
    config = {**APPLIES, **NOT_APPLIES}[variant]
    model = tiny_model(seed=4, **config)
    clean, corrupted = token_pair(seed=6, shared_prefix=shared_prefix)
    _, clean_cache = model.run_with_cache(clean)
    metric = {
        "declared": make_logit_diff_metric(torch.tensor([[3, 7]] * BATCH)),
        "plain": logit_diff,
        "softmax": _softmax_metric,
        "argmax": _argmax_metric,
    }[metric_kind]
    calls = []
    real = engine.block_after_z
    monkeypatch.setattr(engine, "block_after_z", lambda *a: calls.append(a[1]) or real(*a))
    rows_calls = []
    real_rows = tail.last_block_at_rows
    monkeypatch.setattr(
        tail, "last_block_at_rows", lambda *a, **k: rows_calls.append(1) or real_rows(*a, **k)
    )
    expected = getattr(tl_patching, name)(model, corrupted, clean_cache, metric)
    got = getattr(ours, name)(model, corrupted, clean_cache, metric)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # Every layer's heads skip their attention where the block allows it, the last included.
    assert set(calls) == (set() if variant == "parallel" else set(range(model.cfg.n_layers)))
    # ... and the sites below the last layer still run the last block at the metric's rows only
    # (a pass that skipped the attention of the layer below starts right at the last block).
    assert bool(rows_calls) == (metric_kind != "argmax")
    assert hooks_left(model) == []
