"""The sparse feature circuit of the bundled toy model with its shipped SAEs, measured end to end.

``python -m ioi.features.toy_circuit`` prints every number this study reports: AtP and
integrated gradients against exact patching of their top nodes, the circuit above a threshold,
its faithfulness curve, the BABA-vs-ABBA permutation test and the circuit's first features.

The prompts all come from one BABA template and its ABBA twin, so a token position is the same
word in every prompt (nodes are per position).

``python -m ioi.features.toy_circuit --templates`` compares the circuits of the template groups
(a BABA template with its ABBA twin), of BABA vs ABBA and of the single templates over mixed
prompts of every template, once with nodes per token position and once per IOI word position
(`ioi.features.word_positions`). Per token position the templates differ in length, so their
circuits differ by position alone; per word they line up.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from ioi.dataset import IOIDataset
from ioi.features.activations import ABC_FLIP
from ioi.features.attribution import (
    FeatureAttribution,
    FeatureAttributionComparison,
    compare_feature_attribution,
    feature_attribution,
)
from ioi.features.circuit import FeatureCircuit, feature_circuit
from ioi.features.families import GROUPINGS, FamilyComparison, compare_families, family_labels
from ioi.features.interpret import (
    ROLE_EFFECT,
    FeatureReport,
    RoleContrast,
    interpret_features,
)
from ioi.features.pretrained import load_toy_saes
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.models import load_model
from ioi.templates import BABA_TEMPLATES

CURVE_SIZES = (1, 2, 5, 10, 20, 50, 100, 200, 400)


@dataclass(frozen=True)
class ToyStudy:
    """Everything `toy_study` measured (see the module docstring)."""

    n_prompts: int
    clean_logit_diff: float
    abc_logit_diff: float
    atp: FeatureAttributionComparison
    ig: FeatureAttributionComparison
    circuit: FeatureCircuit
    families: FamilyComparison
    features: list[FeatureReport]


def one_template_prompts(model, n_prompts: int, seed: int, template: int = 0) -> IOIDataset:
    """``n_prompts`` mixed IOI prompts, all of BABA template ``template`` or its ABBA twin."""
    pool = IOIDataset(40 * n_prompts, "mixed", seed=seed, tokenizer=model)
    picked = torch.nonzero(pool.template_idx % len(BABA_TEMPLATES) == template).flatten()
    prompts = [pool.prompts[i] for i in picked[:n_prompts].tolist()]
    return IOIDataset(len(prompts), "mixed", seed=seed, tokenizer=model, _prompts=prompts)


def baselines(model, ds: IOIDataset, abc: IOIDataset) -> tuple[float, float]:
    """The mean IO - S logit difference at ``end`` on the IOI and on the ABC prompts."""
    end = ds.word_idx["end"]
    with torch.no_grad():
        clean = logits_to_ave_logit_diff(model(ds.toks), ds.answer_tokens, positions=end)
        corrupted = logits_to_ave_logit_diff(model(abc.toks), ds.answer_tokens, positions=end)
    return float(clean), float(corrupted)


def toy_study(
    n_prompts: int = 64,
    seed: int = 0,
    steps: int = 10,
    threshold: float = 0.02,
    top_k: int = 50,
    n_permutations: int = 500,
) -> ToyStudy:
    """Run the study on the CPU (a few minutes on one thread)."""
    model = load_model("toy", device="cpu")
    saes = load_toy_saes()
    ds = one_template_prompts(model, n_prompts, seed)
    abc = ds.gen_flipped_prompts(ABC_FLIP)
    clean, corrupted = baselines(model, ds, abc)
    metric = make_ioi_metric(clean, corrupted, ds.answer_tokens, positions=ds.word_idx["end"])
    args = (model, saes, ds.toks, abc.toks, metric)
    atp = compare_feature_attribution(*args, method="atp", top_k=top_k)
    ig = compare_feature_attribution(*args, method="ig", steps=steps, top_k=top_k)
    circuit = feature_circuit(*args, threshold=threshold, steps=steps, curve_sizes=CURVE_SIZES)
    shares = feature_attribution(*args, method="ig", steps=steps, per_prompt=True)
    families = compare_families(
        shares, family_labels(ds), top_n=30, n_permutations=n_permutations, seed=seed
    )
    features = interpret_features(
        model,
        saes,
        circuit.nodes,
        ds.toks,
        ds.word_idx,
        k=3,
        seq_lens=ds.seq_lens,
        contrast=RoleContrast.of(ds, abc),
    )
    return ToyStudy(len(ds), float(clean), float(corrupted), atp, ig, circuit, families, features)


def chunked_shares(
    model, saes, ds: IOIDataset, abc: IOIDataset, steps: int, chunk: int
) -> FeatureAttribution:
    """Integrated-gradient attribution with per-prompt shares, ``chunk`` prompts at a time.

    A prompt's share does not depend on its batch (the IOI metric averages prompts and its
    baselines are fixed), so the chunks' shares put together are the whole batch's.
    """
    end = ds.word_idx["end"]
    clean, corrupted = baselines(model, ds, abc)
    parts = []
    for start in range(0, len(ds), chunk):
        rows = slice(start, start + chunk)
        metric = make_ioi_metric(clean, corrupted, ds.answer_tokens[rows], positions=end[rows])
        parts.append(
            feature_attribution(
                model, saes, ds.toks[rows], abc.toks[rows], metric,
                method="ig", steps=steps, per_prompt=True,
            )
        )  # fmt: skip
    shares = {hook: torch.cat([p.per_prompt[hook] for p in parts]) for hook in saes}
    return FeatureAttribution(
        {hook: share.mean(0) for hook, share in shares.items()},
        "ig",
        steps,
        parts[0].clean_metric,
        parts[0].corrupted_metric,
        shares,
    )


def template_comparison(
    n_prompts: int = 128,
    seed: int = 0,
    steps: int = 10,
    n_permutations: int = 200,
    top_n: int = 30,
    chunk: int = 32,
) -> dict[tuple[str, str], FamilyComparison]:
    """``(grouping, "token" | "word") -> FamilyComparison`` over mixed prompts of every template."""
    model = load_model("toy", device="cpu")
    saes = load_toy_saes()
    ds = IOIDataset(n_prompts, "mixed", seed=seed, tokenizer=model)
    shares = chunked_shares(model, saes, ds, ds.gen_flipped_prompts(ABC_FLIP), steps, chunk)
    out = {}
    for by in GROUPINGS:
        for nodes, word_idx in (("token", None), ("word", ds.word_idx)):
            out[by, nodes] = compare_families(
                shares, family_labels(ds, by), top_n=top_n,
                n_permutations=n_permutations, seed=seed, word_idx=word_idx,
            )  # fmt: skip
    return out


def render_comparison(comparison: dict[tuple[str, str], FamilyComparison]) -> str:
    """One line per grouping and node kind: verdict, p-value, mean (weighted) Jaccard."""
    lines = []
    for (by, nodes), c in comparison.items():
        jac = sum(c.test.jaccard.values()) / len(c.test.jaccard)
        weighted = sum(c.test.weighted_jaccard.values()) / len(c.test.weighted_jaccard)
        lines.append(
            f"{by} ({len(c.test.families)} groups), nodes per {nodes} position: verdict "
            f"{c.verdict!r}, p = {c.p_value:.4f}, mean Jaccard {jac:.3f}, weighted {weighted:.3f}"
        )
    return "\n".join(lines)


def render(study: ToyStudy) -> str:
    """The study as plain text lines."""
    lines = [
        f"{study.n_prompts} prompts; logit diff IOI {study.clean_logit_diff:.3f}, "
        f"ABC {study.abc_logit_diff:.3f} (normalised metric: 1 and 0)"
    ]
    for name, c in (("AtP", study.atp), ("IG", study.ig)):
        lines.append(
            f"{name} vs exact, top {len(c.nodes)} nodes: Pearson {c.pearson:.3f}, "
            f"Spearman {c.spearman:.3f}, max |error| {c.max_abs_error:.4f}"
        )
    circuit = study.circuit
    n_error = sum(node.is_error for node in circuit.nodes)
    lines.append(
        f"circuit |IE| >= {circuit.threshold}: {len(circuit.nodes)} nodes ({n_error} error "
        f"nodes), {len(circuit.edges)} edges, faithfulness {circuit.faithfulness:.3f}"
    )
    lines.append("faithfulness curve: " + ", ".join(f"{n}: {f:.3f}" for n, f in circuit.curve))
    test = study.families.test
    pair = test.families
    lines.append(
        f"families {pair}: verdict {test.verdict!r}, p = {test.p_value:.4f}, "
        f"Jaccard {test.jaccard[pair]:.3f}, weighted Jaccard {test.weighted_jaccard[pair]:.3f}"
    )
    for report in study.features[:8]:
        lines.append(
            f"{report.hook} f{report.feature}: role {report.role}, promotes "
            f"{[t for t, _ in report.promoted]}, suppresses {[t for t, _ in report.suppressed]}"
        )
        evidence = ", ".join(f"{name} {value:.2f}" for name, value in report.role_evidence.items())
        lines.append(f"  role evidence (Cohen's d; ROLE_EFFECT {ROLE_EFFECT}): {evidence}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, help="default 64 (128 with --templates)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.02)
    parser.add_argument(
        "--templates", action="store_true", help="compare template groups, token vs word nodes"
    )
    options = parser.parse_args(argv)
    torch.set_num_threads(1)
    if options.templates:
        n_prompts = options.prompts or 128
        print(render_comparison(template_comparison(n_prompts, options.seed, options.steps)))
        return
    study = toy_study(options.prompts or 64, options.seed, options.steps, options.threshold)
    print(render(study))


if __name__ == "__main__":
    main()
