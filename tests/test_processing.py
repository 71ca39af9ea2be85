"""Undoing a processing step leaves the function the model computes unchanged."""

from __future__ import annotations

import pytest
import torch

from ioi.dataset import IOIDataset
from ioi.processing import STEPS, undo_processing


@pytest.fixture(scope="module")
def tokens(toy_model):
    return IOIDataset(6, "mixed", seed=3, tokenizer=toy_model).toks


@pytest.mark.parametrize("step", STEPS)
def test_undone_model_computes_the_same_function(toy_model, tokens, step) -> None:
    with torch.no_grad():
        before = toy_model(tokens)
        other = undo_processing(toy_model, step, seed=1)
        after = other(tokens)
    # center_unembed shifts every logit at a position by the same amount: compare softmaxes
    assert torch.allclose(before.log_softmax(-1), after.log_softmax(-1), atol=1e-3)
    if step != "center_unembed":
        assert torch.allclose(before, after, atol=1e-3)
    else:
        assert (before - after).abs().max() > 1.0  # the raw logits did move
    weights_moved = any(
        not torch.equal(a, b)
        for (name, a), (_, b) in zip(
            sorted(toy_model.state_dict().items()),
            sorted((k, v) for k, v in other.state_dict().items() if k in toy_model.state_dict()),
            strict=True,
        )
        if a.is_floating_point()
    )
    assert weights_moved


def test_fold_ln_gives_layer_norms_weights(toy_model) -> None:
    other = undo_processing(toy_model, "fold_ln")
    assert other.cfg.normalization_type == "LN"
    assert not torch.allclose(other.ln_final.w, torch.ones_like(other.ln_final.w))


def test_bad_steps_are_refused(toy_model) -> None:
    with pytest.raises(ValueError, match="choose one of fold_ln"):
        undo_processing(toy_model, "fold")
    with pytest.raises(ValueError, match="LNPre"):
        undo_processing(undo_processing(toy_model, "fold_ln"), "fold_ln")
