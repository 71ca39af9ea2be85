"""``ioi replicate``'s report on the bundled model: every section is there, and its numbers are
the library's, checked against the library's own functions (and one hand-made patch)."""

from __future__ import annotations

import html
import json
import re

import pytest
import torch
from plotly.offline import get_plotlyjs
from rich.console import Console
from transformer_lens.utilities import get_act_name

from ioi.circuit import (
    Circuit,
    MeanAblation,
    PathPatchingOracle,
    discover_circuit,
    faithfulness,
    gpt2_small_circuit,
)
from ioi.dataset import IOIDataset
from ioi.evaluate import evaluate_ioi
from ioi.head import Head
from ioi.heads import per_head_logit_diffs
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.patching import activation_patching, get_act_patch_attn_head_out_all_pos, sweep
from ioi.path_patching import Sender, get_path_patch_head_to_final_resid_post, plain_path_patch
from ioi.replicate import replicate
from ioi.report import SECTIONS, Settings
from ioi.report.document import Figure
from ioi.report.edges_section import EdgeSettings
from ioi.report.images import export_pngs
from ioi.report.progress import Tracker
from ioi.report.sections import ReportContext, section_activation_patching, section_circuit
from ioi.statistics import bootstrap
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
    with pytest.raises(ValueError, match="n must be at least 2.*intervals"):
        Settings(n=1)
    with pytest.raises(ValueError, match="EdgeSettings.exact_edges"):
        Settings(edges=EdgeSettings(exact_edges=0))
    with pytest.raises(ValueError, match="max_heads must be >= 1 or None"):
        Settings(max_heads=0)
    for bad in ("52", 5.0, True):  # the tests' type checker may answer first, naming it
        with pytest.raises(TypeError, match="max_heads"):
            Settings(max_heads=bad)


def test_default_head_budget_is_twice_the_papers_circuit():
    """The default's stated reason (Settings' docstring and ``ioi replicate --help``)."""
    assert Settings.max_heads == 2 * len(gpt2_small_circuit().all_heads()) == 52
    assert "twice the 26 heads" in Settings.__doc__


def test_a_head_budget_that_fills_is_stated_in_the_circuit_section(toy_model):
    settings = Settings(n=N, seed=SEED, thresholds=(0.05,), max_heads=1)
    with Tracker(Console(quiet=True)) as tracker:
        ctx = ReportContext(toy_model, "toy", settings, tracker)
        section = section_circuit(ctx)
    (point,) = ctx.discovery[1]
    assert point.n_heads == 1 and point.discovered.budget_full and point.discovered.left_out > 0
    text = " ".join(section.text)
    assert "The head budget (1 head, `Settings.max_heads`) filled at threshold(s) 0.05" in text
    assert f"in the round that filled it {point.discovered.left_out} more head(s) passed" in text
    assert "Chosen threshold **0.05**: 1 head, keeping" in text
    (sweep_table,) = [t for t in section.tables if t.title == "Threshold sweep"]
    assert sweep_table.rows[0][-1] == point.discovered.left_out
    assert section.numbers["sweep"][0]["budget_full"] and section.numbers["max_heads"] == 1


def test_edge_section_tables_and_curve_are_in_all_three_files(report):
    section = report["json"]["sections"]["edges"]
    titles = [t["title"] for t in section["tables"]]
    assert titles == [
        "Agreement with exact edge patching",
        "Heads: edge circuit vs node circuit",
        f"Top {EdgeSettings().exact_edges} edges by |EAP|",
    ]
    assert report["json"]["settings"]["edges"]["exact_edges"] == EdgeSettings().exact_edges
    for title in titles:
        assert f"### {title}" in report["md"] or f"**{title}**" in report["md"], title
        assert html.escape(title) in report["html"], title
    assert '<figure id="fig-edge_faithfulness">' in report["html"]
    assert "(report.html#fig-edge_faithfulness)" in report["md"]


def test_png_export_writes_pngs_or_says_why(tmp_path):
    import plotly.graph_objects as go

    fig = Figure("bars", go.Figure(go.Bar(x=["a", "b"], y=[1, 2])))
    export = export_pngs([fig], tmp_path)
    if export.paths:
        assert export.paths["bars"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert export.reason  # kaleido or a browser is missing: the reason is given


# ---- intervals over prompts ----------------------------------------------------------------


def _per_prompt_metric(model, n):
    """The report's normalised metric, one value per prompt, and both runs' per-prompt values."""
    ds, abc = prompts(model, n)
    end = ds.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, True, end)
        corrupt = logits_to_ave_logit_diff(model(abc.toks), ds.answer_tokens, True, end)
    metric = make_ioi_metric(clean.mean(), corrupt.mean(), ds.answer_tokens, end, reduce="none")
    return ds, abc, metric


def table(report, key, title):
    tables = {t["title"]: t for t in report["json"]["sections"][key]["tables"]}
    assert title in tables, f"no table {title!r} in {key}: {list(tables)}"
    found = tables[title]
    return found["columns"], [
        dict(zip(found["columns"], row, strict=True)) for row in found["rows"]
    ]


INTERVAL_COLUMNS = ["SE", "95% low", "95% high"]


def test_patching_table_intervals_equal_an_interval_from_a_hand_made_patch(report, toy_model):
    """The head-output row of 'Largest effects per sweep': its SE and interval are those of a
    bootstrap of per-prompt values patched by hand, and of `PatchResult.interval`."""
    columns, rows = table(report, "activation_patching", "Largest effects per sweep")
    assert columns == ["sweep", "site", "normalised effect", *INTERVAL_COLUMNS]
    row = next(r for r in rows if r["sweep"] == "z")
    ds, abc, metric = _per_prompt_metric(toy_model, PATCH_N)
    layer, head = (int(x) for x in re.fullmatch(r"z L(\d+) H(\d+)", row["site"]).groups())
    name = get_act_name("z", layer)
    with torch.no_grad():
        _, clean_cache = toy_model.run_with_cache(ds.toks, names_filter=name)

        def patch(z, hook):  # z: [batch, pos, head, d_head]
            z[:, :, head] = clean_cache[name][:, :, head]
            return z

        patched = metric(toy_model.run_with_hooks(abc.toks, fwd_hooks=[(name, patch)]))
        clean, corrupted = metric(toy_model(ds.toks)), metric(toy_model(abc.toks))
    expected = bootstrap([patched, corrupted, clean], lambda p, c, k: (p - c) / (k - c))
    assert row["normalised effect"] == pytest.approx(float(expected.mean), abs=1e-4)
    got = [row[c] for c in INTERVAL_COLUMNS]
    assert got == pytest.approx(
        [float(expected.se), float(expected.low), float(expected.high)], abs=1e-4
    )
    assert got[2] - got[1] > 1e-3, "a point interval: the test would be trivial"

    # the same numbers from the library directly, and in results.json's numbers
    result = activation_patching(
        toy_model, ds.toks, abc.toks, metric, sweep(toy_model, "z", ds.toks.shape[1])
    )
    direct = result.interval("normalized")
    assert got == pytest.approx(
        [float(t[layer, head]) for t in (direct.se, direct.low, direct.high)], abs=1e-6
    )
    stored = numbers(report, "activation_patching")["sweeps"]["z"]["normalized_interval"]
    assert stored["low"][layer][head] == pytest.approx(got[1], abs=1e-6)
    change = result.interval("change")
    assert numbers(report, "activation_patching")["sweeps"]["z"]["change_excludes_zero"] == (
        change.excludes_zero().tolist()
    )


def test_path_patching_intervals_equal_a_plain_per_prompt_path_patch(report, toy_model):
    path = numbers(report, "path_patching")
    interval = path["heads_to_logits_interval"]
    for label, value in path["heads_to_logits"].items():  # the mean is the reported effect
        assert interval["mean"][label] == pytest.approx(value, abs=1e-5)
    columns, rows = table(
        report, "path_patching", "Heads with the largest direct path to the logits"
    )
    assert columns == ["head", "effect", *INTERVAL_COLUMNS]
    top = rows[0]
    ds, abc, metric = _per_prompt_metric(toy_model, N)
    at = Head.parse(top["head"])
    values = plain_path_patch(toy_model, metric, abc, ds, Sender("head", at.layer, at.head))
    expected = bootstrap(values - 1.0)  # change of the metric, per prompt
    got = [top[c] for c in INTERVAL_COLUMNS]
    assert got == pytest.approx(
        [float(expected.se), float(expected.low), float(expected.high)], abs=1e-4
    )
    assert interval["high"][top["head"]] == pytest.approx(got[2], abs=1e-9)


def test_faithfulness_intervals_equal_faithfulness_interval(report, toy_model):
    ds, abc = prompts(toy_model, N)
    circuit_numbers = numbers(report, "circuit")["circuit"]
    circuit = Circuit(circuit_numbers["heads"], circuit_numbers["positions"])
    faith = faithfulness(MeanAblation.build(toy_model, ds, abc), circuit)
    got = numbers(report, "criteria")["discovered"]
    _, rows = table(report, "criteria", "Faithfulness of the discovered circuit")
    by_name = {r["value"]: r for r in rows}
    for value, name in (("ratio", "F(C) / F(M)"), ("gap", "|F(M) - F(C)|"), ("f_model", "F(M)")):
        expected = faith.interval(value)
        stored = got["faithfulness_intervals"][value]
        for key in ("mean", "se", "low", "high"):
            assert stored[key] == pytest.approx(float(getattr(expected, key)), abs=1e-5), (
                value,
                key,
            )
        shown = by_name[name]
        assert [shown["mean"], *(shown[c] for c in INTERVAL_COLUMNS)] == pytest.approx(
            [stored["mean"], stored["se"], stored["low"], stored["high"]], abs=1e-9
        )
    assert got["faithfulness_intervals"]["ratio"]["mean"] == pytest.approx(got["ratio"], abs=1e-6)
    ratio = got["faithfulness_intervals"]["ratio"]
    assert ratio["low"] < ratio["high"], "a point interval: the test would be trivial"
    for score in got["minimality"] + got["completeness"]:
        assert score["score_interval"]["mean"] == pytest.approx(score["score"], rel=1e-5, abs=1e-5)
    columns, _ = table(report, "criteria", "Minimality of the discovered circuit")
    assert columns[3:6] == INTERVAL_COLUMNS


@pytest.mark.parametrize(
    ("key", "n"), [("activation_patching", PATCH_N), ("path_patching", N), ("criteria", N)]
)
def test_each_section_states_n_and_the_interval_method_once(report, key, n):
    method = numbers(report, key)["intervals"]
    assert (method["n"], method["method"], method["level"]) == (n, "percentile bootstrap", 0.95)
    assert f"n={n} prompts" in method["describe"]
    for text, anchor, next_heading in (
        (report["md"], f'<a id="{key}"></a>', '<a id="'),
        (report["html"], f'<section id="{key}">', "<section id="),
    ):
        start = text.index(anchor) + len(anchor)
        body = text[start : text.find(next_heading, start)]
        assert body.count(method["describe"]) == 1, (key, "stated once per section")
        assert "95% low" in body and "SE" in body


def test_masked_head_heatmap_blanks_exactly_the_cells_whose_interval_contains_zero(toy_model):
    settings = Settings(n=N, seed=SEED, patch_prompts=PATCH_N, thresholds=THRESHOLDS, sweeps=("z",))
    with Tracker(Console(quiet=True)) as tracker:
        section = section_activation_patching(ReportContext(toy_model, "toy", settings, tracker))
    figures = {f.key: f.fig for f in section.figures}
    shown = torch.tensor(figures["patch_z"].data[0].z, dtype=torch.float64)
    masked = torch.tensor(figures["patch_z_masked"].data[0].z, dtype=torch.float64)

    ds, abc, metric = _per_prompt_metric(toy_model, PATCH_N)
    n_pos = ds.toks.shape[1]
    result = activation_patching(toy_model, ds.toks, abc.toks, metric, sweep(toy_model, "z", n_pos))
    change = result.interval("change")
    blank = (change.low <= 0) & (change.high >= 0)  # the interval contains 0
    assert 0 < int(blank.sum()) < blank.numel(), "all or no cells blank: the test would be trivial"
    assert torch.equal(masked.isnan(), blank) and not shown.isnan().any()
    torch.testing.assert_close(masked[~blank], shown[~blank], rtol=0, atol=0)
    caption = {f.key: f.caption for f in section.figures}["patch_z_masked"]
    assert "blank where the change's 95% percentile bootstrap interval over n=8" in caption


def test_threshold_sweep_table_gives_each_circuits_faithfulness_interval(report, toy_model):
    ds, abc = prompts(toy_model, N)
    ablation = MeanAblation.build(toy_model, ds, abc)
    oracle = PathPatchingOracle(toy_model, ds, abc)
    columns, rows = table(report, "circuit", "Threshold sweep")
    assert columns == [
        "threshold", "heads", "F(C)", "F(M)", "F(C) / F(M)", *INTERVAL_COLUMNS, "left out"
    ]  # fmt: skip
    assert rows and numbers(report, "circuit")["intervals"]["n"] == N
    assert all(row["left out"] == 0 for row in rows)  # the toy's 12 heads never fill 52
    for row, point in zip(rows, numbers(report, "circuit")["sweep"], strict=True):
        found = discover_circuit(oracle, row["threshold"])
        if found.circuit is None:  # no head passed: every head ablated, by hand
            kept = ablation.logit_diff({}, per_prompt=True)
            full = ablation.logit_diff(None, per_prompt=True)
            expected = bootstrap([kept, full], lambda c, m: c / m)
        else:
            expected = faithfulness(ablation, found.circuit).interval("ratio")
        assert float(expected.mean) == pytest.approx(row["F(C) / F(M)"], abs=1e-5)
        got = [row[c] for c in INTERVAL_COLUMNS]
        assert got == pytest.approx(
            [float(expected.se), float(expected.low), float(expected.high)], abs=1e-5
        )
        assert point["faithfulness_interval"]["low"] == pytest.approx(got[1], abs=1e-9)


def test_why_each_head_is_in_gives_each_effects_interval(report, toy_model):
    """The table's SE and interval are the discovered circuit's `effects` (checked against
    direct path patching and `bootstrap` in tests/circuit), and results.json carries them."""
    ds, abc = prompts(toy_model, N)
    circuit_numbers = numbers(report, "circuit")
    found = discover_circuit(PathPatchingOracle(toy_model, ds, abc), circuit_numbers["threshold"])
    columns, rows = table(report, "circuit", "Why each head is in")
    assert columns[3:7] == ["effect", *INTERVAL_COLUMNS]
    assert len(rows) == len(found.findings) > 0 and found.effects.n == N
    for i, (row, finding) in enumerate(zip(rows, found.findings, strict=True)):
        assert row["head"] == str(finding.head)
        assert row["effect"] == pytest.approx(finding.effect, abs=1e-5)
        want = [
            float(found.effects.se[i]),
            float(found.effects.low[i]),
            float(found.effects.high[i]),
        ]
        assert [row[c] for c in INTERVAL_COLUMNS] == pytest.approx(want, abs=1e-5)
        assert row["95% low"] <= row["effect"] <= row["95% high"]
    interval = circuit_numbers["findings"][0]["effect_interval"]
    assert interval["low"] == pytest.approx(rows[0]["95% low"], abs=1e-9)
