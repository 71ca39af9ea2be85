"""Path patching with a per-prompt metric: [sender, batch] values, their mean and intervals."""

from __future__ import annotations

import pytest
import torch

from ioi.dataset import IOIDataset
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.path_patching import Sender, make_receivers, path_patch, plain_path_patch
from ioi.statistics import bootstrap
from ioi.testing import gpt2_vocab_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup():
    model = gpt2_vocab_model(seed=0)
    ioi = IOIDataset(6, "mixed", seed=3, tokenizer=model)
    abc = ioi.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    end = ioi.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(model(ioi.toks), ioi.answer_tokens, positions=end)
        corrupt = logits_to_ave_logit_diff(model(abc.toks), ioi.answer_tokens, positions=end)
    mean = make_ioi_metric(clean, corrupt, ioi.answer_tokens, end)
    each = make_ioi_metric(clean, corrupt, ioi.answer_tokens, end, reduce="none")
    return model, mean, each, ioi, abc


SENDERS = [Sender("head", 0, h) for h in range(4)] + [Sender("head", 1, 2), Sender("mlp", 0)]


@pytest.mark.parametrize("to_heads", [False, True])
def test_per_prompt_mean_equals_scalar_and_plain_per_prompt(setup, to_heads):
    model, mean, each, ioi, abc = setup
    receivers = make_receivers([(2, 1)], "v") if to_heads else None
    scalar = path_patch(model, mean, abc, ioi, SENDERS, receivers)
    values = path_patch(model, each, abc, ioi, SENDERS, receivers)
    assert values.shape == (len(SENDERS), 6)
    torch.testing.assert_close(values.mean(-1), scalar, atol=1e-6, rtol=0)
    assert (scalar - 1).abs().max() > 1e-3, "no sender has an effect: the test would be trivial"
    plain = torch.stack([plain_path_patch(model, each, abc, ioi, s, receivers) for s in SENDERS])
    torch.testing.assert_close(values, plain, atol=1e-4, rtol=0)
    est = bootstrap(values, seed=0)
    assert est.shape == (len(SENDERS),) and est.n == 6
    torch.testing.assert_close(est.mean.float(), scalar, atol=1e-5, rtol=0)
