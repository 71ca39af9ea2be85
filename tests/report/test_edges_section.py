"""The report's edge section against `ioi.edges` called directly on the same prompts, exact
patching against the plain one-edge-per-pass loop, and the curve's ends from its definition."""

from __future__ import annotations

import json

import pytest
import torch

from ioi.edges import (
    EdgeGraph,
    compare_edges,
    compare_heads,
    edge_attribution,
    edge_circuit,
    exact_edge_patching,
    plain_edge_effects,
)
from ioi.head import Head
from ioi.metrics import make_ioi_metric
from ioi.report.edges_section import (
    GOOD_AGREEMENT,
    EdgeSettings,
    edge_results,
    section_edges,
)
from ioi.testing import hook_count

pytestmark = pytest.mark.slow
SETTINGS = EdgeSettings(prompts=8, exact_edges=8, top_k=4, curve=(5, 20))


@pytest.fixture(scope="module")
def section(ctx):
    return section_edges(ctx, SETTINGS)


@pytest.fixture(scope="module")
def direct(ctx):
    """The same computation, called on `ioi.edges` by hand."""
    setup, n = ctx.setup, SETTINGS.prompts
    ds = setup.ds
    metric = make_ioi_metric(
        setup.clean_logit_diff,
        setup.corrupted_logit_diff,
        ds.answer_tokens[:n],
        ds.word_idx["end"][:n],
    )
    per_prompt = make_ioi_metric(
        setup.clean_logit_diff,
        setup.corrupted_logit_diff,
        ds.answer_tokens[:n],
        ds.word_idx["end"][:n],
        reduce="none",
    )
    clean, corrupted = ds.toks[:n], setup.abc.toks[:n]
    graph = EdgeGraph.from_model(ctx.model)
    eap = edge_attribution(ctx.model, graph, clean, corrupted, per_prompt, method="eap")
    ig = edge_attribution(
        ctx.model, graph, clean, corrupted, per_prompt, method="eap-ig", steps=SETTINGS.steps
    )
    top = eap.top(SETTINGS.exact_edges)
    exact = exact_edge_patching(ctx.model, graph.subset(top), clean, corrupted, per_prompt)
    return {
        "metric": metric, "per_prompt": per_prompt, "clean": clean, "corrupted": corrupted, "graph": graph,
        "eap": eap, "eap-ig": ig, "top": top, "exact": exact,
    }  # fmt: skip


def table(section, title):
    return next(t for t in section.tables if t.title.startswith(title))


def test_top_edges_table_is_edge_attribution_and_the_plain_per_edge_loop(section, direct, ctx):
    from ioi.statistics import bootstrap

    t = table(section, "Top")
    assert t.columns == ("edge", "EAP", "EAP-IG", "exact", "SE", "95% low", "95% high")
    assert [row[0] for row in t.rows] == [str(e) for e in direct["top"]]
    plain = plain_edge_effects(
        ctx.model, direct["top"], direct["clean"], direct["corrupted"], direct["per_prompt"]
    )  # [edge, prompt], one edge per hooked pass
    ref = bootstrap(plain, seed=0)
    for i, (row, edge) in enumerate(zip(t.rows, direct["top"], strict=True)):
        assert row[1] == pytest.approx(direct["eap"].score(edge), abs=1e-6)
        assert row[2] == pytest.approx(direct["eap-ig"].score(edge), abs=1e-6)
        assert row[3] == pytest.approx(float(plain[i].mean()), abs=1e-4)
        for cell, bound in zip(row[4:], (ref.se, ref.low, ref.high), strict=True):
            assert cell == pytest.approx(float(bound[i]), abs=1e-4)
    assert all(row[5] < row[6] for row in t.rows)  # intervals over prompts, not points
    assert any(abs(row[1] - row[2]) > 1e-3 for row in t.rows), "EAP-IG must not be EAP"
    numbers = section.numbers
    assert len(numbers["scores"]) == len(direct["graph"]) == numbers["n_edges"]
    assert hook_count(ctx.model) == 0


def test_agreement_table_is_compare_edges_on_the_exact_edges(section, direct):
    t = table(section, "Agreement")
    rows = {row[0]: dict(zip(t.columns, row, strict=True)) for row in t.rows}
    assert list(rows) == ["eap", "eap-ig"]
    idx = torch.tensor([direct["graph"].index(e) for e in direct["top"]])
    for method, row in rows.items():
        full = direct[method]
        est = type(full)(
            direct["exact"].graph, full.scores[idx], full.method, full.steps, full.clean_metric
        )
        expected = compare_edges(est, direct["exact"], SETTINGS.top_k)
        assert row["edges (N)"] == SETTINGS.exact_edges and row["top k"] == SETTINGS.top_k
        assert row["Pearson"] == pytest.approx(expected.pearson, abs=1e-9)
        assert row["Spearman"] == pytest.approx(expected.spearman, abs=1e-9)
        assert row["top-k overlap"] == pytest.approx(expected.top_k_overlap)
        close = "(close" if expected.spearman >= GOOD_AGREEMENT else "(not close"
        assert f"{method}: Spearman {expected.spearman:.2f}" in section.text[1]
        assert close in section.text[1].split(f"{method}:")[1].split(";")[0]


def test_curve_ends_are_the_clean_and_the_corrupted_run(section, direct, ctx):
    metric, clean, corrupted = direct["metric"], direct["clean"], direct["corrupted"]
    with torch.no_grad():
        clean_value = float(metric(ctx.model(clean)))
        corrupted_value = float(metric(ctx.model(corrupted)))
    curves = section.numbers["curves"]
    assert set(curves) == {"corrupted", "mean"}
    n_edges = len(direct["graph"])
    for c in curves.values():
        assert c["n_edges"][-1] == c["n_kept"][-1] == n_edges  # the last point: every edge
        assert c["metric"][-1] == pytest.approx(clean_value, abs=1e-4)
        assert c["clean_metric"] == pytest.approx(clean_value, abs=1e-4)
        span = c["clean_metric"] - c["ablated_metric"]
        expected = [(m - c["ablated_metric"]) / span for m in c["metric"]]
        assert c["faithfulness"] == pytest.approx(expected, abs=1e-9)
        assert c["faithfulness"][-1] == pytest.approx(1.0, abs=1e-6)
    # keeping no edge under corrupted ablation is the ABC run itself
    assert curves["corrupted"]["ablated_metric"] == pytest.approx(corrupted_value, abs=1e-4)
    ends = curves["corrupted"]["clean_metric"], curves["corrupted"]["ablated_metric"]
    assert "IOI run scores {:.3f}, the ABC run {:.3f}".format(*ends) in section.text[0]
    assert list(curves["corrupted"]["n_edges"]) == [5, 20, n_edges]
    figure = next(f for f in section.figures if f.key == "edge_faithfulness")
    assert [tr.name for tr in figure.fig.data] == ["corrupted", "mean"]
    assert list(figure.fig.data[0].y) == pytest.approx(curves["corrupted"]["faithfulness"])


def test_head_overlap_is_compare_heads_with_the_discovered_circuit(section, direct, ctx):
    chosen, _ = ctx.discovery
    numbers = section.numbers
    ranked = direct[SETTINGS.rank_by]
    circuit = edge_circuit(ranked, numbers["circuit"]["n_edges"])
    assert numbers["circuit"]["edges"] == [str(e) for e in circuit.edges]
    overlap = compare_heads(circuit, chosen.discovered.heads())
    got = numbers["overlap"]
    assert got["both"] == sorted(map(str, overlap.both))
    assert got["edge_only"] == sorted(map(str, overlap.only_edges))
    assert got["node_only"] == sorted(map(str, overlap.only_nodes))
    assert numbers["node_heads"] == sorted(map(str, chosen.discovered.heads()))
    rows = {row[0]: row for row in table(section, "Heads").rows}
    assert rows["both"][2] == len(overlap.both)
    assert rows["both"][1] == (" ".join(map(str, sorted(overlap.both))) or "-")
    # the circuit is the first curve point that reaches min_faithfulness (or every edge)
    c = numbers["curves"]["corrupted"]
    reached = [n for n, f in zip(c["n_edges"], c["faithfulness"], strict=True)
               if f >= SETTINGS.min_faithfulness]  # fmt: skip
    assert numbers["circuit"]["n_edges"] == (reached[0] if reached else c["n_edges"][-1])
    assert numbers["circuit"]["reaches_min_faithfulness"] == bool(reached)


def test_section_round_trips_through_json(section):
    out = section.to_json()
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    assert out["numbers"]["settings"]["exact_edges"] == SETTINGS.exact_edges
    assert {t["title"] for t in out["tables"]} == {t.title for t in section.tables}


def test_the_node_heads_are_coerced_and_no_hooks_are_left(ctx):
    r = edge_results(ctx.setup, ["0.1", Head(1, 0)], SETTINGS)
    assert r.node_heads == {Head(0, 1), Head(1, 0)}
    assert hook_count(ctx.model) == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompts", 1),
        ("steps", 0),
        ("exact_edges", True),
        ("top_k", 0),
        ("top_k", 99),
        ("curve", ()),
        ("curve", (5, 0)),
        ("rank_by", "exact"),
        ("min_faithfulness", 0.0),
        ("min_faithfulness", 1.5),
    ],
)
def test_bad_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"EdgeSettings.{field}"):
        EdgeSettings(**{field: value})
