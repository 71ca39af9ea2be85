"""The feature browser: its data against `ioi.features` by hand, and the page under AppTest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ioi.dataset import IOIDataset
from ioi.features import RoleContrast, interpret_feature, load_toy_saes
from ioi.features.activations import ABC_FLIP
from ioi.site.features import feature_view, logit_effects_table, top_prompts_table

PAGE = Path(__file__).resolve().parents[2] / "streamlit_app" / "pages" / "9_Feature_browser.py"
HOOK = "blocks.1.hook_resid_pre"


def test_the_view_is_the_sae_encoding_and_w_u_by_hand(toy_model):
    saes = load_toy_saes(device="cpu")
    ds = IOIDataset(10, "mixed", seed=0, tokenizer=toy_model)
    view = feature_view(toy_model, saes, HOOK, 5, ds, prompt=3, k=4)
    n_tok = int(ds.seq_lens[3]) - 1
    with torch.no_grad():
        _, cache = toy_model.run_with_cache(ds.toks[3:4, :n_tok], names_filter=HOOK)
        expected = saes[HOOK].encode(cache[HOOK])[0, :, 5]
        effect = saes[HOOK].W_dec[5] @ toy_model.W_U
    torch.testing.assert_close(view.activations, expected)
    assert len(view.tokens) == n_tok and view.tokens[-1] == toy_model.to_string(
        ds.toks[3, n_tok - 1]
    )
    top = effect.argsort(descending=True)[:4].tolist()
    assert [t for t, _ in view.report.promoted] == [toy_model.to_string([i]) for i in top]
    table = logit_effects_table(view)
    assert len(table.rows) == 4 and table.rows[0][1] == pytest.approx(float(effect[top[0]]))
    prompts = top_prompts_table(view, ds, toy_model)
    i, pos, _, act, sentence = prompts.rows[0]
    with torch.no_grad():
        _, full = toy_model.run_with_cache(ds.toks, names_filter=HOOK)
        all_acts = saes[HOOK].encode(full[HOOK])[..., 5]
    real = torch.arange(ds.toks.shape[1])[None, :] < ds.seq_lens[:, None]  # padding never counts
    assert act == pytest.approx(float(all_acts[real].max())) and sentence == ds.sentences[i]
    assert pos < int(ds.seq_lens[i])
    assert float(all_acts[i, pos]) == pytest.approx(act)


def test_with_its_abc_prompts_the_view_reads_the_role_from_the_contrast(toy_model):
    saes = load_toy_saes(device="cpu")
    ds = IOIDataset(40, "mixed", seed=0, tokenizer=toy_model)
    abc = ds.gen_flipped_prompts(ABC_FLIP)
    plain = feature_view(toy_model, saes, HOOK, 5, ds, prompt=0)
    view = feature_view(toy_model, saes, HOOK, 5, ds, prompt=0, abc=abc)
    expected = interpret_feature(
        toy_model, saes[HOOK], HOOK, 5, ds.toks, ds.word_idx, seq_lens=ds.seq_lens,
        contrast=RoleContrast.of(ds, abc),
    )  # fmt: skip
    assert plain.report.role_evidence == {} and view.report.role_evidence
    assert view.report.role == expected.role
    assert view.report.role_evidence == pytest.approx(expected.role_evidence)
    short = IOIDataset(4, "mixed", seed=0, tokenizer=toy_model)
    with pytest.raises(ValueError, match="one prompt per IOI prompt"):
        feature_view(toy_model, saes, HOOK, 5, ds, prompt=0, abc=short)


def test_bad_choices_are_named(toy_model):
    saes = load_toy_saes(device="cpu")
    ds = IOIDataset(4, "mixed", seed=0, tokenizer=toy_model)
    with pytest.raises(ValueError, match="SAEs are at"):
        feature_view(toy_model, saes, "blocks.0.hook_resid_pre", 0, ds, 0)
    with pytest.raises(ValueError, match="0..3"):
        feature_view(toy_model, saes, HOOK, 0, ds, 4)
    with pytest.raises(ValueError, match="no feature 999"):
        feature_view(toy_model, saes, HOOK, 999, ds, 0)


@pytest.mark.slow
def test_the_page_shows_a_feature_of_the_toy_sae():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    # From the home page, as the site runs (it puts streamlit_app/ on the path for ioi_site).
    at = AppTest.from_file(str(PAGE.parents[1] / "Home.py"), default_timeout=600)
    at.session_state["ioi_n"] = 10
    at = at.run().switch_page("pages/9_Feature_browser.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value == "Feature browser"
    assert len(at.get("plotly_chart")) == 1 and len(at.dataframe) >= 2
    at.number_input(key="fb_feature").set_value(7).run()
    assert not at.exception, [e.message for e in at.exception]
    assert "f7 on prompt" in at.get("plotly_chart")[0].proto.spec
    assert any(c.value.startswith("Role evidence (Cohen's d") and "name share" in c.value
               for c in at.caption)  # fmt: skip
