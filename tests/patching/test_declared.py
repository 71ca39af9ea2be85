"""Metrics that declare the logits they read: same results, NaN everywhere they did not declare."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tl_patching

import ioi.patching as ours
from ioi.metrics import make_ioi_metric, make_logit_diff_metric
from ioi.testing import BATCH, D_VOCAB, N_POS, hooks_left, tiny_model, token_pair

NAMES = [
    "get_act_patch_resid_pre",
    "get_act_patch_attn_head_out_all_pos",
    "get_act_patch_attn_head_out_by_pos",
    "get_act_patch_block_every",
    "get_act_patch_attn_head_pattern_dest_src_pos",
]


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    clean, corrupted = token_pair(seed=3, shared_prefix=2)
    _, clean_cache = model.run_with_cache(clean)
    answers = torch.tensor([[3, 7], [7, 3], [5, 9]])  # declared tokens: 3, 5, 7, 9
    return model, clean, corrupted, clean_cache, answers


def opaque(metric):
    return lambda logits: metric(logits)  # same numbers, declares nothing


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("where", ["last", "per_prompt"])
def test_declared_positions_match_transformer_lens(name, where, setup):
    model, _, corrupted, clean_cache, answers = setup
    positions = (
        None
        if where == "last"
        else torch.tensor([N_POS - 1, N_POS - 2, N_POS - 3, N_POS - 1][:BATCH])
    )
    metric = make_logit_diff_metric(answers, positions=positions)
    assert metric.logit_positions is not None
    expected = getattr(tl_patching, name)(model, corrupted, clean_cache, opaque(metric))
    got = getattr(ours, name)(model, corrupted, clean_cache, metric, max_sites_per_pass=3)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not hooks_left(model)


def test_undeclared_logits_are_nan_so_a_lying_metric_cannot_pass(setup):
    model, _, corrupted, clean_cache, answers = setup
    honest = make_logit_diff_metric(answers)

    def lying(logits):
        return logits[:, N_POS - 2, 3].mean()  # reads a position it did not declare

    lying.logit_positions = honest.logit_positions  # declares only the last position
    # The logits it reads but did not declare are NaN, so its value is NaN wherever a patch
    # changed them; the engine refuses such a result, naming the first such site, rather than
    # return a grid that is partly right and partly NaN.
    with pytest.raises(ValueError, match=r"not finite \(nan\) when patching resid_pre L0 @\d+"):
        ours.get_act_patch_resid_pre(model, corrupted, clean_cache, lying)


def test_undeclared_tokens_are_nan_too(setup):
    model, _, corrupted, clean_cache, answers = setup
    honest = make_logit_diff_metric(answers)
    assert torch.equal(honest.logit_tokens, torch.tensor([3, 5, 7, 9]))

    def lying(logits):
        return logits[:, -1, 4].mean()  # the declared position, an undeclared token

    lying.logit_positions, lying.logit_tokens = honest.logit_positions, honest.logit_tokens
    with pytest.raises(ValueError, match=r"not finite .* \(every site"):
        ours.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, lying)
    lying.logit_tokens = torch.arange(D_VOCAB)  # every token declared: the same numbers as TL
    expected = tl_patching.get_act_patch_attn_head_out_all_pos(
        model, corrupted, clean_cache, opaque(lying)
    )
    got = ours.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, lying)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "tokens",
    [torch.tensor([3, D_VOCAB]), torch.tensor([-1]), torch.tensor([[3, 7]]), torch.tensor([3.0])],
)
def test_bad_token_declarations_raise(setup, tokens):
    model, _, corrupted, clean_cache, answers = setup
    metric = make_logit_diff_metric(answers)
    metric.logit_tokens = tokens
    with pytest.raises(ValueError, match="logit_tokens"):
        ours.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    assert not hooks_left(model)


def test_ioi_metric_declares_its_positions_and_bad_declarations_raise(setup):
    model, _, corrupted, clean_cache, answers = setup
    pos = torch.full((BATCH,), N_POS - 1)
    metric = make_ioi_metric(2.0, -1.0, answers, positions=pos)
    assert torch.equal(metric.logit_positions, pos)

    def bad(logits):
        return logits[:, -1, 3].mean()

    bad.logit_positions = torch.tensor([N_POS + 5] * BATCH)
    with pytest.raises(ValueError, match="logit_positions"):
        ours.get_act_patch_resid_pre(model, corrupted, clean_cache, bad)
    bad.logit_positions = "first"
    with pytest.raises(ValueError, match="logit_positions"):
        ours.get_act_patch_resid_pre(model, corrupted, clean_cache, bad)
    assert not hooks_left(model)
