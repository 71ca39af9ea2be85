"""IOI roles from contrasts: planted features get their role; the toy SAE's evidence is read by hand."""

from __future__ import annotations

import math

import pytest
import torch

from ioi.features.interpret import (
    ROLE_EFFECT,
    RoleContrast,
    cohens_d,
    contrast_role,
    interpret_feature,
    positional_role,
    role_evidence,
    role_shares,
)
from ioi.testing import hooks_left

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

N, POS = 200, 8  # many prompts: noise alone gives |d| ~ 2/sqrt(N) = 0.14, far below 0.8
# Half the prompts BABA (S first), half ABBA (IO first); S1+1 after the second first name.
FAMILIES = tuple("BABA" if i % 2 == 0 else "ABBA" for i in range(N))
_baba = torch.tensor([f == "BABA" for f in FAMILIES])
WORD_IDX = {
    "IO": torch.where(_baba, 2, 1),
    "S1": torch.where(_baba, 1, 2),
    "S1+1": torch.where(_baba, 2, 3),  # BABA's S1+1 is its IO (as in the dataset)
    "S2": torch.full((N,), 5),
    "end": torch.full((N,), 7),
}


def _noise(seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.rand(N, POS, generator=gen, dtype=torch.float64)


def _plant(word: str, ioi_value, abc_value=None, seed: int = 0):
    """IOI and ABC activations: small noise everywhere, plus a value at one word per prompt."""
    ioi, abc = _noise(seed), _noise(seed + 1)
    rows = torch.arange(N)
    ioi[rows, WORD_IDX[word]] += ioi_value
    abc[rows, WORD_IDX[word]] += ioi_value if abc_value is None else abc_value
    return ioi, abc


def _role(ioi, abc):
    evidence = role_evidence(ioi, WORD_IDX, abc, WORD_IDX, FAMILIES)
    return contrast_role(evidence, positional_role(role_shares(ioi, WORD_IDX))), evidence


def test_planted_features_get_their_role():
    ones = torch.ones(N, dtype=torch.float64)
    cases = {
        # Fires at S2 on IOI prompts only: the name there is a repeat.
        "S is duplicated": _plant("S2", 2.0 * ones, 0.2 * ones),
        # Fires at end on BABA prompts only, the same on their ABC twins.
        "position of S": _plant("end", 2.0 * _baba),
        # Fires on whichever first name is the IO, not on the S1 name.
        "IO name": _plant("IO", 2.0 * ones),
    }
    for expected, (ioi, abc) in cases.items():
        role, evidence = _role(ioi, abc)
        assert role == expected, (expected, evidence)
    # Fires on all three names alike.
    ioi, abc = _noise(5), _noise(6)
    rows = torch.arange(N)
    for word in ("IO", "S1", "S2"):
        ioi[rows, WORD_IDX[word]] += 1.0
        abc[rows, WORD_IDX[word]] += 1.0
    role, evidence = _role(ioi, abc)
    assert role == "name token", evidence
    assert evidence["name share"] > 0.5


def test_a_feature_no_contrast_supports_keeps_its_positional_label():
    # Fires at end on every prompt alike, IOI and ABC: a position, not a piece of information.
    ioi, abc = _plant("end", torch.ones(N, dtype=torch.float64))
    role, evidence = _role(ioi, abc)
    assert role == "end"
    assert max(abs(v) for k, v in evidence.items() if k != "name share") < ROLE_EFFECT
    # Noise alone: no word holds half the mass, and no contrast is large.
    ioi, abc = _noise(7), _noise(8)
    assert _role(ioi, abc)[0] == "mixed"
    zero = torch.zeros(N, POS, dtype=torch.float64)
    assert _role(zero, zero)[0] == "silent"
    # A small IOI-over-ABC effect at S2 (d ~ 0.4 < ROLE_EFFECT) names no role either.
    gen = torch.Generator().manual_seed(9)
    ioi, abc = _noise(10), _noise(11)
    ioi[:, 5] += 1.0 + torch.randn(N, generator=gen, dtype=torch.float64)
    abc[:, 5] += 0.6 + torch.randn(N, generator=gen, dtype=torch.float64)
    role, evidence = _role(ioi, abc)
    assert 0.2 < evidence["S is duplicated at S2"] < ROLE_EFFECT and role == "S2"


def test_cohens_d_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([0.0, 1.0, 1.0])
    pooled = math.sqrt((3 * 1.6666666666666667 + 2 * 0.3333333333333333) / 5)
    assert cohens_d(a, b) == pytest.approx((2.5 - 2 / 3) / pooled)
    assert cohens_d(b, a) == pytest.approx(-cohens_d(a, b))
    assert cohens_d(torch.ones(3), torch.ones(4)) == 0.0
    assert cohens_d(torch.ones(3), torch.zeros(4)) == math.inf
    with pytest.raises(ValueError, match="2 or more values"):
        cohens_d(torch.ones(1), torch.ones(3))


def test_bad_contrasts_are_named():
    ioi, abc = _plant("S2", torch.ones(N, dtype=torch.float64))
    with pytest.raises(ValueError, match="families .* must match"):
        role_evidence(ioi, WORD_IDX, abc, WORD_IDX, FAMILIES[:-1])
    with pytest.raises(ValueError, match="abc_word_idx has no"):
        role_evidence(ioi, WORD_IDX, abc, {"S2": WORD_IDX["S2"]}, FAMILIES)


@pytest.fixture(scope="module")
def toy():
    from ioi.dataset import IOIDataset
    from ioi.features import load_toy_saes
    from ioi.features.activations import ABC_FLIP
    from ioi.models import load_model

    model = load_model("toy", device="cpu")
    ds = IOIDataset(16, "mixed", seed=1, tokenizer=model)
    return model, load_toy_saes(device="cpu"), ds, ds.gen_flipped_prompts(ABC_FLIP)


def test_toy_feature_evidence_matches_plain_hooks(toy):
    model, saes, ds, abc = toy
    hook, feature = "blocks.1.hook_resid_pre", 217
    report = interpret_feature(
        model, saes[hook], hook, feature, ds.toks, ds.word_idx,
        seq_lens=ds.seq_lens, contrast=RoleContrast.of(ds, abc),
    )  # fmt: skip
    assert hooks_left(model) == []

    def feature_at(tokens):
        seen = []
        with torch.no_grad(), model.hooks(fwd_hooks=[(hook, lambda a, hook: seen.append(a))]):
            model(tokens)
        with torch.no_grad():
            return saes[hook].encode(seen[0])[..., feature].double()  # [batch, pos]

    def d(a, b):
        pooled = ((len(a) - 1) * a.var() + (len(b) - 1) * b.var()) / (len(a) + len(b) - 2)
        if pooled == 0:  # the feature is silent at both words: no effect
            assert a.mean() == b.mean()
            return 0.0
        return float((a.mean() - b.mean()) / pooled.sqrt())

    ioi, corrupt = feature_at(ds.toks), feature_at(abc.toks)
    rows = torch.arange(len(ds))

    def at(acts, data, word):
        return acts[rows, data.word_idx[word]]

    baba = torch.tensor([p.pattern == "BAB" for p in ds.prompts])
    assert 2 <= int(baba.sum()) <= len(ds) - 2  # both families, so the position contrast exists
    expected = {
        "S is duplicated at S2": d(at(ioi, ds, "S2"), at(corrupt, abc, "S2")),
        "S is duplicated at end": d(at(ioi, ds, "end"), at(corrupt, abc, "end")),
        "position of S at S2": d(at(ioi, ds, "S2")[baba], at(ioi, ds, "S2")[~baba]),
        "position of S at end": d(at(ioi, ds, "end")[baba], at(ioi, ds, "end")[~baba]),
        "IO over S1": d(at(ioi, ds, "IO"), at(ioi, ds, "S1")),
        "S2 over S1": d(at(ioi, ds, "S2"), at(ioi, ds, "S1")),
    }
    got = {k: v for k, v in report.role_evidence.items() if k != "name share"}
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert abs(expected["S2 over S1"]) > ROLE_EFFECT  # a feature with a large contrast
    names = sum(float(at(ioi.clamp(min=0), ds, w).sum()) for w in ("IO", "S1", "S2"))
    real = torch.arange(ds.toks.shape[1])[None, :] < ds.seq_lens[:, None]
    share = names / float((ioi.clamp(min=0) * real).sum())
    assert report.role_evidence["name share"] == pytest.approx(share, rel=1e-4)
    with pytest.raises(TypeError, match="RoleContrast"):
        interpret_feature(model, saes[hook], hook, feature, ds.toks, ds.word_idx, contrast=abc)
    with pytest.raises(ValueError, match="one prompt per IOI prompt"):
        RoleContrast.of(ds, type(ds)(4, "mixed", seed=0, tokenizer=model))
