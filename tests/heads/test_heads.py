"""Head characterisation: logit attribution, attention detectors, copying scores, scatter data."""

from __future__ import annotations

import pytest
import torch
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.heads import (
    DETECTOR_KINDS,
    accumulated_resid_logit_diffs,
    apply_final_ln,
    attention_detector_scores,
    get_attn_scores,
    get_copying_scores,
    known_tokens,
    logit_diff_directions,
    name_embeddings_after_mlp0,
    name_mover_scatter,
    name_tokens,
    per_head_logit_diffs,
    per_layer_logit_diffs,
    repeated_tokens,
    residual_stack_to_logit_diff,
)
from ioi.metrics import logits_to_ave_logit_diff
from ioi.testing import gpt2_vocab_model, hook_count

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(
    n_layers: int = 2, d_model: int = 32, d_head: int = 8, attn_only: bool = False, seed: int = 0
) -> HookedTransformer:
    """A small folded-LayerNorm model over GPT-2's ids."""
    return gpt2_vocab_model(n_layers, d_model, d_head, 4 * d_model, "LNPre", attn_only, seed)


@pytest.fixture(scope="module")
def run():
    model = tiny_model()
    ds = IOIDataset(8, "mixed", seed=2, tokenizer=model)
    with torch.no_grad():
        logits, cache = model.run_with_cache(ds.toks)
    return model, ds, logits, cache


# ---- direct logit attribution ------------------------------------------------------------


def test_layer_attributions_add_up_to_the_logit_diff(run):
    model, ds, logits, cache = run
    end = ds.word_idx["end"]
    total = logits_to_ave_logit_diff(logits, ds.answer_tokens, positions=end)
    bias = (model.b_U[ds.io_tokenIDs] - model.b_U[ds.s_tokenIDs]).mean().detach()
    per_layer, labels = per_layer_logit_diffs(model, cache, ds.answer_tokens, end)
    assert labels[0] == "embed" and len(labels) == len(per_layer) == 2 + 2 * model.cfg.n_layers
    assert float(per_layer.sum() + bias) == pytest.approx(float(total), abs=1e-4)
    accumulated, acc_labels = accumulated_resid_logit_diffs(model, cache, ds.answer_tokens, end)
    assert acc_labels[-1] == "final_post"
    assert float(accumulated[-1] + bias) == pytest.approx(float(total), abs=1e-4)


def test_head_attributions_add_up_to_their_layer(run):
    model, ds, _, cache = run
    end = ds.word_idx["end"]
    per_head = per_head_logit_diffs(model, cache, ds.answer_tokens, end)
    per_layer, labels = per_layer_logit_diffs(model, cache, ds.answer_tokens, end)
    directions = logit_diff_directions(model, ds.answer_tokens).detach()
    for layer in range(model.cfg.n_layers):
        b_O = model.b_O[layer].detach().expand(1, ds.N, -1)  # [1, batch, d_model]
        bias = residual_stack_to_logit_diff(b_O, cache, directions, end)[0]
        attn = per_layer[labels.index(f"{layer}_attn_out")]
        assert float(per_head[layer].sum() + bias) == pytest.approx(float(attn), abs=1e-4)


def test_final_ln_uses_each_prompts_own_position(run):
    model, ds, _, cache = run
    end = ds.word_idx["end"]
    assert len(end.unique()) > 1, "the test needs prompts with different end positions"
    resid = cache["blocks.1.hook_resid_post"]
    rows = torch.arange(ds.N)
    stack = resid[rows, end][None]  # [1, batch, d_model]
    centred = stack - stack.mean(-1, keepdim=True)
    expected = centred / cache["ln_final.hook_scale"][rows, end]
    torch.testing.assert_close(apply_final_ln(stack, cache, end), expected)
    # And the whole-vector case matches the model's own normalised residual.
    torch.testing.assert_close(
        apply_final_ln(stack, cache, end)[0], cache["ln_final.hook_normalized"][rows, end]
    )


def test_default_position_is_the_last(run):
    model, ds, _, cache = run
    last = torch.full((ds.N,), ds.toks.shape[1] - 1)
    a = per_head_logit_diffs(model, cache, ds.answer_tokens)
    b = per_head_logit_diffs(model, cache, ds.answer_tokens, last)
    torch.testing.assert_close(a, b)


# ---- attention detectors -----------------------------------------------------------------


def test_repeated_tokens_structure_and_seed():
    model = tiny_model()
    with torch.no_grad():
        model.W_E[1000:] = 0.0  # only ids below 1000 are "known"
    toks = repeated_tokens(model, seq_len=10, batch=3, seed=4)
    assert toks.shape == (3, 21)
    assert torch.equal(toks[:, 1:11], toks[:, 11:])
    assert (toks[:, 1:] < 1000).all()
    assert all(len(set(row[1:11].tolist())) == 10 for row in toks), "tokens in a half are distinct"
    assert torch.equal(toks, repeated_tokens(model, 10, 3, seed=4))
    assert not torch.equal(toks, repeated_tokens(model, 10, 3, seed=5))
    assert len(known_tokens(model)) == 1000


def test_detectors_find_planted_patterns(no_hooks_after):
    """Heads 0, 1, 2 of layer 0 are forced to previous-token, duplicate and induction patterns."""
    model = tiny_model(n_layers=1)
    no_hooks_after(model)
    seq_len = 6
    n = 2 * seq_len + 1
    planted = torch.zeros(3, n, n)
    planted[0, 0, 0] = 1.0
    for t in range(1, n):
        planted[0, t, t - 1] = 1.0  # previous token
        if t > seq_len:
            planted[1, t, t - seq_len] = 1.0  # earlier copy of the same token
            planted[2, t, t - seq_len + 1] = 1.0  # the token after the earlier copy
        else:
            planted[1:, t, t] = 1.0

    def plant(pattern, hook):  # [batch, head, dest, src]
        pattern[:, :3] = planted
        return pattern

    with model.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", plant)]):
        scores = attention_detector_scores(model, seq_len=seq_len, batch=2, seed=0)
    for head, kind in enumerate(DETECTOR_KINDS):
        assert float(scores[kind][0, head]) == pytest.approx(1.0)
        for other in set(DETECTOR_KINDS) - {kind}:
            assert float(scores[other][0, head]) < 0.5


def test_get_attn_scores_validates_kind():
    model = tiny_model(n_layers=1)
    scores = get_attn_scores(model, seq_len=5, batch=2, seed=0, kind="induction")
    assert scores.shape == (1, 4) and ((scores >= 0) & (scores <= 1)).all()
    with pytest.raises(ValueError, match="previous_token.*duplicate_token.*induction"):
        get_attn_scores(model, seq_len=5, batch=2, seed=0, kind="copying")


# ---- copying scores ----------------------------------------------------------------------


def copier_model() -> HookedTransformer:
    """Layer 1: head 0 copies (OV = I), head 1 anti-copies (OV = -I); everything else zero.

    Names have random embeddings, the unembedding is the embedding's transpose.
    """
    model = tiny_model(n_layers=2, d_model=48, d_head=48, attn_only=True)
    names = name_tokens(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.W_E[names] = torch.randn(len(names), 48, generator=gen)
        model.W_U.copy_(model.W_E.T)
        eye = torch.eye(48)
        model.blocks[1].attn.W_V[0] = eye
        model.blocks[1].attn.W_O[0] = eye
        model.blocks[1].attn.W_V[1] = eye
        model.blocks[1].attn.W_O[1] = -eye
    return model


def test_copying_scores_find_copier_in_its_own_layer():
    model = copier_model()
    scores = get_copying_scores(model)
    negative = get_copying_scores(model, negative=True)
    assert scores.shape == (2, 4)
    assert float(scores[1, 0]) == 1.0 and float(negative[1, 1]) == 1.0
    assert float(scores[1, 1]) == 0.0 and float(negative[1, 0]) == 0.0
    assert float(scores[0].max()) == 0.0, "a head with zero OV copies nothing"
    with pytest.raises(ValueError, match="single tokens"):
        get_copying_scores(model, names=["Mary", "Xyzzyplugh"])


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("k", [1, 5])
def test_copying_scores_equal_a_head_by_head_loop(toy_model, k, negative):
    """The layer-at-once scores against the plain per-head computation of the docstring."""
    model = toy_model
    tokens = name_tokens(model)
    resid = name_embeddings_after_mlp0(model, tokens)
    expected = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    with torch.no_grad():
        for layer in range(model.cfg.n_layers):
            for head in range(model.cfg.n_heads):
                out = (
                    model.blocks[layer].ln1(resid) @ model.W_V[layer, head] @ model.W_O[layer, head]
                )
                logits = model.unembed(model.ln_final(-out if negative else out))[:, 0]
                top = logits.topk(k, dim=-1).indices
                expected[layer, head] = (top == tokens[:, None]).any(-1).float().mean()
    got = get_copying_scores(model, k=k, negative=negative)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert len(set(expected.flatten().tolist())) > 2, "scores all alike: the test would not bite"


# ---- the name-mover scatter --------------------------------------------------------------


def test_name_mover_scatter(run, no_hooks_after):
    model, ds, _, cache = run
    no_hooks_after(model)
    data = name_mover_scatter(model, ds, 1, 2)
    rows, end = torch.arange(ds.N), ds.word_idx["end"]
    pattern = cache["blocks.1.attn.hook_pattern"][:, 2]
    torch.testing.assert_close(data.attn_to_io, pattern[rows, end, ds.word_idx["IO"]])
    out = cache["blocks.1.attn.hook_z"][rows, end, 2] @ model.W_O[1, 2]
    torch.testing.assert_close(data.proj_io, (out * model.W_U[:, ds.io_tokenIDs].T).sum(-1))
    with pytest.raises(ValueError, match="heads 0..3"):
        name_mover_scatter(model, ds, 1, 9)
    assert hook_count(model) == 0


# ---- the bundled model -------------------------------------------------------------------


@pytest.mark.slow
def test_toy_attributions_and_scores(toy_model, no_hooks_after):
    no_hooks_after(toy_model)
    ds = IOIDataset(20, "mixed", seed=7, tokenizer=toy_model)
    with torch.no_grad():
        logits, cache = toy_model.run_with_cache(ds.toks)
    end = ds.word_idx["end"]
    total = logits_to_ave_logit_diff(logits, ds.answer_tokens, positions=end)
    bias = (toy_model.b_U[ds.io_tokenIDs] - toy_model.b_U[ds.s_tokenIDs]).mean().detach()
    per_layer, _ = per_layer_logit_diffs(toy_model, cache, ds.answer_tokens, end)
    assert float(per_layer.sum() + bias) == pytest.approx(float(total), rel=1e-4, abs=1e-3)
    shape = (toy_model.cfg.n_layers, toy_model.cfg.n_heads)
    assert get_copying_scores(toy_model).shape == shape
    detectors = attention_detector_scores(toy_model, seq_len=10, batch=4, seed=0)
    again = attention_detector_scores(toy_model, seq_len=10, batch=4, seed=0)
    assert all(torch.equal(detectors[k], again[k]) for k in DETECTOR_KINDS)
