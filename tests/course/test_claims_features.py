"""What section 7's text (course/07_feature_circuits.py) says about the toy model's SAEs,
re-measured with the library on the section's own prompts (40 mixed, seed 11, SAE at
``blocks.2.hook_resid_pre``)."""

from __future__ import annotations

import functools

import pytest
import torch

from ioi.dataset import IOIDataset
from ioi.features import feature_attribution, load_toy_saes
from ioi.features.quality import l0
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric

pytestmark = pytest.mark.slow
HOOK = "blocks.2.hook_resid_pre"


@functools.lru_cache(maxsize=1)
def section():
    from ioi.models import load_model

    model = load_model("toy", device="cpu")
    sae = load_toy_saes(device="cpu")[HOOK]
    ds = IOIDataset(N=40, prompt_type="mixed", seed=11, tokenizer=model)
    abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    end = ds.word_idx["end"]
    with torch.no_grad():
        _, cache = model.run_with_cache(ds.toks, names_filter=HOOK)
        ld = logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, positions=end)
        ld_abc = logits_to_ave_logit_diff(model(abc.toks), ds.answer_tokens, positions=end)
    metric = make_ioi_metric(ld, ld_abc, ds.answer_tokens, positions=end)
    return model, sae, ds, abc, cache[HOOK], metric


def test_the_shipped_saes_are_as_the_introduction_says():
    """'two TopK SAEs (SAELens TopKSAEs, 256 features, k = 16) on blocks.1.hook_resid_pre and
    blocks.2.hook_resid_pre', with the decoder-norm rescaling step 3 describes."""
    from sae_lens import TopKSAE

    saes = load_toy_saes(device="cpu")
    assert sorted(saes) == ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]
    for sae in saes.values():
        assert isinstance(sae, TopKSAE) and sae.cfg.d_sae == 256 and sae.cfg.k == 16
        assert sae.cfg.rescale_acts_by_decoder_norm and sae.cfg.apply_b_dec_to_input


def test_l0_equals_k_on_the_sections_prompts():
    """'On these prompts it is not: the L0 printed equals k.'"""
    _, sae, ds, _, acts, _ = section()
    real = torch.arange(ds.toks.shape[1])[None] < ds.seq_lens[:, None]
    with torch.no_grad():
        assert l0(sae.encode(acts[real])) == sae.cfg.k


def test_attribution_patching_does_not_add_up_and_integrated_gradients_do():
    """'No: the cell prints their sum, far from -1' and IG 'add up to the whole hook point's
    effect' (-1: the whole hook point patched gives the corrupted metric, 0)."""
    model, sae, ds, abc, _, metric = section()
    atp = feature_attribution(model, {HOOK: sae}, ds.toks, abc.toks, metric, method="atp")
    ig = feature_attribution(model, {HOOK: sae}, ds.toks, abc.toks, metric, method="ig", steps=10)
    assert abs(float(atp.scores[HOOK].sum()) + 1) > 0.5
    assert abs(float(ig.scores[HOOK].sum()) + 1) < 0.05


@pytest.mark.parametrize("claim", [r"There\s+are\s+(\d+)\s+exercises"])
def test_readme_counts_every_exercise(claim):
    """The README's 'There are N exercises' is the number of exercises the course declares."""
    import re

    from ioi.checks.targets import course_exercises
    from ioi.course.build import find_root

    root = find_root()
    # Prose gets re-wrapped: the claim may break across lines.
    (stated,) = re.findall(claim, (root / "README.md").read_text(encoding="utf-8"))
    assert int(stated) == len(course_exercises(root))
