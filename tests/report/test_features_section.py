"""The report's feature section against `ioi.features` called directly on the same prompts."""

from __future__ import annotations

import pytest
import torch

from ioi.features import (
    compare_families,
    evaluate_saes,
    faithfulness,
    family_labels,
    feature_attribution,
    load_toy_saes,
    select_nodes,
)
from ioi.features.families import VERDICTS
from ioi.features.toy_circuit import one_template_prompts
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.report.features_section import FeatureSettings, section_features
from ioi.testing import hook_count
from tests.report.conftest import N

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def section(ctx):
    return section_features(ctx)


def test_quality_table_is_evaluate_saes_on_the_report_prompts(section, ctx, toy_model):
    expected = evaluate_saes(toy_model, load_toy_saes(device="cpu"), ctx.setup.ds)
    got = section.numbers["quality"]
    assert [q["hook_name"] for q in got] == [q.hook_name for q in expected]
    for row, q in zip(got, expected, strict=True):
        assert row["variance_explained"] == pytest.approx(q.variance_explained, abs=1e-6)
        assert row["l0"] == pytest.approx(q.l0) and row["dead_features"] == q.dead_features
        for name in ("logit_diff_clean", "logit_diff_sae", "logit_diff_zero", "logit_diff_mean",
                     "ce_clean", "ce_sae", "ce_zero", "ce_mean", "logit_diff_recovered_zero",
                     "logit_diff_recovered_mean", "ce_recovered_zero", "ce_recovered_mean"):  # fmt: skip
            assert row[name] == pytest.approx(getattr(q, name), rel=1e-4, abs=1e-6), name
    table = next(t for t in section.tables if t.title == "SAE quality")
    assert "logit diff zero abl." in table.columns and "CE recovered (zero abl.)" in table.columns
    zero = table.columns.index("logit diff recovered (zero abl.)")
    for table_row, q in zip(table.rows, expected, strict=True):
        assert table_row[zero] == pytest.approx(q.logit_diff_recovered_zero, rel=1e-4)
    assert hook_count(toy_model) == 0


def test_circuit_nodes_and_faithfulness_match_the_library(section, toy_model):
    s = FeatureSettings()
    saes = load_toy_saes(device="cpu")
    ds = one_template_prompts(toy_model, N, s.seed)
    abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    end = ds.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(toy_model(ds.toks), ds.answer_tokens, positions=end)
        corr = logits_to_ave_logit_diff(toy_model(abc.toks), ds.answer_tokens, positions=end)
    metric = make_ioi_metric(clean, corr, ds.answer_tokens, positions=end)
    att = feature_attribution(
        toy_model, saes, ds.toks, abc.toks, metric, method="ig", steps=s.steps
    )
    nodes = select_nodes(att, threshold=s.threshold)[: s.max_nodes]
    circuit = section.numbers["circuit"]
    assert list(circuit["nodes"]) == [str(n) for n in nodes] and nodes
    assert circuit["faithfulness"] == pytest.approx(
        faithfulness(toy_model, saes, ds.toks, metric, nodes), abs=1e-5
    )
    assert [k for k, _ in circuit["curve"]] == [min(k, len(att.nodes())) for k in s.curve]


def test_family_test_matches_compare_families(section, ctx):
    s = FeatureSettings()
    setup = ctx.setup
    metric = setup.metric
    shares = feature_attribution(
        ctx.model, load_toy_saes(device="cpu"), setup.ds.toks, setup.abc.toks, metric,
        per_prompt=True,
    )  # fmt: skip
    expected = compare_families(
        shares, family_labels(setup.ds), top_n=s.top_n, n_permutations=s.permutations,
        seed=s.seed, word_idx=setup.ds.word_idx,
    )  # fmt: skip
    got = section.numbers["families"]["family"]
    assert got["p_value"] == pytest.approx(expected.p_value)
    assert got["verdict"] == expected.verdict in VERDICTS
    assert f"family: **{expected.verdict}** (p = {expected.p_value:.3f}" in " ".join(section.text)
    assert {f.key for f in section.figures} == {"feature_circuit", "feature_faithfulness"}


def test_other_models_get_a_reason(ctx):
    class Other:
        model, model_name, setup = ctx.model, "gpt2-small", ctx.setup

    out = section_features(Other())
    assert out.status == "not_applicable" and "no SAEs are shipped for gpt2-small" in out.reason
