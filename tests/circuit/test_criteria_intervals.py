"""Faithfulness, completeness and minimality with bootstrap intervals over prompts."""

from __future__ import annotations

import math

import pytest
import torch

from ioi.circuit import Circuit, MeanAblation, completeness, faithfulness, minimality
from ioi.circuit.criteria import Faithfulness, KnockoutScore
from ioi.dataset import IOIDataset
from ioi.statistics import bootstrap
from ioi.testing import gpt2_vocab_model

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = Circuit(
    {"mover": [(2, 0), (2, 1)], "helper": ["1.3", "1.1"], "early": [(0, 2)]},
    {"mover": "end", "helper": "end", "early": "S2"},
)


@pytest.fixture(scope="module")
def setup():
    model = gpt2_vocab_model(seed=0)
    ioi = IOIDataset(16, "mixed", seed=1, tokenizer=model)
    abc = ioi.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    return model, MeanAblation.build(model, ioi, abc)


def test_faithfulness_keeps_per_prompt_values_and_gives_intervals(setup):
    _, ablation = setup
    f = faithfulness(ablation, SMALL)
    by_hand = ablation.logit_diff(None, per_prompt=True)
    assert torch.equal(f.f_model_per_prompt, by_hand)
    assert f.f_model == float(by_hand.mean()) == float(ablation.logit_diff(None))
    assert f == Faithfulness(f.f_model, f.f_circuit), "per-prompt values stay out of =="
    ratio = f.interval("ratio", seed=2)
    assert ratio.mean.item() == pytest.approx(f.ratio, rel=1e-6)
    assert ratio.low <= f.ratio <= ratio.high and ratio.high > ratio.low
    assert ratio.n == 16 and ratio.se > 0
    same = f.interval("ratio", seed=2)
    assert torch.equal(same.low, ratio.low) and not torch.equal(f.interval(seed=3).low, ratio.low)
    gap = f.interval("gap")
    assert gap.mean.item() == pytest.approx(f.gap, rel=1e-6)
    model = f.interval("f_model")
    sd = by_hand.double().std().item()
    assert model.se.item() == pytest.approx(sd / math.sqrt(16), rel=1e-6)


def test_knockout_scores_have_intervals(setup):
    _, ablation = setup
    scores = completeness(ablation, SMALL, modes=("class",)) + minimality(ablation, SMALL)
    for s in scores:
        est, rel = s.interval(seed=1), s.interval(relative=True, seed=1)
        assert est.mean.item() == pytest.approx(s.score, abs=1e-6)
        assert rel.mean.item() == pytest.approx(s.relative, abs=1e-6)
        assert est.low <= s.score + 1e-9 and s.score <= est.high + 1e-9
    mover = scores[0]
    c_minus_k = ablation.logit_diff(SMALL.without([(2, 0), (2, 1)]), per_prompt=True)
    m_minus_k = ablation.logit_diff(ablation.all_heads_except([(2, 0), (2, 1)]), per_prompt=True)
    by_hand = bootstrap(c_minus_k - m_minus_k, lambda d: d.abs(), seed=1)
    assert torch.equal(mover.interval(seed=1).low, by_hand.low)


def test_values_without_per_prompt_or_bad_options_raise(setup):
    _, ablation = setup
    with pytest.raises(ValueError, match="no per-prompt values"):
        Faithfulness(3.0, 2.0).interval()
    with pytest.raises(ValueError, match="no per-prompt values"):
        KnockoutScore("x", (), 1.0, 2.0, 1.0, 0.5).interval()
    f = faithfulness(ablation, SMALL)
    with pytest.raises(ValueError, match="valid: ratio, gap, f_model, f_circuit"):
        f.interval("faithfulness")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        f.interval(level=1.5)
    with pytest.raises(ValueError, match="at least 1"):
        f.interval(resamples=0)
