"""Interpretation of features: checked against the activations and weights read directly."""

from __future__ import annotations

import pytest
import torch

from ioi.features.attribution import FeatureNode
from ioi.features.interpret import (
    interpret_feature,
    interpret_features,
    real_positions,
    role_shares,
)
from ioi.features.testing import identity_sae
from ioi.testing import hooks_left, tiny_model, token_pair

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def model():
    return tiny_model(dtype=torch.float64)


@pytest.fixture(scope="module")
def sae():
    return identity_sae(32, dtype=torch.float64)  # feature j < 32 is relu(x_j)


WORD_IDX = {
    "IO": torch.tensor([1, 2, 1]),
    "S1": torch.tensor([2, 1, 3]),
    "S1+1": torch.tensor([3, 3, 4]),
    "S2": torch.tensor([4, 4, 2]),
    "end": torch.tensor([5, 5, 5]),
}


def test_top_examples_and_logit_effect_read_directly(model, sae):
    tokens, _ = token_pair(seed=3)
    report = interpret_feature(model, sae, HOOK, 7, tokens, WORD_IDX, k=4)
    _, cache = model.run_with_cache(tokens)
    coordinate = cache[HOOK][..., 7].clamp(min=0)  # identity SAE: feature 7 is relu(x_7)
    values, order = coordinate.flatten().sort(descending=True)
    expected = [
        (i // 6, i % 6, float(v)) for i, v in zip(order[:4].tolist(), values[:4], strict=True)
    ]
    assert [(b, p) for b, p, _ in report.top_examples] == [(b, p) for b, p, _ in expected]
    assert [v for *_, v in report.top_examples] == pytest.approx([v for *_, v in expected])
    row = model.W_U[7]  # W_dec[7] is the unit vector e_7
    assert [float(v) for _, v in report.promoted] == pytest.approx(
        row.sort(descending=True).values[:4].tolist()
    )
    assert [float(v) for _, v in report.suppressed] == pytest.approx(row.sort().values[:4].tolist())
    assert hooks_left(model) == []


def test_role_shares_and_label():
    acts = torch.zeros(3, 6)
    acts[0, 2] = acts[1, 1] = 3.0  # the S1 position of prompts 0 and 1
    acts[2, 0] = 2.0  # no role
    shares = role_shares(acts, WORD_IDX)
    assert shares["S1"] == pytest.approx(0.75) and shares["other"] == pytest.approx(0.25)
    assert sum(shares.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="word_idx has no 'IO'"):
        role_shares(acts, {"S1": WORD_IDX["S1"]})


def test_role_label_of_a_planted_feature(model, sae):
    # Tokens whose residual coordinate 0 is large only where we put one token id.
    tokens, _ = token_pair(seed=4)
    _, cache = model.run_with_cache(tokens)
    reports = interpret_features(
        model,
        {HOOK: sae},
        [FeatureNode(HOOK, 3, f) for f in range(64)] + [FeatureNode(HOOK, 1, None)],
        tokens,
        WORD_IDX,
    )
    assert len(reports) == 64  # the error node and repeats are skipped
    for report in reports:
        j = report.feature
        x = cache[HOOK][..., j % 32]
        acts = (x if j < 32 else -x).clamp(min=0)
        shares = role_shares(acts, WORD_IDX)
        best = max((r for r in shares if r != "other"), key=shares.__getitem__)
        expected = "silent" if acts.sum() == 0 else best if shares[best] >= 0.5 else "mixed"
        assert report.role == expected
    assert {r.role for r in reports} - {"mixed"}  # some feature gets a role


def test_padding_is_never_a_top_example_nor_a_role(model, sae):
    """A prompt's padding may hold the feature's largest activation; it must not be listed."""
    tokens, _ = token_pair(seed=3)
    _, cache = model.run_with_cache(tokens)
    coordinate = cache[HOOK][..., 7].clamp(min=0)  # identity SAE: feature 7 is relu(x_7)
    prompt, pos = divmod(int(coordinate.flatten().argmax()), 6)
    seq_lens = torch.full((3,), 6)
    seq_lens[prompt] = max(pos, 1)  # the largest activation now lies in the padding
    real = torch.arange(6)[None, :] < seq_lens[:, None]
    report = interpret_feature(model, sae, HOOK, 7, tokens, WORD_IDX, k=18, seq_lens=seq_lens)
    assert len(report.top_examples) == int(real.sum())  # every real token, no padding
    assert all(p < int(seq_lens[b]) for b, p, _ in report.top_examples)
    kept = coordinate[real]
    assert [v for *_, v in report.top_examples] == pytest.approx(
        kept.sort(descending=True).values.tolist()
    )
    assert report.role_shares == pytest.approx(role_shares(coordinate * real, WORD_IDX))
    with pytest.raises(ValueError, match=r"seq_lens must lie in 1\.\.6"):
        interpret_feature(model, sae, HOOK, 7, tokens, WORD_IDX, seq_lens=torch.tensor([6, 0, 6]))
    with pytest.raises(ValueError, match="prompt lengths"):
        real_positions(model, tokens, torch.tensor([6, 6]))


def test_padding_is_found_from_the_pad_token(toy_model):
    """Without seq_lens, an IOI dataset's right-padding is the run of pad tokens ending a row."""
    from ioi.dataset import IOIDataset
    from ioi.features import load_toy_saes

    saes = load_toy_saes(device="cpu")
    ds = IOIDataset(40, "mixed", seed=0, tokenizer=toy_model)
    assert int(ds.seq_lens.min()) < ds.toks.shape[1]  # some prompts are padded
    features = [(HOOK, f) for f in range(0, 256, 5)]
    given = interpret_features(
        toy_model, saes, features, ds.toks, ds.word_idx, k=5, seq_lens=ds.seq_lens
    )
    found = interpret_features(toy_model, saes, features, ds.toks, ds.word_idx, k=5)
    assert given == found
    assert all(p < int(ds.seq_lens[b]) for r in found for b, p, _ in r.top_examples)


def test_bad_features_are_named(model, sae):
    tokens, _ = token_pair(seed=3)
    with pytest.raises(ValueError, match="no feature 64"):
        interpret_feature(model, sae, HOOK, 64, tokens, WORD_IDX)
    with pytest.raises(ValueError, match="k must be"):
        interpret_feature(model, sae, HOOK, 1, tokens, WORD_IDX, k=0)
