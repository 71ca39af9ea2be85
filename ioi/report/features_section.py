"""The report's sparse-feature-circuit section (`ioi.features` on the report's model).

Only the bundled toy model ships SAEs (`ioi.features.load_toy_saes`); for any other model the
section is ``not_applicable`` with the reason. It is kept cheap, as the report runs it on every
``ioi replicate``: a few prompts, attribution patching for the cross-family test, a few
integration steps for the circuit, a short faithfulness curve and few permutations, all named
in its text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sae_lens import SAE

from ioi.features.attribution import check_saes, feature_attribution
from ioi.features.circuit import edge_attribution, faithfulness_curve, select_nodes
from ioi.features.families import compare_families, family_labels
from ioi.features.pretrained import load_toy_saes
from ioi.features.quality import evaluate_saes
from ioi.features.toy_circuit import baselines, one_template_prompts
from ioi.features.word_positions import WORD_POSITIONS, word_labels
from ioi.metrics import make_ioi_metric
from ioi.report import figures as F
from ioi.report.analysis import ABC_FLIP
from ioi.report.document import Figure, Section, Table

KEY, TITLE = "features", "Sparse feature circuits"


@dataclass(frozen=True)
class FeatureSettings:
    """How much the section computes (small, so that the report stays fast)."""

    prompts: int = 16  # at most; the report's own n when smaller
    steps: int = 2  # integration points of the circuit's attribution
    threshold: float = 0.02  # node |IE| threshold of the circuit
    max_nodes: int = 20  # the circuit keeps at most this many nodes above the threshold
    curve: tuple[int, ...] = (1, 5, 10, 30, 100)
    top_n: int = 30  # nodes per family circuit
    permutations: int = 100
    seed: int = 0


def report_saes(model, model_name: str) -> tuple[dict[str, SAE] | None, str]:
    """The SAEs the report uses for ``model_name``, or None and why there are none."""
    if model_name != "toy":
        return None, (
            f"no SAEs are shipped for {model_name}; the report uses the bundled toy model's "
            "(`ioi.features.load_toy_saes`). Published GPT-2 small SAEs load with "
            "`ioi.features.load_pretrained_saes` where they are cached"
        )
    saes = load_toy_saes(device=str(model.cfg.device))
    try:
        check_saes(model, saes)
    except (TypeError, ValueError) as err:
        return None, f"the shipped toy SAEs do not fit this model: {err}"
    return saes, ""


def section_features(ctx) -> Section:
    """SAE quality, the feature circuit of one template, and the cross-family test."""
    saes, reason = report_saes(ctx.model, ctx.model_name)
    if saes is None:
        return Section.not_applicable(KEY, TITLE, reason)
    s = FeatureSettings()
    setup = ctx.setup
    n = min(s.prompts, len(setup.ds))
    section = Section(KEY, TITLE)
    quality = evaluate_saes(ctx.model, saes, setup.ds)
    section.tables.append(quality_table(quality))
    circuit = _circuit(ctx.model, saes, n, s)
    section.figures.append(Figure("feature_circuit", F.feature_circuit_graph(**circuit["graph"])))
    sizes, values = zip(*circuit["curve"], strict=True)
    section.figures.append(
        Figure(
            "feature_faithfulness",
            F.line_figure([str(k) for k in sizes], values, "Faithfulness of the top n nodes",
                          "faithfulness"),
            "Nodes outside the top n mean-ablated; 0 with every node ablated, 1 for the model.",
        )
    )  # fmt: skip
    families = _families(ctx.model, saes, setup, n, s)
    section.tables.append(families_table(families))
    section.text = _text(s, n, circuit, families)
    section.numbers = {
        "settings": {k: getattr(s, k) for k in s.__dataclass_fields__},
        "prompts": n,
        "quality": [_quality_json(q) for q in quality],
        "circuit": {k: v for k, v in circuit.items() if k != "graph"},
        "families": families,
    }
    return section


def _circuit(model, saes, n: int, s: FeatureSettings) -> dict:
    """The circuit on ``n`` prompts of one template and its ABBA twin (positions align)."""
    ds = one_template_prompts(model, n, s.seed)
    abc = ds.gen_flipped_prompts(ABC_FLIP)
    clean, corrupted = baselines(model, ds, abc)
    metric = make_ioi_metric(clean, corrupted, ds.answer_tokens, positions=ds.word_idx["end"])
    args = (model, saes, ds.toks, abc.toks, metric)
    attribution = feature_attribution(*args, method="ig", steps=s.steps)
    nodes = select_nodes(attribution, threshold=s.threshold)[: s.max_nodes]
    edges = edge_attribution(*args, nodes)
    circuits = [nodes] + [attribution.top(k) for k in s.curve]
    points = faithfulness_curve(model, saes, ds.toks, metric, circuits)
    # One template: the first prompt's words name every prompt's positions (BABA and ABBA
    # twins put IO and S1 in swapped slots, so slots are named by the first prompt's pattern).
    labels = word_labels({k: v[:1] for k, v in ds.word_idx.items()}, ds.toks.shape[1])[0]
    words = WORD_POSITIONS + ("other",)
    pos_names = [f"{p}:{words[int(labels[p])]}" for p in range(ds.toks.shape[1])]
    effects = {str(node): attribution.effect(node) for node in nodes}
    return {
        "nodes": effects,
        "n_error_nodes": sum(node.is_error for node in nodes),
        "edges": {f"{u} -> {d}": v for (u, d), v in edges.items()},
        "faithfulness": points[0][1],
        "curve": points[1:],
        "graph": {
            "nodes": nodes,
            "effects": [attribution.effect(node) for node in nodes],
            "edges": edges,
            "hooks": list(saes),
            "pos_names": pos_names,
        },
    }


def _families(model, saes, setup, n: int, s: FeatureSettings) -> dict:
    """BABA vs ABBA and the template groups, nodes per IOI word position (AtP shares)."""
    rows = slice(0, n)
    ds = setup.ds
    end = ds.word_idx["end"][rows]
    metric = make_ioi_metric(
        setup.clean_logit_diff, setup.corrupted_logit_diff, ds.answer_tokens[rows], end
    )
    shares = feature_attribution(
        model, saes, ds.toks[rows], setup.abc.toks[rows], metric, per_prompt=True
    )
    word_idx = {k: v[rows] for k, v in ds.word_idx.items()}
    out = {}
    for by in ("family", "template group"):
        labels = family_labels(ds, by)[:n]
        if len(set(labels)) < 2:
            continue
        c = compare_families(
            shares, labels, top_n=s.top_n, n_permutations=s.permutations, seed=s.seed,
            word_idx=word_idx,
        )  # fmt: skip
        out[by] = {
            "groups": len(c.test.families),
            "verdict": c.verdict,
            "p_value": c.p_value,
            "mean_jaccard": sum(c.test.jaccard.values()) / len(c.test.jaccard),
            "mean_weighted_jaccard": sum(c.test.weighted_jaccard.values())
            / len(c.test.weighted_jaccard),
        }
    return out


def quality_table(quality) -> Table:
    """Per SAE: sparsity, reconstruction, and the logit difference with the SAE spliced in beside
    zero- and mean-ablation of the same activation, with the fractions recovered against each."""
    return Table.build(
        "SAE quality",
        ("SAE", "d_sae", "L0", "variance explained", "dead", "logit diff clean",
         "logit diff SAE", "logit diff zero abl.", "logit diff mean abl.",
         "logit diff recovered (zero abl.)", "logit diff recovered (mean abl.)",
         "CE recovered (zero abl.)", "CE recovered (mean abl.)"),
        [
            (q.hook_name, q.d_sae, q.l0, q.variance_explained, q.dead_features,
             q.logit_diff_clean, q.logit_diff_sae, q.logit_diff_zero, q.logit_diff_mean,
             q.logit_diff_recovered_zero, q.logit_diff_recovered_mean,
             q.ce_recovered_zero, q.ce_recovered_mean)
            for q in quality
        ],
    )  # fmt: skip


def families_table(families: dict) -> Table:
    return Table.build(
        "One circuit or several (nodes per IOI word position)",
        ("grouping", "groups", "verdict", "p-value", "mean Jaccard", "mean weighted Jaccard"),
        [
            (by, f["groups"], f["verdict"], f["p_value"], f["mean_jaccard"],
             f["mean_weighted_jaccard"])
            for by, f in families.items()
        ],
    )  # fmt: skip


def _quality_json(q) -> dict:
    """Every measured field of the `SAEQuality`, and the four fractions recovered."""
    out = dataclasses.asdict(q)
    for name in ("logit_diff_recovered_zero", "logit_diff_recovered_mean",
                 "ce_recovered_zero", "ce_recovered_mean"):  # fmt: skip
        out[name] = getattr(q, name)
    return out


def _text(s: FeatureSettings, n: int, circuit: dict, families: dict) -> list[str]:
    verdicts = "; ".join(
        f"{by}: **{f['verdict']}** (p = {f['p_value']:.3f}, {f['groups']} groups)"
        for by, f in families.items()
    )
    return [
        "The shipped toy SAEs (`ioi.features.load_toy_saes`) spliced into the model, measured on "
        "the report's prompts. Kept small so the report stays fast: the circuit uses "
        f"{n} prompts of one template and its ABBA twin, integrated gradients with {s.steps} "
        f"points, nodes with |IE| >= {s.threshold} (at most {s.max_nodes}); the cross-family "
        f"test uses the first {n} prompts, attribution patching, the top {s.top_n} nodes per "
        f"group and {s.permutations} permutations. `python -m ioi.features.toy_circuit` "
        "measures the same at full size.",
        f"The circuit has {len(circuit['nodes'])} nodes ({circuit['n_error_nodes']} error "
        f"nodes) and {len(circuit['edges'])} edges; its faithfulness is "
        f"{circuit['faithfulness']:.3f}.",
        "One circuit or several, nodes per IOI word position so templates line up: "
        + (verdicts or "too few prompts for two groups")
        + ". *shared*: the groups' circuits differ no more than random splits of the same "
        "prompts (p >= 0.05); *partly shared* / *family-specific*: they differ, with a mean "
        "node Jaccard index at least / below 0.5.",
    ]
