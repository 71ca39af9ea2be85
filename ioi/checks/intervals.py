"""Checkers for section 6's exercises on reading intervals: a seeded bootstrap, and heads whose
interval excludes zero.

Expected values come from `ioi.statistics.bootstrap` and `PatchResult.significant(by="interval")`.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable
from types import SimpleNamespace

import torch
from torch import Tensor

from ioi.checks.core import AnyOf, describe, exercise, one_thread
from ioi.checks.fixtures import other_model_batch, toy_model
from ioi.head import Head
from ioi.patching import PatchResult, sweep
from ioi.statistics import bootstrap

BOOTSTRAP = exercise(
    "bootstrap_estimate",
    hint="mean = per_prompt.mean(-1); se = per_prompt.std(-1) / sqrt(n) (ddof 1); gen = "
    "torch.Generator().manual_seed(seed); index = torch.randint(0, n, (resamples, n), "
    "generator=gen); draws = per_prompt[..., index].mean(-1) ([*grid, resample]); low, high = "
    "torch.quantile(draws, q, dim=-1) at q = (1 - level) / 2 and (1 + level) / 2.",
    diagnoses={
        "std_not_se": "se is the standard deviation of the prompts; the standard error of their "
        "mean is that divided by sqrt(n)",
        "population_std": "se uses the population standard deviation (ddof=0, numpy's default); "
        "the sample one (ddof=1, torch's default) is asked: with few prompts they differ",
        "bootstrap_se": "se is the standard deviation of the bootstrap means; for the plain "
        "mean the exercise (and the library) uses the formula std(ddof=1) / sqrt(n)",
        "interval_of_prompts": "the interval holds the middle of the prompts' own values, not "
        "of the resampled *means*: that is where one prompt's effect falls, not where the mean "
        "would fall on other prompts. Take quantiles of the means of the resamples",
        "one_resample": "the interval comes from the values of a single resample; draw "
        "`resamples` resamples, take each one's mean, and the quantiles of those means",
        "unseeded": "two calls with the same seed gave different intervals: draw the indices "
        "from torch.Generator().manual_seed(seed), never from the global random state",
        "ignored_seed": "the interval is that of another seed: pass `seed` to the generator",
        "resamples_ignored": "the interval was drawn with another number of resamples than "
        "`resamples`",
        "wrong_quantiles": "the interval's quantiles are wrong: an interval at `level` leaves "
        "(1 - level) / 2 in each tail, so the quantiles are (1 - level) / 2 and (1 + level) / 2 "
        "(0.025 and 0.975 for 95%; 0.05 and 0.95 make a 90% interval)",
        "prompts_axis_first": "you resampled and averaged the first axis; the prompts are on "
        "the *last* axis ([*grid, batch], as PatchResult.per_prompt): use dim=-1",
        "unpaired_resamples": "each cell was resampled with its own indices; draw one [resample, "
        "batch] index table and use it for every cell, so all cells are resampled on the same "
        "prompts (their point estimates were measured on the same prompts: keep them paired)",
        "wrong_n": "n must be the number of prompts, per_prompt.shape[-1]",
    },
    shared=("swapped_fields",),
)

FIELDS = ("mean", "se", "low", "high", "n")


def bootstrap_variant(
    values: Tensor,
    level: float,
    resamples: int,
    seed: int,
    *,
    se: str = "sample",
    interval: str = "means",
    quantiles: tuple[float, float] | None = None,
    paired: bool = True,
) -> SimpleNamespace:
    """The estimate with switches for the mistakes: ``se`` ``"sample"``, ``"std"``,
    ``"population"``, ``"bootstrap"``; ``interval`` ``"means"``, ``"prompts"`` (quantiles of
    the values), ``"one"`` (of one resample's values); ``paired=False``: one index table per
    cell, drawn in turn from one generator."""
    v = values.double()
    n = v.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    if paired:
        index = torch.randint(0, n, (resamples, n), generator=gen)
        draws = v[..., index].mean(-1)  # [*grid, resample]
    else:
        flat = v.reshape(-1, n)
        draws = torch.stack(
            [row[torch.randint(0, n, (resamples, n), generator=gen)].mean(-1) for row in flat]
        ).reshape(*v.shape[:-1], resamples)
        index = None
    if interval == "prompts":
        draws = v
    elif interval == "one":
        draws = v[..., index[0]]
    q = quantiles or ((1 - level) / 2, (1 + level) / 2)
    low, high = (torch.quantile(draws, qi, dim=-1) for qi in q)
    std = v.std(-1, correction=0 if se == "population" else 1)
    spread = std if se == "std" else std / math.sqrt(n)
    if se == "bootstrap":  # the paired draws' spread, whatever the interval was made of
        again = torch.Generator().manual_seed(seed)
        spread = v[..., torch.randint(0, n, (resamples, n), generator=again)].mean(-1).std(-1)
    return SimpleNamespace(mean=v.mean(-1), se=spread, low=low, high=high, n=n)


def _cases() -> tuple[tuple[Tensor, float, int, int], ...]:
    gen = torch.Generator().manual_seed(5)
    grid = torch.randn(3, 4, 10, generator=gen) * 0.3 + torch.linspace(-0.4, 0.6, 12).reshape(
        3, 4, 1
    )
    series = torch.randn(7, generator=gen) + 2.0
    wide = torch.randn(5, 12, generator=gen) * torch.arange(1, 6).reshape(5, 1)
    return ((grid, 0.95, 400, 3), (series, 0.9, 300, 11), (wide, 0.8, 500, 0))


def _same_cell0_only(raw: object, expected, n_cells: int) -> object:
    """``raw`` if its mean and se are right and only its first cell's interval is: each cell
    resampled with its own draws (the first cell's draws are the paired ones)."""
    try:
        mean, se = torch.as_tensor(raw.mean).double(), torch.as_tensor(raw.se).double()
        low, high = torch.as_tensor(raw.low).double(), torch.as_tensor(raw.high).double()
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None
    if n_cells < 2 or mean.shape != expected.mean.shape:
        return None
    right = torch.allclose(mean, expected.mean, atol=1e-5) and torch.allclose(
        se, expected.se, atol=1e-5
    )
    bounds = torch.stack([low.flatten(), high.flatten()])
    want = torch.stack([expected.low.flatten(), expected.high.flatten()])
    first = torch.allclose(bounds[:, 0], want[:, 0], atol=1e-5)
    rest = torch.allclose(bounds[:, 1:], want[:, 1:], atol=1e-5)
    return raw if right and first and not rest else None


@one_thread()
def test_bootstrap_estimate(bootstrap_estimate_fn: Callable) -> None:
    """Check ``bootstrap_estimate(per_prompt, level=0.95, resamples=1000, seed=0) -> Estimate``."""
    ex = BOOTSTRAP
    for i, (values, level, resamples, seed) in enumerate(_cases()):
        call = (
            f"bootstrap_estimate(per_prompt {list(values.shape)}, level={level}, "
            f"resamples={resamples}, seed={seed})"
        )
        raw = ex.call(bootstrap_estimate_fn, values.clone(), level, resamples, seed, call=call)
        expected = bootstrap(values, level=level, resamples=resamples, seed=seed)
        if i == 0:
            again = ex.call(
                bootstrap_estimate_fn, values.clone(), level, resamples, seed, call=call
            )
            lows = [getattr(r, "low", None) for r in (raw, again)]
            if all(isinstance(x, Tensor) for x in lows) and not torch.equal(*lows):
                ex.fail(
                    "unseeded",
                    call=call + "  (called twice)",
                    expected="the same interval from both calls",
                    got=f"low {describe(lows[0])} then {describe(lows[1])}",
                    explanation=ex.diagnoses["unseeded"],
                    hint=ex.hint,
                )

        def v(values=values, level=level, resamples=resamples, seed=seed, **how):
            return bootstrap_variant(values, level, resamples, seed, **how)

        quantile_pairs = [(1 - level, level), (level / 2, 1 - level / 2)]
        if level != 0.95:
            quantile_pairs.append((0.025, 0.975))
        mistakes = {
            "std_not_se": lambda v=v: v(se="std"),
            "population_std": lambda v=v: v(se="population"),
            "bootstrap_se": lambda v=v: v(se="bootstrap"),
            "interval_of_prompts": lambda v=v: v(interval="prompts"),
            "one_resample": lambda v=v: v(interval="one"),
            "ignored_seed": lambda v=v, s=seed: AnyOf(v(seed=o) for o in (0, 1, 42) if o != s),
            "resamples_ignored": lambda v=v, r=resamples: AnyOf(
                v(resamples=o) for o in (1000, 100) if o != r
            ),
            "wrong_quantiles": lambda v=v, pairs=quantile_pairs: AnyOf(
                v(quantiles=q) for q in pairs
            ),
            "prompts_axis_first": lambda v=v, values=values: (
                None if values.ndim < 2 else v(values=values.movedim(0, -1))
            ),
            "unpaired_resamples": lambda v=v, raw=raw, e=expected, values=values: AnyOf(
                [v(paired=False), _same_cell0_only(raw, e, values[..., 0].numel())]
            ),
            "wrong_n": lambda e=expected, values=values: AnyOf(
                SimpleNamespace(**{**{f: getattr(e, f) for f in FIELDS}, "n": other})
                for other in {values.shape[0], values.numel()} - {values.shape[-1]}
            ),
        }
        ex.expect_record(raw, expected, FIELDS, call=call, mistakes=mistakes, atol=1e-5)
    result = bootstrap(_cases()[1][0], level=0.9, resamples=300, seed=11)
    ex.passed(f"7 prompts: {result}")


SIGNIFICANT = exercise(
    "significant_heads",
    hint="estimate = result.interval('change', level=level, resamples=resamples, seed=seed); "
    "keep the heads where estimate.low > 0 or estimate.high < 0, largest |change| first "
    "(result.change[layer, head]); return them as Head(layer, head).",
    diagnoses={
        "threshold_not_interval": "you kept the heads of largest |change| (a threshold on "
        "the size of the effect); the exercise keeps the heads whose interval excludes 0, "
        "which a small but consistent effect can pass and a large but noisy one can fail",
        "kept_intervals_with_zero": "you kept the heads whose interval *contains* 0: those "
        "are the ones the data cannot tell from no effect. Keep low > 0 or high < 0",
        "one_sided": "you kept only the heads whose interval lies above 0 (or only below); "
        "an interval wholly below 0 is an effect too (the head hurts the metric): keep both",
        "interval_of_effect": "you took the interval of the patched metric ('effect'); it "
        "excludes 0 wherever the metric is not 0. The effect of patching is the 'change' "
        "(patched minus unpatched, per prompt): use result.interval('change', ...)",
        "options_ignored": "the intervals were made with the default level, resamples or seed, "
        "not the ones you were given: pass level, resamples and seed on to result.interval",
        "wrong_order": "the right heads in the wrong order: largest |change| first",
        "one_sided_level": "you made the intervals at level 2 * level - 1 (a one-sided test "
        "at each end); the test is two-sided: keep the heads whose `level` interval, "
        "result.interval('change', level=level, ...), excludes 0",
        "level_inverted": "you made the intervals at level 1 - level (a 5% interval for "
        "level=0.95): `level` is the interval's coverage, passed as it is",
        "normal_not_bootstrap": "you made normal intervals (mean +- z * se); the exercise's "
        "intervals are the bootstrap's percentile ones: est.low and est.high of "
        "result.interval('change', ...)",
        "multiple_comparisons_corrected": "you corrected the level for the number of heads "
        "(Bonferroni: 1 - (1 - level) / n_heads); the exercise asks for each head's own "
        "`level` interval, uncorrected",
    },
    shared=("hard_coded_size",),
)


@functools.lru_cache(maxsize=1)
def _interval_results() -> tuple[PatchResult, ...]:
    """Two head results with per-prompt changes (clean baseline 1, corrupted 0, per prompt 1s
    and 0s): designed so the interval and the threshold disagree; on the second, 80% and 60%
    intervals, and seeds 0 and 4, keep different heads."""
    model = toy_model()
    grid = sweep(model, "z", 10)
    gen = torch.Generator().manual_seed(2)
    n = 16
    noise = torch.randn(3, 4, n, generator=gen, dtype=torch.float64)
    noise = (noise - noise.mean(-1, keepdim=True)) / noise.std(-1, keepdim=True)
    # mean, spread per head: strong, noisy-large, small-steady, negative, borderline, nothing
    spec = torch.tensor(
        [
            [(0.8, 0.2), (0.5, 2.5), (0.04, 0.02), (-0.3, 0.3)],
            [(0.0, 0.4), (0.21, 0.4), (-0.05, 0.5), (0.6, 0.5)],
            [(-0.45, 1.2), (0.1, 0.05), (0.0, 0.01), (-0.19, 0.4)],
        ],
        dtype=torch.float64,
    )
    out = []
    for scale in (1.0, 0.6):
        change = spec[..., :1] * scale + spec[..., 1:] * noise  # [layer, head, batch]
        clean = torch.ones(n, dtype=torch.float64)
        per_prompt = clean + change
        out.append(
            PatchResult(
                per_prompt.mean(-1),
                grid,
                1.0,
                0.0,
                mode="noise",
                per_prompt=per_prompt,
                clean_per_prompt=clean,
                corrupted_per_prompt=torch.zeros(n, dtype=torch.float64),
            )
        )
    return tuple(out)


@functools.lru_cache(maxsize=1)
def _other_sized_result() -> PatchResult:
    """A head result on a grid of other sizes than the toy's (`other_model_batch`'s model):
    a function that writes the toy's 4 heads (divmod(i, 4)) names the wrong heads there."""
    model = other_model_batch().model
    n_layers, n_heads, n = model.cfg.n_layers, model.cfg.n_heads, 16
    gen = torch.Generator().manual_seed(3)
    spread = torch.linspace(-0.6, 0.6, n_layers * n_heads, dtype=torch.float64)
    noise = torch.randn(n_layers, n_heads, n, generator=gen, dtype=torch.float64)
    change = spread.reshape(n_layers, n_heads, 1) + 0.3 * noise  # [layer, head, batch]
    clean = torch.ones(n, dtype=torch.float64)
    return PatchResult(
        (clean + change).mean(-1),
        sweep(model, "z", 10),
        1.0,
        0.0,
        mode="noise",
        per_prompt=clean + change,
        clean_per_prompt=clean,
        corrupted_per_prompt=torch.zeros(n, dtype=torch.float64),
    )


def _heads(rows) -> list[Head]:
    return [Head(int(r["layer"]), int(r["head"])) for r in rows]


def _as_heads(value: object) -> list[tuple[int, int]] | None:
    try:
        return [(int(h[0]), int(h[1])) for h in value]
    except (TypeError, ValueError, IndexError, KeyError):
        return None


@one_thread()
def test_significant_heads(significant_heads_fn: Callable) -> None:
    """Check ``significant_heads(result, level=0.95, resamples=1000, seed=0) -> list[Head]``."""
    ex = SIGNIFICANT
    # The last case is where seed 4's intervals are not seed 0's, 300 resamples' not 1000's,
    # and the 80% intervals not the 60% ones: an option ignored or the level halved shows.
    cases = [(r, 0.95, 500, 0) for r in _interval_results()] + [
        (_interval_results()[0], 0.8, 300, 4),
        (_interval_results()[1], 0.8, 300, 4),
        (_other_sized_result(), 0.95, 300, 0),
    ]
    for result, level, resamples, seed in cases:
        n_layers, n_heads = result.change.shape
        call = (
            f"significant_heads(result [layer {n_layers}, head {n_heads}, batch 16], level={level}, "
            f"resamples={resamples}, seed={seed})"
        )
        raw = ex.call(significant_heads_fn, result, level, resamples, seed, call=call)
        opts = dict(level=level, resamples=resamples, seed=seed)
        expected = _heads(result.significant(by="interval", **opts))
        got = _as_heads(raw)
        shown = [str(h) for h in expected]

        def fail(key: str, got=raw, call=call, shown=shown) -> None:
            ex.fail(
                key,
                call=call,
                expected=f"heads {shown}",
                got=describe(got),
                explanation=ex.diagnoses.get(key, "the heads differ"),
                hint=ex.hint,
            )

        if got is None:
            ex.fail(
                "wrong_type",
                call=call,
                expected=f"a list of Head: {shown}",
                got=describe(raw),
                explanation="expected a list of heads (Head(layer, head) or (layer, head) pairs)",
                hint=ex.hint,
            )
        if got == [tuple(h) for h in expected]:
            continue
        order = result.change.abs().flatten().argsort(descending=True, stable=True).tolist()
        ranked = [divmod(i, result.change.shape[1]) for i in order]
        est = result.interval("change", **opts)
        off = (est.low > 0) | (est.high < 0)
        z = statistics.NormalDist().inv_cdf((1 + level) / 2)
        chosen = set(got)
        candidates = {
            "wrong_order": [set(map(tuple, expected))],
            # Before the threshold: a narrow interval keeps the heads of largest |change| too.
            "level_inverted": [
                set(_heads(result.significant(by="interval", **{**opts, "level": 1 - level})))
            ],
            "threshold_not_interval": [set(ranked[: len(got)])] if got else [],
            "kept_intervals_with_zero": [{h for h in ranked if not off[h]}],
            "one_sided": [
                {h for h in ranked if est.low[h] > 0},
                {h for h in ranked if est.high[h] < 0},
            ],
            "interval_of_effect": [set(_heads(_effect_rows(result, opts)))],
            # Every option left at its default, or one of them.
            "options_ignored": [set(_heads(result.significant(by="interval")))]
            + [
                set(_heads(result.significant(by="interval", **{**opts, key: default})))
                for key, default in (("level", 0.95), ("resamples", 1000), ("seed", 0))
                if opts[key] != default
            ],
            "one_sided_level": [
                set(_heads(result.significant(by="interval", **{**opts, "level": 2 * level - 1})))
            ],
            "normal_not_bootstrap": [
                {h for h in ranked if abs(float(est.mean[h])) > z * float(est.se[h])}
            ],
            "hard_coded_size": [{divmod(i, 4) for i in range(off.numel()) if off.flatten()[i]}]
            if n_heads != 4
            else [],
            "multiple_comparisons_corrected": [
                set(
                    _heads(
                        result.significant(
                            by="interval",
                            **{**opts, "level": 1 - (1 - level) / result.change.numel()},
                        )
                    )
                )
            ],
        }
        for key, sets in candidates.items():
            if any(chosen == s for s in sets):
                fail(key)
        fail("wrong_values")
    found = _heads(cases[0][0].significant(by="interval", resamples=500))
    ex.passed(f"heads whose 95% interval excludes 0: {', '.join(map(str, found))}")


def _effect_rows(result: PatchResult, opts: dict) -> list[dict]:
    est = result.interval("effect", **opts)
    off = (est.low > 0) | (est.high < 0)
    return [
        {"layer": layer, "head": head}
        for layer in range(off.shape[0])
        for head in range(off.shape[1])
        if off[layer, head]
    ]
