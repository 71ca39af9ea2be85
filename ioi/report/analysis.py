"""The IOI analysis, step by step, with the settings the report and the site share.

Each function is one step of Wang et al.'s method on one model, returning plain results from
the library (`ioi.evaluate`, `ioi.heads`, `ioi.patching`, `ioi.path_patching`,
`ioi.circuit`). The report (`ioi.report.sections`) and the Streamlit site call these same
functions, so both show the same numbers for the same model, prompt count and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.circuit import (
    Faithfulness,
    KnockoutScore,
    MeanAblation,
    PathPatchingOracle,
    SweepPoint,
    choose_threshold,
    completeness,
    faithfulness,
    minimality,
    threshold_sweep,
)
from ioi.circuit.spec import Circuit
from ioi.dataset import IOIDataset
from ioi.evaluate import evaluate_ioi, prompt_scores
from ioi.head import Head
from ioi.heads import (
    accumulated_resid_logit_diffs,
    attention_detector_scores,
    get_copying_scores,
    ioi_attention,
    per_head_logit_diffs,
    per_layer_logit_diffs,
)
from ioi.metrics import Metric, make_ioi_metric
from ioi.patching import (
    AttributionComparison,
    PatchResult,
    Sweep,
    activation_patching,
    compare_with_exact,
    sweep,
)
from ioi.path_patching import Receiver, all_head_senders, path_patch
from ioi.statistics import Estimate, bootstrap

ABC_FLIP = "ABB->XYZ, BAB->XYZ"
NAMED_POSITIONS = ("IO", "S1", "S1+1", "S2", "end")
POSITION_SWEEPS = ("resid_pre", "attn_out", "mlp_out")
HEAD_SWEEPS = ("z", "q", "k", "v", "pattern")
SWEEP_TITLES = {
    "resid_pre": "residual stream (resid_pre) by layer and position",
    "attn_out": "attention output by layer and position",
    "mlp_out": "MLP output by layer and position",
    "z": "head outputs (z), all positions",
    "q": "head queries, all positions",
    "k": "head keys, all positions",
    "v": "head values, all positions",
    "pattern": "head attention patterns, all positions",
}
ATTENTION_PAIRS = (("end", "IO"), ("end", "S1"), ("end", "S2"), ("S2", "IO"), ("S2", "S1"))
_ATTRIBUTION_HOOKS = (
    "hook_embed",
    "hook_pos_embed",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_resid_pre",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_z",
    "hook_pattern",
    "hook_scale",
)


@dataclass(frozen=True)
class Setup:
    """A model, its IOI prompts, their ABC version and the two baselines of the metric.

    ``clean_logit_diff`` and ``corrupted_logit_diff`` are the mean IO - S logit difference at
    ``end`` on the IOI and on the ABC prompts (both scored against the IOI answers).
    """

    model: HookedTransformer
    ds: IOIDataset
    abc: IOIDataset
    performance: dict
    clean_logit_diff: float
    corrupted_logit_diff: float

    @property
    def metric(self) -> Metric:
        """The normalised IOI metric: 1 on the IOI prompts, 0 on the ABC prompts."""
        return self.ioi_metric("mean")

    @property
    def per_prompt_metric(self) -> Metric:
        """`metric` for each prompt ([batch]); its mean over prompts is `metric`."""
        return self.ioi_metric("none")

    def ioi_metric(self, reduce: str) -> Metric:
        """The normalised IOI metric with ``reduce`` (`ioi.metrics.make_ioi_metric`)."""
        return make_ioi_metric(
            self.clean_logit_diff,
            self.corrupted_logit_diff,
            self.ds.answer_tokens,
            self.ds.word_idx["end"],
            reduce=reduce,
        )


def prepare(model: HookedTransformer, n: int, seed: int) -> Setup:
    """Build ``n`` mixed IOI prompts (``seed``) and their ABC version, and measure the model.

    Raises:
        ValueError: bad ``n`` or ``seed`` (from `IOIDataset`).
    """
    ds = IOIDataset(N=n, prompt_type="mixed", seed=seed, tokenizer=model)
    abc = ds.gen_flipped_prompts(ABC_FLIP)
    perf = evaluate_ioi(model, ds, abc)
    return Setup(model, ds, abc, perf, perf["overall"]["logit_diff"], float(perf["abc_logit_diff"]))


def per_prompt_logit_diff(setup: Setup) -> Float[Tensor, " batch"]:
    """IO - S logit difference of every IOI prompt (for the histogram)."""
    return prompt_scores(setup.model, setup.ds)["logit_diff"]


# ---- 1. logit attribution ----------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    """Direct logit attribution, attention between IOI positions and head detectors."""

    accumulated: Float[Tensor, " stage"]  # one value per point of the residual stream
    accumulated_labels: list[str]
    per_layer: Float[Tensor, " comp"]
    per_layer_labels: list[str]
    per_head: Float[Tensor, "layer head"]
    attention: dict[str, Tensor] = field(default_factory=dict)  # "end->IO" -> [layer, head]
    detectors: dict[str, Tensor] = field(default_factory=dict)  # kind -> [layer, head]
    copying: Float[Tensor, "layer head"] | None = None
    negative_copying: Float[Tensor, "layer head"] | None = None


@torch.no_grad()
def logit_attribution(setup: Setup, copying: bool = True) -> Attribution:
    """DLA (accumulated, per layer, per head) at ``end``, attention between the IOI positions,
    previous-token / duplicate-token / induction scores and (optionally) copying scores."""
    model, ds = setup.model, setup.ds
    end, answers = ds.word_idx["end"], ds.answer_tokens
    _, cache = model.run_with_cache(
        ds.toks.to(model.cfg.device),
        names_filter=lambda name: name.endswith(_ATTRIBUTION_HOOKS),
        return_type=None,
    )
    accumulated, acc_labels = accumulated_resid_logit_diffs(model, cache, answers, end)
    per_layer, layer_labels = per_layer_logit_diffs(model, cache, answers, end)
    per_head = per_head_logit_diffs(model, cache, answers, end)
    attention = {
        f"{dest}->{src}": ioi_attention(model, ds, dest, src, cache=cache)
        for dest, src in ATTENTION_PAIRS
    }
    return Attribution(
        accumulated=accumulated.detach().cpu(),
        accumulated_labels=list(acc_labels),
        per_layer=per_layer.detach().cpu(),
        per_layer_labels=list(layer_labels),
        per_head=per_head.detach().cpu(),
        attention=attention,
        detectors=attention_detector_scores(model),
        # The prompts' names: those of the paper's that are single tokens for this tokenizer.
        copying=get_copying_scores(model, ds.names) if copying else None,
        negative_copying=get_copying_scores(model, ds.names, negative=True) if copying else None,
    )


# ---- 2. activation patching --------------------------------------------------------------


def activation_patching_sweep(setup: Setup, component: str) -> PatchResult:
    """Denoising sweep (IOI activations patched into the ABC run) of one component.

    Residual-like components (`POSITION_SWEEPS`) are swept over layer x the named IOI
    positions (`NAMED_POSITIONS`, one per prompt); head components (`HEAD_SWEEPS`) over
    layer x head, all positions at once.

    The metric is per prompt, so the result keeps every prompt's effect (its ``effect`` is
    their mean) and has intervals (`ioi.patching.PatchResult.interval`).

    Returns:
        An `ioi.patching.PatchResult` whose ``normalized`` values are 0 (ABC-like) .. 1 (IOI).
    """
    return activation_patching(
        setup.model,
        setup.ds.toks,
        setup.abc.toks,
        setup.per_prompt_metric,
        _grid(setup, component),
        mode="denoise",
    )


def _grid(setup: Setup, component: str) -> Sweep:

    if component not in POSITION_SWEEPS + HEAD_SWEEPS:
        raise ValueError(
            f"unknown sweep {component!r}; choose one of {', '.join(POSITION_SWEEPS + HEAD_SWEEPS)}"
        )
    n_pos = setup.ds.toks.shape[1]
    if component in POSITION_SWEEPS:
        named = {key: setup.ds.word_idx[key] for key in NAMED_POSITIONS}
        return sweep(setup.model, component, n_pos, positions=named)
    return sweep(setup.model, component, n_pos)


def attribution_vs_exact(setup: Setup) -> AttributionComparison:
    """Attribution patching against exact activation patching, on every head's output.

    Returns:
        An `ioi.patching.AttributionComparison` (its ``exact`` is the ``z`` sweep, with
        per-prompt values as in `activation_patching_sweep`).
    """
    return compare_with_exact(
        setup.model, setup.ds.toks, setup.abc.toks, setup.per_prompt_metric, _grid(setup, "z")
    )


# ---- 3. path patching and discovery ------------------------------------------------------


def path_patching_oracle(setup: Setup) -> PathPatchingOracle:
    """A `ioi.circuit.PathPatchingOracle` for the setup's IOI and ABC prompts (memoised effects)."""
    return PathPatchingOracle(setup.model, setup.ds, setup.abc)


def heads_to_logits(oracle: PathPatchingOracle) -> Float[Tensor, "layer head"]:
    """Each head's path-patching effect on the logits alone (change of the normalised metric:
    -1 means the path carries the whole IOI - ABC gap, 0 means no effect)."""
    cfg = oracle.model.cfg
    effects = oracle.effects(all_head_senders(oracle.model))
    return effects.detach().cpu().reshape(cfg.n_layers, cfg.n_heads)  # senders are layer-major


def heads_to_logits_estimate(oracle: PathPatchingOracle, **options) -> Estimate:
    """`heads_to_logits` per prompt, with its standard error and bootstrap interval.

    The oracle memoises means only, so this is one more path-patching pass over every head,
    on the oracle's caches, with the per-prompt version of its metric; the estimate's mean is
    `heads_to_logits` (the normalisation is affine, so the mean of per-prompt values equals
    the value of the mean).

    Args:
        options: ``level``, ``resamples``, ``seed`` for `ioi.statistics.bootstrap`.

    Returns:
        An `ioi.statistics.Estimate` of shape [layer, head].
    """
    model, ioi = oracle.model, oracle.ioi
    if len(oracle.rows) != ioi.N:
        raise ValueError("heads_to_logits_estimate needs an oracle over all its prompts")
    metric = make_ioi_metric(
        oracle.clean_logit_diff,
        oracle.corrupted_logit_diff,
        ioi.answer_tokens,
        ioi.word_idx["end"],
        reduce="none",
    )
    values = path_patch(
        model,
        metric,
        oracle.abc,
        ioi,
        all_head_senders(model),
        corrupted_cache=oracle.corrupted_cache,
        clean_cache=oracle.clean_cache,
        readout=oracle.readout,
    )  # [sender, batch], senders layer-major
    change = (values.detach().cpu() - oracle.baseline).reshape(
        model.cfg.n_layers, model.cfg.n_heads, -1
    )  # [layer, head, batch]
    return bootstrap(change, **options)


def top_output_heads(to_logits: Float[Tensor, "layer head"], k: int = 3) -> list[Head]:
    """The ``k`` heads above layer 0 whose direct path to the logits matters most (most negative)."""
    n_heads = to_logits.shape[1]
    order = torch.argsort(to_logits[1:].flatten())  # layer 0 has no earlier senders
    return [Head(1 + int(i) // n_heads, int(i) % n_heads) for i in order[:k]]


def heads_to_receivers(
    oracle: PathPatchingOracle, receivers: Sequence[tuple[int, int]], receiver_input: str
) -> Float[Tensor, "layer head"]:
    """Effect of every earlier head's path into the receivers' ``q`` (read at ``end``), ``k``
    or ``v`` (every position), as a [layer, head] grid over the sender layers."""
    if not receivers:
        raise ValueError("no receiver heads given; e.g. top_output_heads(heads_to_logits(oracle))")
    top = max(layer for layer, _ in receivers)
    if top == 0:
        raise ValueError("receivers are all in layer 0: no earlier head can send to them")
    senders = all_head_senders(oracle.model, below_layer=top)
    targets = [Receiver(layer, head, receiver_input) for layer, head in receivers]
    where = "end" if receiver_input == "q" else None
    effects = oracle.effects(senders, targets, receiver_positions=where)
    return effects.detach().cpu().reshape(top, oracle.model.cfg.n_heads)


def mean_ablation(setup: Setup) -> MeanAblation:
    """Per-template mean ablation (over the ABC prompts) for the setup's IOI prompts."""

    return MeanAblation.build(setup.model, setup.ds, setup.abc)


def discover(
    oracle: PathPatchingOracle,
    ablation: MeanAblation,
    thresholds: Sequence[float],
    min_faithfulness: float,
    extra_thresholds: int = 1,
    max_heads: int | None = None,
    track: Callable[[list[float]], Iterable[float]] | None = None,
) -> tuple[SweepPoint, list[SweepPoint]]:
    """Discover the circuit at each threshold, largest first, and choose one.

    The choice (`ioi.circuit.choose_threshold`) is the largest threshold whose circuit keeps
    ``min_faithfulness`` of the logit difference. Smaller thresholds cost the most (more
    heads, more paths), so the sweep stops ``extra_thresholds`` steps after the first one that
    meets the rule: they cannot change the choice, and the few run show what more heads add.

    Args:
        max_heads: discovery's head budget at each threshold (`ioi.circuit.discover_circuit`).
        track: wraps the list of thresholds, e.g. to show a progress bar.

    Returns:
        ``(chosen, points)``: the chosen `SweepPoint` and those computed, largest threshold first.
    """
    ordered = sorted(thresholds, reverse=True)
    points: list[SweepPoint] = []
    left: int | None = None  # thresholds still to run once the rule is met
    for t in track(ordered) if track else ordered:
        if left == 0:
            break
        points += threshold_sweep(oracle, ablation, [t], max_heads)
        if left is not None:
            left -= 1
        elif points[-1].faithfulness >= min_faithfulness:
            left = extra_thresholds
    return choose_threshold(points, min_faithfulness), points


def sweep_faithfulness_intervals(
    ablation: MeanAblation, points: Sequence[SweepPoint], **options
) -> list[Estimate]:
    """The interval over prompts of each sweep point's ``F(C) / F(M)``
    (`ioi.circuit.Faithfulness.interval`), on the kept sets `ioi.circuit.threshold_sweep`
    measured (none where no head passed the threshold: every head ablated).

    Args:
        options: ``level``, ``resamples``, ``seed`` for `ioi.statistics.bootstrap`.
    """
    model = ablation.logit_diff(None, per_prompt=True)
    out = []
    for p in points:
        circuit = p.discovered.circuit
        kept = ablation.logit_diff(
            {} if circuit is None else circuit.kept_positions(), per_prompt=True
        )
        faith = Faithfulness(
            float(model.mean()),
            float(kept.mean()),
            f_model_per_prompt=model,
            f_circuit_per_prompt=kept,
        )
        out.append(faith.interval("ratio", **options))
    return out


# ---- 4. the criteria ---------------------------------------------------------------------


@dataclass(frozen=True)
class Criteria:
    """Faithfulness, completeness and minimality of one circuit."""

    faithfulness: Faithfulness
    completeness: list[KnockoutScore]
    minimality: list[KnockoutScore]


def criteria(
    ablation: MeanAblation,
    circuit: Circuit,
    n_random: int = 10,
    greedy_steps: int = 3,
    seed: int = 0,
) -> Criteria:
    """The paper's three criteria for ``circuit`` under ``ablation``."""
    return Criteria(
        faithfulness=faithfulness(ablation, circuit),
        completeness=completeness(
            ablation, circuit, n_random=n_random, greedy_steps=greedy_steps, seed=seed
        ),
        minimality=minimality(ablation, circuit, mode="class"),
    )
