"""The report's sections, one function each, in the order of Wang et al.'s analysis.

Every builder takes the `ReportContext` and returns a `Section` holding its text, tables,
figures and numbers. Steps several sections need (the path-patching oracle, the mean
ablation, the discovered circuit) are computed once, on first use, by the context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from transformer_lens import HookedTransformer

from ioi.circuit import (
    DEFAULT_THRESHOLDS,
    Circuit,
    SweepPoint,
    gpt2_small_circuit,
    jaccard,
)
from ioi.head import Head
from ioi.patching import heatmap
from ioi.reference import comparison_basis, reference_figures
from ioi.report import analysis as A
from ioi.report import figures as F
from ioi.report import tables as T
from ioi.report.document import Figure, Section, Table
from ioi.report.edges_section import EdgeSettings, section_edges
from ioi.report.features_section import section_features
from ioi.report.progress import Tracker
from ioi.statistics import DEFAULT_LEVEL


@dataclass(frozen=True)
class Settings:
    """What the report computes.

    Args:
        n: IOI prompts for every step except the activation-patching sweeps (at least 2:
            every table gives a standard error and an interval over prompts).
        seed: dataset seed.
        patch_prompts: prompts for the activation-patching sweeps (the first ones of the same
            seeded dataset); each patched site reruns the model on all of them.
        thresholds: discovery thresholds on the normalised path-patching effect.
        min_faithfulness: the rule that picks a threshold (`ioi.circuit.choose_threshold`).
        extra_thresholds: how many smaller thresholds to run after the first that meets the
            rule (they cannot change the choice; they show what more heads add).
        max_heads: discovery's head budget at each threshold (`ioi.circuit.discover_circuit`;
            None: none). 52 is twice the 26 heads of the paper's circuit; where the IOI-ABC gap
            is tiny (random weights) nearly every head passes, and the budget bounds the cost.
        sweeps: which activation-patching sweeps to run (`ioi.report.analysis.SWEEP_TITLES`).
        edges: what the edge-circuit section computes (`ioi.report.edges_section.EdgeSettings`).
    """

    n: int = 200
    seed: int = 1
    patch_prompts: int = 32
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    min_faithfulness: float = 0.8
    extra_thresholds: int = 1
    max_heads: int | None = 52
    sweeps: tuple[str, ...] = A.POSITION_SWEEPS + A.HEAD_SWEEPS
    edges: EdgeSettings = EdgeSettings()

    def __post_init__(self) -> None:
        for name in ("n", "patch_prompts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            if value < 2:
                raise ValueError(
                    f"{name} must be at least 2, got {value}: the report's intervals over "
                    "prompts need a standard error, which one prompt does not have"
                )
        if isinstance(self.extra_thresholds, bool) or self.extra_thresholds < 0:
            raise ValueError(f"extra_thresholds must be >= 0, got {self.extra_thresholds!r}")
        if self.max_heads is not None and (
            isinstance(self.max_heads, bool) or not isinstance(self.max_heads, int)
        ):
            raise TypeError(
                f"max_heads must be an int or None, got {type(self.max_heads).__name__}"
            )
        if self.max_heads is not None and self.max_heads < 1:
            raise ValueError(f"max_heads must be >= 1 or None (no budget), got {self.max_heads}")
        if not self.thresholds or any(t <= 0 for t in self.thresholds):
            raise ValueError(f"thresholds must be positive numbers, got {self.thresholds!r}")
        if not isinstance(self.edges, EdgeSettings):
            raise TypeError(f"edges must be an EdgeSettings, got {type(self.edges).__name__}")
        unknown = [s for s in self.sweeps if s not in A.SWEEP_TITLES]
        if unknown:
            raise ValueError(f"unknown sweeps {unknown}; choose from {', '.join(A.SWEEP_TITLES)}")


class ReportContext:
    """The model, the settings, the prompts, and the shared steps (computed on first use)."""

    def __init__(
        self, model: HookedTransformer, model_name: str, settings: Settings, tracker: Tracker
    ):
        self.model, self.model_name, self.settings, self.tracker = (
            model,
            model_name,
            settings,
            tracker,
        )
        self.setup = A.prepare(model, settings.n, settings.seed)

    @cached_property
    def comparison_basis(self) -> str | None:
        """Why the published GPT-2 small figures apply here (`ioi.reference.comparison_basis`)."""
        return comparison_basis(self.model_name, self.model.cfg)

    @property
    def compares_with_paper(self) -> bool:
        """True when the published GPT-2 small figures are set beside this model's."""
        return self.comparison_basis is not None

    @cached_property
    def patch_setup(self) -> A.Setup:
        """The (smaller) prompt set of the activation-patching sweeps."""
        if self.settings.patch_prompts >= self.settings.n:
            return self.setup
        return A.prepare(self.model, self.settings.patch_prompts, self.settings.seed)

    @cached_property
    def attribution(self) -> A.Attribution:
        return A.logit_attribution(self.setup)

    @cached_property
    def oracle(self):
        oracle = A.path_patching_oracle(self.setup)
        oracle.track = self.tracker.steps  # a bar over each batch of path-patching passes
        return oracle

    @cached_property
    def to_logits(self) -> torch.Tensor:
        return A.heads_to_logits(self.oracle)

    @cached_property
    def ablation(self):
        return A.mean_ablation(self.setup)

    @cached_property
    def discovery(self) -> tuple[SweepPoint, list[SweepPoint]]:
        """The threshold sweep (see `ioi.report.analysis.discover`) and the threshold chosen."""
        return A.discover(
            self.oracle,
            self.ablation,
            self.settings.thresholds,
            self.settings.min_faithfulness,
            self.settings.extra_thresholds,
            self.settings.max_heads,
            track=lambda items: self.tracker.steps(items, "discovery thresholds"),
        )

    @cached_property
    def circuits(self) -> dict[str, Circuit]:
        """The circuits the criteria are measured on: ours, and the paper's on GPT-2 small."""
        chosen, _ = self.discovery
        out = {}
        if chosen.discovered.circuit is not None:
            out["discovered"] = chosen.discovered.circuit
        if self.compares_with_paper:
            out["paper"] = gpt2_small_circuit()
        return out

    @cached_property
    def criteria(self) -> dict[str, A.Criteria]:
        return {
            name: A.criteria(self.ablation, circuit, seed=self.settings.seed)
            for name, circuit in self.tracker.steps(self.circuits.items(), "criteria")
        }


# ---- helpers -----------------------------------------------------------------------------


def _heads(n: int) -> str:
    """``"1 head"``, ``"52 heads"``."""
    return f"{n} head" if n == 1 else f"{n} heads"


def _grid_dict(values: torch.Tensor) -> dict[str, float]:
    """A [layer, head] grid as ``{"9.9": value}``, layer-major."""
    return dict(zip(Head.grid_labels(*values.shape), values.flatten().tolist(), strict=True))


# ---- the sections ------------------------------------------------------------------------


def section_setup(ctx: ReportContext) -> Section:
    """The model and the prompts."""
    cfg, ds, abc = ctx.model.cfg, ctx.setup.ds, ctx.setup.abc
    n_params = sum(p.numel() for p in ctx.model.parameters())
    section = Section("setup", "Model and prompts")
    section.text = [
        f"Model **{ctx.model_name}**: {cfg.n_layers} layers of {cfg.n_heads} attention heads, "
        f"d_model {cfg.d_model}, d_head {cfg.d_head}, {n_params:,} parameters, run on "
        f"`{cfg.device}`.",
        f"Prompts: {ds.N} IOI sentences (seed {ds.seed}), alternately BABA and ABBA, from the "
        f"paper's {len(ds.templates) // 2} templates and their ABBA versions. The corrupted "
        f"prompts (*ABC*) replace the three names by fresh ones (flip `{A.ABC_FLIP}`), so every "
        "token keeps its position. The activation-patching sweeps use the first "
        f"{ctx.patch_setup.ds.N} of these prompts.",
        kept_words_text(words_kept(ds)),
    ]
    section.tables.append(
        Table.build(
            "Model",
            ("setting", "value"),
            [
                ("layers", cfg.n_layers),
                ("heads per layer", cfg.n_heads),
                ("d_model", cfg.d_model),
                ("d_head", cfg.d_head),
                ("d_mlp", cfg.d_mlp),
                ("context", cfg.n_ctx),
                ("vocabulary", cfg.d_vocab),
                ("parameters", f"{n_params:,}"),
            ],
        )
    )
    examples = [
        (ds.sentences[i], ds.prompts[i].answer, ds.tokenizer.decode(ds.s_tokenIDs[i]).strip())
        for i in range(min(6, ds.N))
    ]
    section.tables.append(
        Table.build(
            "Example prompts (IOI, then ABC)",
            ("sentence", "IO", "S"),
            [row for i, ex in enumerate(examples) for row in (ex, (abc.sentences[i], "", ""))],
        )
    )
    section.numbers = {
        "model": {
            "name": ctx.model_name,
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "d_model": cfg.d_model,
            "n_params": n_params,
            "device": str(cfg.device),
        },
        "dataset": {
            "N": ds.N,
            "seed": ds.seed,
            "prompt_type": ds.prompt_type,
            "abc_flip": A.ABC_FLIP,
            "patch_prompts": ctx.patch_setup.ds.N,
            "words": words_kept(ds),
        },
    }
    return section


def words_kept(ds) -> dict[str, dict]:
    """Per kind (names, places, objects): how many words the prompts use, and which of the
    paper's were dropped because this model's tokenizer splits them."""
    used = {"names": ds.names, "places": ds.places, "objects": ds.objects}
    return {
        kind: {"kept": len(words), "dropped": list(ds.dropped[kind])}
        for kind, words in used.items()
    }


def kept_words_text(words: dict[str, dict]) -> str:
    """One sentence: how many of the paper's names (places, objects) this tokenizer keeps whole."""
    parts = []
    for kind, counts in words.items():
        kept, dropped = counts["kept"], counts["dropped"]
        if kind == "names" or dropped:
            parts.append(f"{kept} of {kept + len(dropped)} {kind}")
    return (
        f"Words: the prompts use {', '.join(parts)} of the paper's lists, those that are single "
        "tokens (with a leading space) for this model's tokenizer; IOI needs each to be one token."
    )


def section_performance(ctx: ReportContext) -> Section:
    """Logit difference, accuracy and IO probability, overall and per template."""
    perf = ctx.setup.performance
    section = Section("performance", "Logit difference")
    section.text = [
        "The logit difference is the logit of the IO minus the logit of S at `end`, the token "
        "before the answer; positive means the model prefers the right name. On the ABC "
        "prompts there is no repeated name, so a model that solves IOI by finding the repeated "
        "name has no reason to prefer either: their logit difference (scored against the IOI "
        "answers) is the corrupted baseline of every patching experiment.",
        f"Mean logit difference **{perf['overall']['logit_diff']:.3f}** on the IOI prompts, "
        f"**{perf['abc_logit_diff']:.3f}** on the ABC prompts; the IO beats S on "
        f"{perf['overall']['io_over_s']:.1%} of prompts.",
    ]
    section.tables += [T.score_table(perf), T.template_table(perf)]
    per_prompt = A.per_prompt_logit_diff(ctx.setup)
    section.figures.append(
        Figure(
            "logit_diff_histogram",
            F.histogram_figure(
                per_prompt.tolist(), "Logit difference per IOI prompt", "logit diff (IO - S)"
            ),
            "Distribution of the logit difference over the IOI prompts.",
        )
    )
    section.numbers = {"performance": perf, "per_prompt_logit_diff": per_prompt}
    return section


def section_attribution(ctx: ReportContext) -> Section:
    """Direct logit attribution, attention between the IOI positions, head detectors."""
    att = ctx.attribution
    section = Section("attribution", "Direct logit attribution and what heads attend to")
    top = T.top_heads(att.per_head, 8)
    section.text = [
        "Each component's output at `end`, scaled by the final LayerNorm and projected on the "
        "logit-difference direction W_U[IO] - W_U[S], is its *direct* contribution to the logit "
        "difference. The contributions of all components add up to the logit difference.",
        "Largest direct contributions: "
        + ", ".join(f"head {h} ({v:+.2f})" for h, v in top[:5])
        + ".",
    ]
    section.figures += [
        Figure(
            "dla_accumulated",
            F.line_figure(
                att.accumulated_labels,
                att.accumulated.tolist(),
                "Logit difference read from the residual stream after each sub-layer",
                "logit diff",
            ),
        ),
        Figure(
            "dla_per_layer",
            F.bar_figure(
                att.per_layer_labels,
                att.per_layer.tolist(),
                "Direct logit attribution per layer output",
                "logit diff",
            ),
        ),
        Figure(
            "dla_per_head",
            F.layer_head_heatmap(att.per_head, "Direct logit attribution per head", "logit diff"),
        ),
        Figure(
            "attention_ioi_positions",
            F.layer_head_facets(
                att.attention, "Mean attention between IOI positions (dest->src)", zmid=None
            ),
            "Attention probability from one IOI position to another, averaged over prompts.",
        ),
        Figure(
            "attention_detectors",
            F.layer_head_facets(
                att.detectors, "Head detectors on repeated random tokens", zmid=None
            ),
        ),
    ]
    if att.copying is not None:
        section.figures.append(
            Figure(
                "copying_scores",
                F.layer_head_facets(
                    {"copying": att.copying, "negative copying": att.negative_copying},
                    "Copying scores: fraction of names each OV circuit copies into the top 5",
                    zmid=None,
                ),
            )
        )
    section.tables.append(
        Table.build(
            "Heads with the largest direct effect",
            ("head", "DLA", "attn end->IO", "attn end->S2", "attn S2->IO"),
            [
                (
                    str(h),
                    v,
                    float(att.attention["end->IO"][h]),
                    float(att.attention["end->S2"][h]),
                    float(att.attention["S2->IO"][h]),
                )
                for h, v in top
            ],
        )
    )
    section.numbers = {
        "accumulated_resid": dict(
            zip(att.accumulated_labels, att.accumulated.tolist(), strict=True)
        ),
        "per_layer": dict(zip(att.per_layer_labels, att.per_layer.tolist(), strict=True)),
        "per_head": _grid_dict(att.per_head),
        "attention": {k: _grid_dict(v) for k, v in att.attention.items()},
        "detectors": {k: _grid_dict(v) for k, v in att.detectors.items()},
    }
    if att.copying is not None:
        section.numbers["copying"] = _grid_dict(att.copying)
        section.numbers["negative_copying"] = _grid_dict(att.negative_copying)
    return section


def section_activation_patching(ctx: ReportContext) -> Section:
    """Denoising sweeps over the residual stream, layer outputs and heads; attribution patching."""
    setup = ctx.patch_setup
    section = Section("activation_patching", "Activation patching")
    section.text = [
        "Run the model on the ABC prompts and patch in one activation from the IOI run: if the "
        "logit difference comes back, that activation suffices to carry the answer. Values are "
        "normalised: 0 is the ABC run, 1 the IOI run. Position sweeps patch one named IOI "
        "position per prompt (the same word in every template); head sweeps patch a head at "
        "every position.",
        f"On these {setup.ds.N} prompts the IOI logit difference is "
        f"{setup.clean_logit_diff:.3f} and the ABC one {setup.corrupted_logit_diff:.3f}.",
    ]
    numbers: dict = {
        "n_prompts": setup.ds.N,
        "clean_logit_diff": setup.clean_logit_diff,
        "corrupted_logit_diff": setup.corrupted_logit_diff,
        "sweeps": {},
    }
    top_rows = []
    sweeps = [s for s in ctx.settings.sweeps if s != "z"]
    for component in ctx.tracker.steps(sweeps, "patching sweeps"):
        result = A.activation_patching_sweep(setup, component)
        _add_sweep(section, numbers, top_rows, component, result)
    if "z" in ctx.settings.sweeps:
        comparison = A.attribution_vs_exact(setup)
        _add_sweep(section, numbers, top_rows, "z", comparison.exact)
        section.figures.append(
            Figure(
                "attribution_vs_exact",
                F.attribution_scatter(comparison),
                "Attribution patching (one gradient) against exact patching, per head.",
            )
        )
        numbers["attribution_patching"] = {
            "pearson": comparison.pearson,
            "max_abs_error": comparison.max_abs_error,
            "z_normalized": comparison.attribution.normalized,
        }
        section.text.append(
            f"Attribution patching estimates the head sweep from one gradient with Pearson "
            f"r = {comparison.pearson:.3f} against exact patching (largest error "
            f"{comparison.max_abs_error:.3f} on the metric's scale)."
        )
    if "intervals" in numbers:
        section.text.append(T.interval_sentence(numbers["intervals"], "Every sweep's"))
    section.tables.append(
        Table.build(
            "Largest effects per sweep",
            ("sweep", "site", "normalised effect", *T.interval_columns(DEFAULT_LEVEL)),
            top_rows,
        )
    )
    section.numbers = numbers
    return section


def _add_sweep(section: Section, numbers: dict, top_rows: list, component: str, result) -> None:
    title = A.SWEEP_TITLES[component]
    section.figures.append(
        Figure(f"patch_{component}", heatmap(result, "normalized", f"Patching {title}"))
    )
    normalized = result.interval("normalized")
    change = result.interval("change")
    if component == "z":  # one masked figure: the head-output grid, beside the unmasked one
        section.figures.append(
            Figure(
                "patch_z_masked",
                heatmap(result, "normalized", f"Patching {title}, masked", mask=True),
                "The same grid, blank where the change's "
                f"{change.describe().replace('intervals', 'interval')} contains 0.",
            )
        )
    numbers.setdefault("intervals", T.method_numbers(change))
    numbers["sweeps"][component] = {
        "axes": list(result.axes),
        "labels": [list(labels) for labels in result.sweep.labels],
        "normalized": result.normalized,
        "normalized_interval": T.interval_numbers(normalized),
        "change_interval": T.interval_numbers(change),
        "change_excludes_zero": change.excludes_zero(),
    }
    rows = result.table(intervals=False)  # site order; sorted as `PatchResult.top_k` sorts
    top = sorted(range(len(rows)), key=lambda i: -abs(float(rows[i]["change"])))[:3]
    cells = normalized.mean.shape  # [*grid]
    for i in top:
        index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), cells))
        top_rows.append(
            (
                component,
                rows[i]["site"],
                rows[i]["normalized"],
                *T.interval_cells(normalized, index),
            )
        )


def section_path_patching(ctx: ReportContext) -> Section:
    """Heads to the logits, and earlier heads into the top heads' queries, keys and values."""
    to_logits = ctx.to_logits
    receivers = A.top_output_heads(to_logits, k=3)
    section = Section("path_patching", "Path patching")
    section.text = [
        "Path patching gives one head its ABC output while every other head stays as on the "
        "IOI prompts, and measures the effect along one path only: straight to the logits, or "
        "into a later head's query, key or value. Values are the change of the normalised "
        "metric: -1 means the path carries the whole IOI - ABC difference, 0 no effect.",
        "The heads whose direct path matters most are "
        + ", ".join(f"{h} ({float(to_logits[h]):+.2f})" for h in receivers)
        + "; the second figure shows which earlier heads feed them.",
    ]
    section.figures.append(
        Figure(
            "path_heads_to_logits",
            F.layer_head_heatmap(to_logits, "Path patching: each head -> logits", "effect"),
        )
    )
    grids = {
        inp: A.heads_to_receivers(ctx.oracle, receivers, inp)
        for inp in ctx.tracker.steps(("q", "k", "v"), "paths into q, k, v")
    }
    section.figures.append(
        Figure(
            "path_heads_to_receivers",
            F.layer_head_facets(
                grids, f"Path patching: earlier heads -> {', '.join(map(str, receivers))}"
            ),
            "Queries are read at end; keys and values at every position.",
        )
    )
    estimate = A.heads_to_logits_estimate(ctx.oracle)
    section.text.append(T.interval_sentence(T.method_numbers(estimate), "The direct paths'"))
    section.tables.append(
        T.heads_table(
            to_logits,
            "effect",
            "Heads with the largest direct path to the logits",
            estimate=estimate,
        )
    )
    section.numbers = {
        "heads_to_logits": _grid_dict(to_logits),
        "heads_to_logits_interval": {
            key: _grid_dict(v) for key, v in T.interval_numbers(estimate).items()
        },
        "intervals": T.method_numbers(estimate),
        "receivers": [str(h) for h in receivers],
        "heads_to_receivers": {inp: _grid_dict(g) for inp, g in grids.items()},
    }
    return section


def section_circuit(ctx: ReportContext) -> Section:
    """Circuit discovery by recursive path patching, and the circuit chosen."""
    chosen, points = ctx.discovery
    found = chosen.discovered
    section = Section("circuit", "The circuit")
    section.text = [
        "Discovery works backwards from the logits: the heads whose direct path passes a "
        "threshold, then the earlier heads whose paths into their queries, keys or values pass "
        "it, and so on. Each head is kept at the position where its output matters most and "
        "named from its role and what it attends to. Lower thresholds admit more heads; the "
        f"report keeps the largest threshold whose circuit keeps at least "
        f"{ctx.settings.min_faithfulness:.0%} of the logit difference under mean ablation "
        f"(the sweep stops {ctx.settings.extra_thresholds} threshold(s) after the first that "
        "does: smaller ones cannot change the choice).",
    ]
    full = [p for p in points if p.discovered.budget_full]
    if full:
        section.text.append(
            f"The head budget ({_heads(ctx.settings.max_heads)}, `Settings.max_heads`) filled "
            f"at threshold(s) {', '.join(f'{p.threshold:g}' for p in full)}: there the search "
            "took each round's strongest heads and stopped; in the round that filled it "
            f"{', '.join(str(p.discovered.left_out) for p in full)} more head(s) passed (column "
            "*left out*), and later rounds did not run, so such a circuit is not all that "
            "passes its threshold."
        )
    if found.circuit is None:
        section.text.append("No head passed any threshold: there is no circuit to show.")
    else:
        section.text.append(
            f"Chosen threshold **{chosen.threshold:g}**: {_heads(chosen.n_heads)}, keeping "
            f"**{chosen.faithfulness:.1%}** of the model's logit difference."
        )
        section.figures.append(
            Figure("circuit_graph", F.circuit_graph(found, ctx.model.cfg.n_layers))
        )
        section.tables.append(
            Table.build(
                "Classes",
                ("class", "kept at", "heads"),
                [
                    (cls, found.circuit.positions[cls], " ".join(map(str, heads)))
                    for cls, heads in found.circuit.heads.items()
                ],
            )
        )
        section.tables.append(
            Table.build(
                "Why each head is in",
                (
                    "head",
                    "class",
                    "found via",
                    "effect",
                    *(T.interval_columns(found.effects.level) if found.effects else ()),
                    "kept at",
                    "attends to",
                ),
                [
                    (
                        str(f.head),
                        f.cls,
                        f.role,
                        f.effect,
                        *(T.interval_cells(found.effects, i) if found.effects else ()),
                        f.position,
                        f.attends_to,
                    )
                    for i, f in enumerate(found.findings)
                ],
            )
        )
    section.figures.append(Figure("threshold_sweep", F.threshold_figure(points, chosen)))
    ratios = A.sweep_faithfulness_intervals(ctx.ablation, points)
    section.tables.append(
        Table.build(
            "Threshold sweep",
            (
                "threshold",
                "heads",
                "F(C)",
                "F(M)",
                "F(C) / F(M)",
                *T.interval_columns(DEFAULT_LEVEL),
                "left out",
            ),
            [
                (
                    p.threshold,
                    p.n_heads,
                    p.f_circuit,
                    p.f_model,
                    p.faithfulness,
                    *T.interval_cells(r),
                    p.discovered.left_out,
                )
                for p, r in zip(points, ratios, strict=True)
            ],
        )
    )
    method = T.method_numbers(ratios[0])
    section.text.append(
        T.interval_sentence(method, "The sweep's F(C) / F(M) and the heads' effects")
    )
    section.numbers = {
        "threshold": chosen.threshold,
        "faithfulness": chosen.faithfulness,
        "circuit": _circuit_json(found.circuit),
        "findings": [
            {
                "head": str(f.head),
                "class": f.cls,
                "role": f.role,
                "effect": f.effect,
                "effect_interval": (
                    {k: float(v[i]) for k, v in T.interval_numbers(found.effects).items()}
                    if found.effects
                    else None
                ),
                "position": f.position,
                "attends_to": f.attends_to,
            }
            for i, f in enumerate(found.findings)
        ],
        "sweep": [
            {
                "threshold": p.threshold,
                "n_heads": p.n_heads,
                "f_model": p.f_model,
                "f_circuit": p.f_circuit,
                "faithfulness": p.faithfulness,
                "faithfulness_interval": T.interval_numbers(r),
                "budget_full": p.discovered.budget_full,
                "left_out": p.discovered.left_out,
            }
            for p, r in zip(points, ratios, strict=True)
        ],
        "intervals": method,
        "max_heads": ctx.settings.max_heads,
    }
    if ctx.compares_with_paper:
        paper = gpt2_small_circuit()
        overlap = jaccard(found.heads(), paper.all_heads())
        section.text.append(
            f"Overlap with the published circuit (Jaccard index of the head sets): "
            f"**{overlap:.2f}**."
        )
        section.tables.append(
            Table.build(
                "The published circuit (Wang et al. 2022)",
                ("class", "kept at", "heads"),
                [
                    (cls, paper.positions[cls], " ".join(map(str, heads)))
                    for cls, heads in paper.heads.items()
                ],
            )
        )
        section.numbers["jaccard_with_paper"] = overlap
    return section


def _circuit_json(circuit: Circuit | None) -> dict | None:
    if circuit is None:
        return None
    return {
        "heads": {cls: [str(h) for h in heads] for cls, heads in circuit.heads.items()},
        "positions": dict(circuit.positions),
    }


def section_criteria(ctx: ReportContext) -> Section:
    """Faithfulness, completeness and minimality of the circuit(s)."""
    section = Section("criteria", "Faithfulness, completeness, minimality")
    if not ctx.circuits:
        section.status = "unavailable"
        section.reason = "discovery found no circuit at any threshold, so there is nothing to test"
        return section
    section.text = [
        "F(X) is the mean logit difference with every head outside X replaced by its mean over "
        "the ABC prompts of the same template (heads in X keep their output at their class's "
        "position). *Faithfulness* compares F(C) with F(M); *completeness* asks that removing "
        "any K from the circuit hurts as much as removing it from the model "
        "(|F(C \\ K) - F(M \\ K)| small); *minimality* asks that every head matters for some K.",
    ]
    numbers: dict = {}
    for name, result in ctx.criteria.items():
        label = "discovered circuit" if name == "discovered" else "published circuit"
        faith = result.faithfulness
        worst = max(result.completeness, key=lambda s: s.score)
        faith_intervals = {value: faith.interval(value) for value in FAITHFULNESS_ROWS}
        ratio, worst_interval = faith_intervals["ratio"], worst.interval()
        section.text.append(
            f"The {label}: F(M) = {faith.f_model:.3f}, F(C) = {faith.f_circuit:.3f} "
            f"(**{faith.ratio:.1%}** kept, {ratio.level:.0%} interval "
            f"[{float(ratio.low):.1%}, {float(ratio.high):.1%}]; |F(M) - F(C)| = "
            f"{faith.gap:.3f}); the largest incompleteness is {worst.score:.3f} "
            f"[{float(worst_interval.low):.3f}, {float(worst_interval.high):.3f}] ({worst.label})."
        )
        section.figures += [
            Figure(
                f"faithfulness_{name}",
                F.faithfulness_figure(
                    [("F(M)", faith.f_model), ("F(C)", faith.f_circuit)],
                    f"Faithfulness of the {label}",
                    [faith_intervals["f_model"], faith_intervals["f_circuit"]],
                ),
                f"Error bars: the {faith_intervals['f_model'].level:.0%} intervals over prompts "
                "(see the table below).",
            ),
            Figure(f"completeness_{name}", F.completeness_figure(result.completeness)),
            Figure(f"minimality_{name}", F.minimality_figure(result.minimality)),
        ]
        section.tables.append(
            T.estimates_table(
                f"Faithfulness of the {label}",
                "value",
                [(FAITHFULNESS_ROWS[v], est) for v, est in faith_intervals.items()],
            )
        )
        minimality = [(s, s.interval()) for s in result.minimality]
        section.tables.append(
            Table.build(
                f"Minimality of the {label}",
                (
                    "head",
                    "K (rest of its class)",
                    "score",
                    *T.interval_columns(DEFAULT_LEVEL),
                    "relative to F(C)",
                ),
                [
                    (
                        s.label,
                        " ".join(map(str, s.removed)) or "-",
                        s.score,
                        *T.interval_cells(est),
                        s.relative,
                    )
                    for s, est in minimality
                ],
            )
        )
        numbers[name] = {
            "f_model": faith.f_model,
            "f_circuit": faith.f_circuit,
            "ratio": faith.ratio,
            "gap": faith.gap,
            "faithfulness_intervals": {
                v: T.interval_numbers(est) for v, est in faith_intervals.items()
            },
            "completeness": [_knockout_json(s) for s in result.completeness],
            "minimality": [_knockout_json(s, est) for s, est in minimality],
        }
        method = T.method_numbers(faith_intervals["ratio"])
    numbers["intervals"] = method
    section.text.append(
        T.interval_sentence(method, "The criteria's")
        + " Completeness and minimality scores are absolute values, never below 0: read their "
        "intervals' width, not whether they contain 0."
    )
    section.numbers = numbers
    return section


FAITHFULNESS_ROWS = {
    "f_model": "F(M)",
    "f_circuit": "F(C)",
    "ratio": "F(C) / F(M)",
    "gap": "|F(M) - F(C)|",
}
"""The faithfulness values the report shows with intervals (`Faithfulness.interval`)."""


def _knockout_json(score, estimate=None) -> dict:
    estimate = estimate or score.interval()
    return {
        "label": score.label,
        "removed": [str(h) for h in score.removed],
        "f_with": score.f_with,
        "f_without": score.f_without,
        "score": score.score,
        "relative": score.relative,
        "score_interval": T.interval_numbers(estimate),
    }


def section_reference(ctx: ReportContext) -> Section:
    """GPT-2 small only: our figures beside the published ones, with the difference."""
    title = "Comparison with the paper"
    if not ctx.compares_with_paper:
        return Section.not_applicable(
            "reference",
            title,
            f"the published figures are GPT-2 small's; this report ran on {ctx.model_name}, "
            "which is neither GPT-2 small nor of its layout (12 layers of 12 heads, GPT-2's "
            "vocabulary); its own circuit is shown under 'The circuit'",
        )
    rows = reference_rows(ctx)
    section = Section("reference", title)
    section.text = [
        f"Set beside the published figures because {ctx.comparison_basis}.",
        "Our numbers beside those of Wang et al. (2022) and ARENA's replication "
        "(`ioi/data/gpt2_small_ioi.json`). Differences come from the prompt set (theirs: "
        "the paper's dataset or 8 hand-written prompts; ours: the seeded dataset above).",
    ]
    section.tables.append(
        Table.build(
            "Ours vs published",
            ("figure", "ours", "published", "difference"),
            [(r["figure"], r["ours"], r["published"], r["difference"]) for r in rows],
        )
    )
    section.figures.append(Figure("reference", F.reference_figure(rows)))
    section.numbers = {"basis": ctx.comparison_basis, "rows": rows}
    return section


def reference_rows(ctx: ReportContext) -> list[dict]:
    """Figure, ours, published, difference for every published figure we reproduce."""
    ref = reference_figures()
    paper, eight = ref["paper"], ref["eight_prompts"]
    perf = ctx.setup.performance["overall"]
    pairs = [
        ("mean logit diff (IO - S)", perf["logit_diff"], paper["mean_logit_diff_ioi_distribution"]),
        ("fraction IO > S", perf["io_over_s"], paper["io_over_s_fraction"]),
        ("mean P(IO)", perf["io_prob"], paper["mean_io_probability"]),
    ]
    att = ctx.attribution
    for head, value in eight["per_head_direct_logit_attribution"].items():
        pairs.append((f"DLA of head {head}", float(att.per_head[Head.parse(head)]), value))
    if att.copying is not None:
        for head, value in paper["copy_scores_top5"].items():
            name = head.removeprefix("negative_")
            if not name[0].isdigit():
                continue  # the average over heads, not one head
            at = Head.parse(name)
            if head.startswith("negative_"):
                pairs.append((f"negative copying {name}", float(att.negative_copying[at]), value))
            else:
                pairs.append((f"copying {head}", float(att.copying[at]), value))
    if "paper" in ctx.criteria:
        faith = ctx.criteria["paper"].faithfulness
        published = paper["faithfulness"]
        pairs += [
            ("F(M)", faith.f_model, published["F_M"]),
            ("|F(M) - F(C)|, published circuit", faith.gap, published["abs_F_M_minus_F_C"]),
            ("F(C) / F(M), published circuit", faith.ratio, published["fraction_recovered"]),
        ]
    return [
        {"figure": f, "ours": float(o), "published": float(p), "difference": float(o) - float(p)}
        for f, o, p in pairs
    ]


Builder = Callable[[ReportContext], Section]
SECTIONS: tuple[tuple[str, str, Builder], ...] = (
    ("setup", "Model and prompts", section_setup),
    ("performance", "Logit difference", section_performance),
    ("attribution", "Direct logit attribution", section_attribution),
    ("activation_patching", "Activation patching", section_activation_patching),
    ("path_patching", "Path patching", section_path_patching),
    ("circuit", "The circuit", section_circuit),
    ("criteria", "Faithfulness, completeness, minimality", section_criteria),
    ("reference", "Comparison with the paper", section_reference),
    ("features", "Sparse feature circuits", section_features),
    ("edges", "Edge circuits", section_edges),
)
"""(key, progress label, builder) for every section, in report order."""
