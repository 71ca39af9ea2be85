"""The last-block shortcut: with a metric that declares its positions, the last block runs its
queries, output projection and MLP on the declared rows only. It must equal the full block there.
"""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tl_patching
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

import ioi.patching as ours
import ioi.patching.tail as tail
from ioi.metrics import make_logit_diff_metric
from ioi.testing import BATCH, N_POS, hooks_left, tiny_model, token_pair

SHORTCUT = {
    "gpt2_like": {},
    "rms_gated": dict(normalization_type="RMS", gated_mlp=True, act_fn="silu"),
    "grouped_query": dict(n_key_value_heads=2),
    "parallel": dict(parallel_attn_mlp=True),
    "attn_only": dict(attn_only=True),
    "qk_norm": dict(use_qk_norm=True, normalization_type="RMS"),
}
FALLBACK = {
    "rotary": dict(positional_embedding_type="rotary", rotary_dim=8),
    "alibi": dict(positional_embedding_type="alibi"),
    "shortformer": dict(positional_embedding_type="shortformer"),
    "clip_qkv": dict(clip_qkv=0.1),
}
ROWS = torch.tensor([N_POS - 1, 2, 4])  # one declared position per prompt (BATCH = 3)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def random_resid(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, N_POS, model.cfg.d_model, generator=generator)


def last_keys_values(model, resid, attention_mask=None):
    """The last block's keys and values on ``resid``, as its key/value cache would hold them."""
    kept = {}

    def keep(act, hook):
        kept[hook.name.rsplit("_", 1)[-1]] = act.detach()

    last = model.cfg.n_layers - 1
    names = [f"blocks.{last}.attn.hook_k", f"blocks.{last}.attn.hook_v"]
    with model.hooks(fwd_hooks=[(name, keep) for name in names]):
        model.blocks[-1](resid, attention_mask=attention_mask)
    return kept["k"], kept["v"]


@pytest.mark.parametrize("variant", list(SHORTCUT))
@pytest.mark.parametrize("prefix", [0, 2])
def test_rows_equal_the_full_last_block(variant, prefix):
    if prefix and variant == "qk_norm":
        pytest.skip("hook_k is taken before the key norm; the engine never reuses such keys")
    model = tiny_model(**SHORTCUT[variant])
    assert tail.last_block_shortcut_applies(model)
    resid = random_resid(model)
    index = torch.arange(BATCH)
    with torch.inference_mode():
        expected = model.blocks[-1](resid)[index, ROWS]
        entry = None
        if prefix:
            keys, values = last_keys_values(model, resid)
            entry = TransformerLensKeyValueCacheEntry(
                keys[:, :prefix], values[:, :prefix], frozen=True
            )
        got = tail.last_block_at_rows(
            model, resid[:, prefix:], ROWS - prefix, past_kv_cache_entry=entry
        )
    assert got.shape == (BATCH, 1, model.cfg.d_model)
    torch.testing.assert_close(got[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_rows_respect_a_padding_mask():
    model = tiny_model()
    resid = random_resid(model, seed=1)
    attention_mask = torch.ones(BATCH, N_POS, dtype=torch.long)
    attention_mask[0, :2] = attention_mask[2, :1] = 0  # left padding
    rows = torch.tensor([1, 2, 4])  # prompt 0's row is a pad: it attends to nothing at all
    index = torch.arange(BATCH)
    with torch.inference_mode():
        expected = model.blocks[-1](resid, attention_mask=attention_mask)[index, rows]
        unmasked = model.blocks[-1](resid)[index, rows]
        got = tail.last_block_at_rows(model, resid, rows, attention_mask=attention_mask)
    assert not torch.allclose(expected, unmasked), "the padding mask changed nothing"
    torch.testing.assert_close(got[:, 0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", list(FALLBACK))
def test_position_dependent_attention_falls_back(variant):
    assert not tail.last_block_shortcut_applies(tiny_model(**FALLBACK[variant]))


def test_a_hook_in_the_last_block_falls_back():
    model = tiny_model()
    assert tail.last_block_shortcut_applies(model)
    with model.hooks(fwd_hooks=[("blocks.1.mlp.hook_post", lambda act, hook: act)]):
        assert not tail.last_block_shortcut_applies(model)
    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", lambda act, hook: act)]):
        assert tail.last_block_shortcut_applies(model)  # earlier blocks do not matter
    assert tail.last_block_shortcut_applies(model)


@pytest.fixture
def shortcut_calls(monkeypatch):
    calls = []
    real = tail.last_block_at_rows

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tail, "last_block_at_rows", counting)
    return calls


@pytest.mark.parametrize("variant", list(SHORTCUT) + list(FALLBACK))
@pytest.mark.parametrize("name", ["get_act_patch_attn_head_out_all_pos", "get_act_patch_resid_pre"])
def test_sweeps_with_declared_rows_match_transformer_lens(variant, name, shortcut_calls):
    model = tiny_model(n_layers=3, **{**SHORTCUT, **FALLBACK}[variant])
    clean, corrupted = token_pair(seed=6, shared_prefix=2)
    _, clean_cache = model.run_with_cache(clean)
    metric = make_logit_diff_metric(torch.tensor([[3, 7]] * BATCH), positions=ROWS)

    def opaque(logits):
        return metric(logits)  # the same numbers, declaring nothing: every logit computed

    expected = getattr(tl_patching, name)(model, corrupted, clean_cache, opaque)
    got = getattr(ours, name)(model, corrupted, clean_cache, metric, max_sites_per_pass=2)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not hooks_left(model)
    assert bool(shortcut_calls) == (variant in SHORTCUT)
