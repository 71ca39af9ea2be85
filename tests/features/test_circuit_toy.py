"""The feature circuit machinery on the bundled toy model with its shipped SAEs (slow tier)."""

from __future__ import annotations

import pytest
import torch

from ioi.features.activations import ABC_FLIP
from ioi.features.attribution import feature_attribution
from ioi.features.circuit import faithfulness_curve
from ioi.features.pretrained import load_toy_saes
from ioi.features.toy_circuit import one_template_prompts
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.testing import hooks_left

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def setup(toy_model):
    ds = one_template_prompts(toy_model, 8, seed=1)
    abc = ds.gen_flipped_prompts(ABC_FLIP)
    end = ds.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(toy_model(ds.toks), ds.answer_tokens, positions=end)
        corrupted = logits_to_ave_logit_diff(toy_model(abc.toks), ds.answer_tokens, positions=end)
    metric = make_ioi_metric(clean, corrupted, ds.answer_tokens, positions=end)
    return toy_model, load_toy_saes(), ds, abc, metric


def test_integrated_gradients_on_a_residual_stream_add_up_to_the_whole_gap(setup):
    # Each shipped SAE reads the whole residual stream, so patching all its nodes is the ABC
    # run: the normalised metric goes from 1 to 0, and IG's nodes must add up to -1.
    model, saes, ds, abc, metric = setup
    result = feature_attribution(model, saes, ds.toks, abc.toks, metric, method="ig", steps=8)
    for hook in saes:
        assert float(result.scores[hook].sum()) == pytest.approx(-1.0, abs=0.02)
    assert hooks_left(model) == []


def test_the_top_nodes_recover_the_model(setup):
    model, saes, ds, abc, metric = setup
    result = feature_attribution(model, saes, ds.toks, abc.toks, metric)
    every = result.nodes()
    curve = faithfulness_curve(model, saes, ds.toks, metric, [[], result.top(50), every])
    assert curve[0][1] == pytest.approx(0.0, abs=1e-6)
    assert curve[2][1] == pytest.approx(1.0, abs=1e-4)
