"""``ioi replicate``'s report on the bundled model: every section is there, and its numbers are
the library's, checked against the library's own functions (and one hand-made patch)."""

from __future__ import annotations

import html
import json

import pytest
import torch
from plotly.offline import get_plotlyjs
from transformer_lens.utilities import get_act_name

from ioi.circuit import (
    Circuit,
    MeanAblation,
    PathPatchingOracle,
    discover_circuit,
    faithfulness,
)
from ioi.dataset import IOIDataset
from ioi.evaluate import evaluate_ioi
from ioi.head import Head
from ioi.heads import per_head_logit_diffs
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.patching import get_act_patch_attn_head_out_all_pos
from ioi.path_patching import get_path_patch_head_to_final_resid_post
from ioi.replicate import replicate
from ioi.report import SECTIONS, Settings
from ioi.report.document import Figure
from ioi.report.images import export_pngs
from ioi.testing import hook_count

pytestmark = pytest.mark.slow

N, SEED, PATCH_N = 12, 2, 8
THRESHOLDS = (0.1, 0.03)
SWEEPS = ("resid_pre", "z")
KEYS = [key for key, _, _ in SECTIONS]


@pytest.fixture(scope="module")
def report(toy_model, tmp_path_factory):
    """One small run of the whole report on the toy model, without PNG export."""
    out = tmp_path_factory.mktemp("report")
    results = replicate(
        toy_model,
        n=N,
        seed=SEED,
        out=out,
        model_name="toy",
        patch_prompts=PATCH_N,
        thresholds=THRESHOLDS,
        sweeps=SWEEPS,
        png=False,
    )
    return {
        "results": results,
        "json": json.loads((out / "results.json").read_text()),
        "html": (out / "report.html").read_text(encoding="utf-8"),
        "md": (out / "report.md").read_text(encoding="utf-8"),
    }


def prompts(model, n):
    ds = IOIDataset(n, "mixed", seed=SEED, tokenizer=model)
    return ds, ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")


def numbers(report, key):
    return report["json"]["sections"][key]["numbers"]


def test_every_section_is_written_in_all_three_files(report):
    sections = report["json"]["sections"]
    assert list(sections) == KEYS
    for key in KEYS:
        expected = "not_applicable" if key == "reference" else "filled"
        assert sections[key]["status"] == expected, (key, sections[key].get("reason"))
        title = sections[key]["title"]
        assert f'<section id="{key}"><h2>{html.escape(title)}</h2>' in report["html"]
        assert f'<a id="{key}"></a>\n\n## {title}\n' in report["md"]
    assert "Not applicable" in report["html"] and "GPT-2 small" in sections["reference"]["reason"]


def test_html_is_self_contained_with_plotly_js_once(report):
    page = report["html"]
    embedded = page.count(get_plotlyjs()[:200])
    loads_scripts = "<script src=" in page or '<link rel="stylesheet" href="http' in page
    n_figures = page.count('<figure id="fig-')
    n_plots = page.count('class="plotly-graph-div"')
    assert (embedded, loads_scripts) == (1, False)
    assert n_figures >= 15 and n_plots == n_figures


def test_markdown_links_figures_to_html_without_png(report):
    md = report["md"]
    assert "PNG export was turned off" in md
    assert md.count("(report.html#fig-") == report["html"].count('<figure id="fig-')
    assert report["json"]["figures"]["png"] == []


def test_performance_matches_evaluate_ioi(report, toy_model):
    ds, abc = prompts(toy_model, N)
    expected = evaluate_ioi(toy_model, ds, abc)
    got = report["json"]["performance"]
    assert got["overall"] == pytest.approx(expected["overall"])
    assert got["abc_logit_diff"] == pytest.approx(expected["abc_logit_diff"])
    assert numbers(report, "performance")["performance"]["n_prompts"] == N
    # the same number is printed in both reports
    assert f"{expected['overall']['logit_diff']:.3f}" in report["md"]
    assert f"{expected['overall']['logit_diff']:.3f}" in report["html"]


def test_attribution_matches_per_head_logit_diffs(report, toy_model):
    ds, _ = prompts(toy_model, N)
    with torch.no_grad():
        _, cache = toy_model.run_with_cache(ds.toks)
    expected = per_head_logit_diffs(toy_model, cache, ds.answer_tokens, ds.word_idx["end"])
    got = numbers(report, "attribution")["per_head"]
    for layer in range(toy_model.cfg.n_layers):
        for head in range(toy_model.cfg.n_heads):
            assert got[str(Head(layer, head))] == pytest.approx(
                float(expected[layer, head]), abs=1e-4
            )


def _patch_metric(model, n):
    ds, abc = prompts(model, n)
    end = ds.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, positions=end)
        corrupt = logits_to_ave_logit_diff(model(abc.toks), ds.answer_tokens, positions=end)
    return ds, abc, make_ioi_metric(clean, corrupt, ds.answer_tokens, end)


def test_head_patching_matches_the_transformer_lens_style_dropin(report, toy_model):
    ds, abc, metric = _patch_metric(toy_model, PATCH_N)
    with torch.no_grad():
        _, clean_cache = toy_model.run_with_cache(ds.toks)
    expected = get_act_patch_attn_head_out_all_pos(toy_model, abc.toks, clean_cache, metric)
    got = torch.tensor(numbers(report, "activation_patching")["sweeps"]["z"]["normalized"])
    torch.testing.assert_close(got, expected.cpu().float(), atol=1e-4, rtol=1e-4)


def test_residual_patching_matches_a_hand_made_patch(report, toy_model):
    """Patch resid_pre of layer 1 at S2 (one position per prompt) by hand, with a hook."""
    ds, abc, metric = _patch_metric(toy_model, PATCH_N)
    name = get_act_name("resid_pre", 1)
    with torch.no_grad():
        _, clean_cache = toy_model.run_with_cache(ds.toks, names_filter=name)
    rows, s2 = torch.arange(PATCH_N), ds.word_idx["S2"]

    def patch(resid, hook):  # resid: [batch, pos, d_model]
        resid[rows, s2] = clean_cache[name][rows, s2]
        return resid

    with torch.no_grad():
        expected = float(metric(toy_model.run_with_hooks(abc.toks, fwd_hooks=[(name, patch)])))
    sweep = numbers(report, "activation_patching")["sweeps"]["resid_pre"]
    assert sweep["axes"] == ["layer", "pos"] and sweep["labels"][1][3] == "S2"
    assert sweep["normalized"][1][3] == pytest.approx(expected, abs=1e-4)


def test_attribution_patching_is_reported_with_its_correlation(report):
    att = numbers(report, "activation_patching")["attribution_patching"]
    assert -1.0 <= att["pearson"] <= 1.0 and att["max_abs_error"] >= 0.0
    assert "Attribution patching estimates" in report["md"]


def test_path_patching_matches_get_path_patch_head_to_final_resid_post(report, toy_model):
    ds, abc = prompts(toy_model, N)
    oracle = PathPatchingOracle(toy_model, ds, abc)
    expected = get_path_patch_head_to_final_resid_post(toy_model, oracle.metric, abc, ds)
    got = numbers(report, "path_patching")["heads_to_logits"]
    for layer in range(toy_model.cfg.n_layers):
        for head in range(toy_model.cfg.n_heads):
            # the report gives the change of the metric; the library gives the metric (1 = none)
            assert got[str(Head(layer, head))] == pytest.approx(
                float(expected[layer, head]) - 1.0, abs=1e-4
            )


def test_circuit_and_faithfulness_match_discovery_and_mean_ablation(report, toy_model):
    ds, abc = prompts(toy_model, N)
    circuit_numbers = numbers(report, "circuit")
    threshold = circuit_numbers["threshold"]
    assert threshold in THRESHOLDS
    found = discover_circuit(PathPatchingOracle(toy_model, ds, abc), threshold)
    reported = {h for heads in circuit_numbers["circuit"]["heads"].values() for h in heads}
    assert reported == {str(h) for h in found.heads()}
    assert "circuit_graph" in report["html"]

    circuit = Circuit(circuit_numbers["circuit"]["heads"], circuit_numbers["circuit"]["positions"])
    expected = faithfulness(MeanAblation.build(toy_model, ds, abc), circuit)
    got = numbers(report, "criteria")["discovered"]
    assert got["f_model"] == pytest.approx(expected.f_model, abs=1e-4)
    assert got["f_circuit"] == pytest.approx(expected.f_circuit, abs=1e-4)
    assert got["ratio"] == pytest.approx(expected.ratio, abs=1e-5)
    assert len(got["minimality"]) == len(circuit) and got["completeness"]


def test_report_leaves_no_hooks(report, toy_model):
    assert hook_count(toy_model) == 0


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="unknown sweeps"):
        Settings(sweeps=("resid_pre", "nope"))
    with pytest.raises(ValueError, match="thresholds"):
        Settings(thresholds=(0.1, -1.0))
    with pytest.raises(ValueError, match="patch_prompts"):
        Settings(patch_prompts=0)


def test_png_export_writes_pngs_or_says_why(tmp_path):
    import plotly.graph_objects as go

    fig = Figure("bars", go.Figure(go.Bar(x=["a", "b"], y=[1, 2])))
    export = export_pngs([fig], tmp_path)
    if export.paths:
        assert export.paths["bars"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert export.reason  # kaleido or a browser is missing: the reason is given
