"""SAE quality: each metric against a hand computation, and the identity SAE recovers 100%."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from ioi.dataset import IOIDataset
from ioi.features import evaluate_saes, quality_table
from ioi.features.quality import (
    answer_ce_loss,
    dead_features,
    l0,
    recovered,
    token_ce_loss,
    variance_explained,
)
from ioi.features.testing import identity_sae, random_sae
from ioi.metrics import logits_to_ave_logit_diff

HOOK = "blocks.1.hook_resid_pre"


def test_l0_and_dead_features_by_hand():
    feats = torch.tensor([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 3.0], [0.0, 0.5, 0.0, 0.0]])
    assert l0(feats) == pytest.approx((2 + 1 + 1) / 3)
    assert dead_features(feats).tolist() == [True, False, True, False]


def test_variance_explained_by_hand():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0]])  # mean (2, 1): total sum of squares 4
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 2.0]])  # residual sum of squares 1
    assert variance_explained(x, x_hat) == pytest.approx(1 - 1 / 4)
    assert variance_explained(x, x) == 1.0
    with pytest.raises(ValueError, match="do not vary"):
        variance_explained(torch.ones(3, 2), torch.ones(3, 2))


def test_recovered_by_hand():
    assert recovered(clean=2.0, spliced_value=2.5, ablated=4.0) == pytest.approx(0.75)  # a loss
    assert recovered(clean=3.0, spliced_value=2.0, ablated=-1.0) == pytest.approx(0.75)  # a gain
    with pytest.raises(ValueError, match="undefined"):
        recovered(1.0, 1.0, 1.0)


def test_losses_against_torch_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=gen)
    toks = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    total, count = token_ce_loss(logits, toks, torch.tensor([4, 2]))
    expected = torch.cat(
        [
            F.cross_entropy(logits[0, :3], toks[0, 1:4], reduction="none"),
            F.cross_entropy(logits[1, :1], toks[1, 1:2], reduction="none"),
        ]
    )
    assert count == 4
    torch.testing.assert_close(total, expected.sum())
    per_prompt = answer_ce_loss(logits, torch.tensor([5, 6]), torch.tensor([2, 1]))
    torch.testing.assert_close(
        per_prompt, F.cross_entropy(logits[[0, 1], [2, 1]], torch.tensor([5, 6]), reduction="none")
    )


@pytest.fixture(scope="module")
def prompts(toy_model):
    return IOIDataset(12, "mixed", seed=2, tokenizer=toy_model)


def test_identity_sae_recovers_everything(toy_model, prompts, no_hooks_after):
    (result,) = evaluate_saes(toy_model, {HOOK: identity_sae(64)}, prompts, batch_size=5)
    assert result.variance_explained == 1.0
    assert result.logit_diff_sae == pytest.approx(result.logit_diff_clean, abs=1e-4)
    assert result.logit_diff_recovered_zero == pytest.approx(1.0, abs=1e-5)
    assert result.logit_diff_recovered_mean == pytest.approx(1.0, abs=1e-5)
    assert result.ce_recovered_zero == pytest.approx(1.0, abs=1e-5)
    assert result.n_tokens == int(prompts.seq_lens.sum())
    no_hooks_after(toy_model)


def test_ablation_baselines_against_plain_hooks(toy_model, prompts):
    """The zero- and mean-ablated logit differences and losses, recomputed in one pass each."""
    sae = random_sae(64, 128, seed=1)
    (r,) = evaluate_saes(toy_model, {HOOK: sae}, prompts, loss_positions="all", batch_size=7)
    toks, answers, end = prompts.toks, prompts.answer_tokens, prompts.word_idx["end"]
    _, cache = toy_model.run_with_cache(toks, names_filter=HOOK)
    real = torch.arange(toks.shape[1])[None] < prompts.seq_lens[:, None]
    mean = cache[HOOK][real].mean(0)
    runs = {
        "zero": lambda act, hook: torch.zeros_like(act),
        "mean": lambda act, hook: mean.expand_as(act),
        "sae": lambda act, hook: sae.decode(sae.encode(act)),
    }
    for key, hook in runs.items():
        logits = toy_model.run_with_hooks(toks, fwd_hooks=[(HOOK, hook)]).detach()
        ld = logits_to_ave_logit_diff(logits, answers, positions=end).item()
        total, count = token_ce_loss(logits, toks, prompts.seq_lens)
        assert getattr(r, f"logit_diff_{key}") == pytest.approx(ld, abs=1e-4)
        assert getattr(r, f"ce_{key}") == pytest.approx(total.item() / count, abs=1e-4)
    # A random SAE is a bad one: it recovers far from all of the logit difference.
    assert r.logit_diff_recovered_zero < 0.9
    assert r.variance_explained < 0.9


def test_table_renders_every_measure(toy_model, prompts):
    results = evaluate_saes(toy_model, {HOOK: identity_sae(64)}, prompts)
    console = Console(width=120, record=True)
    console.print(quality_table(results))
    text = console.export_text()
    assert HOOK in text and "CE loss recovered (vs mean)" in text and "100.0%" in text


def test_bad_loss_positions(toy_model, prompts):
    with pytest.raises(ValueError, match="unknown loss_positions 'last'.*end, all"):
        evaluate_saes(toy_model, {HOOK: identity_sae(64)}, prompts, loss_positions="last")
