"""Section 6 answers: a seeded bootstrap interval, and the heads whose interval excludes zero."""

from __future__ import annotations

import math
import statistics

import torch

from ioi.head import Head
from ioi.statistics import Estimate, bootstrap, resample_counts
from tests.checks.corpus import correct, variant, wrong

# ---- bootstrap_estimate ------------------------------------------------------------------------


def _boot(
    per_prompt,
    level=0.95,
    resamples=1000,
    seed=0,
    *,
    se="sample",
    interval="means",
    quantiles=None,
    seeded=True,
    fixed_seed=None,
    fixed_resamples=None,
    paired=True,
    swap=False,
    n_from=-1,
):
    n = per_prompt.shape[-1]
    resamples = fixed_resamples or resamples
    gen = torch.Generator().manual_seed(seed if fixed_seed is None else fixed_seed)
    if paired:
        index = (
            torch.randint(0, n, (resamples, n), generator=gen)
            if seeded
            else torch.randint(0, n, (resamples, n))
        )
        draws = per_prompt[..., index].mean(-1)
    else:  # each cell its own indices
        flat = per_prompt.reshape(-1, n)
        rows = [row[torch.randint(0, n, (resamples, n), generator=gen)].mean(-1) for row in flat]
        draws = torch.stack(rows).reshape(*per_prompt.shape[:-1], resamples)
    if interval == "prompts":
        draws = per_prompt
    elif interval == "one":
        draws = per_prompt[..., index[0]]
    q = quantiles or ((1 - level) / 2, (1 + level) / 2)
    low, high = (torch.quantile(draws, qi, dim=-1) for qi in q)
    std = per_prompt.std(-1, correction=0 if se == "population" else 1)
    spread = {"sample": std / math.sqrt(n), "population": std / math.sqrt(n), "std": std}.get(se)
    if se == "bootstrap":
        spread = draws.std(-1)
    if swap:
        low, high = high, low
    size = per_prompt.shape[n_from] if n_from != -1 else n
    return Estimate(
        per_prompt.mean(-1), spread, low, high, size, level, resamples=resamples, seed=seed
    )


variant("bootstrap_estimate", "std_not_se", _boot, "se = std.", se="std")
variant("bootstrap_estimate", "population_std", _boot, "std(ddof=0) / sqrt(n).", se="population")
variant(
    "bootstrap_estimate", "bootstrap_se", _boot, "se = std of the bootstrap means.", se="bootstrap"
)
variant(
    "bootstrap_estimate",
    "interval_of_prompts",
    _boot,
    "Quantiles of the values.",
    interval="prompts",
)
variant("bootstrap_estimate", "one_resample", _boot, "Quantiles of one resample.", interval="one")
variant("bootstrap_estimate", "unseeded", _boot, "The global random state.", seeded=False)
variant("bootstrap_estimate", "ignored_seed", _boot, "Seed 0 always.", fixed_seed=0)
variant(
    "bootstrap_estimate",
    "resamples_ignored",
    _boot,
    "1000 resamples always.",
    fixed_resamples=1000,
)
variant(
    "bootstrap_estimate",
    "wrong_quantiles",
    _boot,
    "Quantiles 0.05 and 0.95.",
    quantiles=(0.05, 0.95),
    fn_name="boot_05_95",
)
variant(
    "bootstrap_estimate",
    "unpaired_resamples",
    _boot,
    "Each cell its own indices.",
    paired=False,
)
variant("bootstrap_estimate", "swapped_fields", _boot, "low and high exchanged.", swap=True)
variant("bootstrap_estimate", "wrong_n", _boot, "n = shape[0].", n_from=0)


@wrong("bootstrap_estimate", "wrong_quantiles")
def boot_level_as_quantile(per_prompt, level=0.95, resamples=1000, seed=0):
    """Quantiles level / 2 and 1 - level / 2."""
    return _boot(per_prompt, level, resamples, seed, quantiles=(level / 2, 1 - level / 2))


@wrong("bootstrap_estimate", "prompts_axis_first")
def boot_prompts_first(per_prompt, level=0.95, resamples=1000, seed=0):
    """Prompts taken to be the first axis."""
    return _boot(per_prompt.movedim(0, -1), level, resamples, seed)


@wrong("bootstrap_estimate", "unpaired_resamples")
def boot_loop_fresh_draws(per_prompt, level=0.95, resamples=1000, seed=0):
    """A loop over cells with one generator, each cell drawing with numpy-style choice."""
    n = per_prompt.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    flat = per_prompt.reshape(-1, n)
    lows, highs = [], []
    for row in flat:
        means = torch.stack(
            [row[torch.randint(0, n, (n,), generator=gen)].mean() for _ in range(resamples)]
        )
        lows.append(torch.quantile(means, (1 - level) / 2))
        highs.append(torch.quantile(means, (1 + level) / 2))
    shape = per_prompt.shape[:-1]
    return Estimate(
        per_prompt.mean(-1),
        per_prompt.std(-1) / math.sqrt(n),
        torch.stack(lows).reshape(shape),
        torch.stack(highs).reshape(shape),
        n,
        level,
        resamples=resamples,
        seed=seed,
    )


@wrong("bootstrap_estimate", "wrong_values")
def boot_normal_approximation(per_prompt, level=0.95, resamples=1000, seed=0):
    """mean +- 1.96 se, not a bootstrap (not a mistake the checker names)."""
    n = per_prompt.shape[-1]
    mean, se = per_prompt.mean(-1), per_prompt.std(-1) / math.sqrt(n)
    return Estimate(
        mean, se, mean - 1.96 * se, mean + 1.96 * se, n, level, resamples=resamples, seed=seed
    )


@correct("bootstrap_estimate", "the library's bootstrap")
def boot_library(per_prompt, level=0.95, resamples=1000, seed=0):
    return bootstrap(per_prompt, level=level, resamples=resamples, seed=seed)


@correct("bootstrap_estimate", "a loop over cells re-seeding the generator for each: still paired")
def boot_loop_reseeded(per_prompt, level=0.95, resamples=1000, seed=0):
    n = per_prompt.shape[-1]
    rows = []
    for row in per_prompt.reshape(-1, n):
        gen = torch.Generator().manual_seed(seed)
        index = torch.randint(0, n, (resamples, n), generator=gen)
        draws = row[index].mean(-1)
        rows.append(
            torch.quantile(
                draws, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=draws.dtype)
            )
        )
    bounds = torch.stack(rows).reshape(*per_prompt.shape[:-1], 2)
    se = per_prompt.std(-1) / math.sqrt(n)
    return Estimate(
        per_prompt.mean(-1),
        se,
        bounds[..., 0],
        bounds[..., 1],
        n,
        level,
        resamples=resamples,
        seed=seed,
    )


@correct("bootstrap_estimate", "resampled means from a table of counts")
def boot_counts(per_prompt, level=0.95, resamples=1000, seed=0):
    n = per_prompt.shape[-1]
    counts = resample_counts(n, resamples, seed).to(per_prompt.dtype)  # [resample, batch]
    draws = per_prompt @ counts.T / n
    low = torch.quantile(draws, (1 - level) / 2, dim=-1)
    high = torch.quantile(draws, (1 + level) / 2, dim=-1)
    se = per_prompt.std(-1) / math.sqrt(n)
    return Estimate(per_prompt.mean(-1), se, low, high, n, level, resamples=resamples, seed=seed)


# ---- significant_heads -------------------------------------------------------------------------


def _sig(
    result,
    level=0.95,
    resamples=1000,
    seed=0,
    *,
    keep="excludes",
    value="change",
    options=True,
    order="change",
    adjust=None,
):
    level = {
        "one_sided": 2 * level - 1,
        "inverted": 1 - level,
        "bonferroni": 1 - (1 - level) / result.change.numel(),
    }.get(adjust, level)
    opts = dict(level=level, resamples=resamples, seed=seed) if options else {}
    if options == "no_seed":
        del opts["seed"]
    est = result.interval(value, **opts)
    mask = {
        "excludes": (est.low > 0) | (est.high < 0),
        "contains": (est.low <= 0) & (est.high >= 0),
        "above": est.low > 0,
    }[keep]
    heads = [Head(int(a), int(b)) for a, b in mask.nonzero().tolist()]
    if order == "change":
        heads.sort(key=lambda h: -abs(float(result.change[h])))
    return heads


variant(
    "significant_heads", "kept_intervals_with_zero", _sig, "low <= 0 <= high kept.", keep="contains"
)
variant("significant_heads", "one_sided", _sig, "low > 0 only.", keep="above")
variant("significant_heads", "interval_of_effect", _sig, "interval('effect').", value="effect")
variant("significant_heads", "options_ignored", _sig, "Default options.", options=False)
variant("significant_heads", "wrong_order", _sig, "In (layer, head) order.", order="grid")


@wrong("significant_heads", "threshold_not_interval")
def sig_threshold(result, level=0.95, resamples=1000, seed=0):
    """|change| >= 10% of the gap."""
    return [Head(r["layer"], r["head"]) for r in result.significant(0.1)]


@wrong("significant_heads", "threshold_not_interval")
def sig_two_se(result, level=0.95, resamples=1000, seed=0):
    """|change| > 0.1 with no interval at all, sorted."""
    change = result.change
    heads = [Head(int(a), int(b)) for a, b in (change.abs() > 0.1).nonzero().tolist()]
    return sorted(heads, key=lambda h: -abs(float(change[h])))


@wrong("significant_heads", "wrong_type")
def sig_labels(result, level=0.95, resamples=1000, seed=0):
    """Head labels as strings."""
    return [str(h) for h in _sig(result, level, resamples, seed)]


@correct("significant_heads", "the library's significant(by='interval')")
def sig_library(result, level=0.95, resamples=1000, seed=0):
    rows = result.significant(by="interval", level=level, resamples=resamples, seed=seed)
    return [Head(r["layer"], r["head"]) for r in rows]


@correct("significant_heads", "(layer, head) tuples from a loop")
def sig_loop(result, level=0.95, resamples=1000, seed=0):
    est = result.interval("change", level=level, resamples=resamples, seed=seed)
    found = []
    for layer in range(est.low.shape[0]):
        for head in range(est.low.shape[1]):
            if est.low[layer, head] > 0 or est.high[layer, head] < 0:
                found.append((layer, head))
    return sorted(found, key=lambda h: -abs(float(result.change[h])))


# ---- adversarial review (chk36) -----------------------------------------------------------------

variant(
    "significant_heads",
    "one_sided_level",
    _sig,
    "One-sided 5% at each end: the 90% interval for level 0.95.",
    adjust="one_sided",
)
variant(
    "significant_heads",
    "level_inverted",
    _sig,
    "level=1 - level (a 5% interval).",
    adjust="inverted",
)
variant(
    "significant_heads",
    "multiple_comparisons_corrected",
    _sig,
    "Bonferroni: level 1 - (1 - level) / n_heads.",
    adjust="bonferroni",
)
variant(
    "significant_heads",
    "options_ignored",
    _sig,
    "level and resamples passed on, the seed not.",
    fn_name="sig_seed_ignored",
    options="no_seed",
)


@wrong("significant_heads", "normal_not_bootstrap")
def sig_normal_interval(result, level=0.95, resamples=1000, seed=0):
    """mean +- z * se instead of the bootstrap's percentiles."""
    est = result.interval("change", level=level, resamples=resamples, seed=seed)
    z = statistics.NormalDist().inv_cdf((1 + level) / 2)
    keep = (est.mean - z * est.se > 0) | (est.mean + z * est.se < 0)
    heads = [Head(int(a), int(b)) for a, b in keep.nonzero().tolist()]
    return sorted(heads, key=lambda h: -abs(float(result.change[h])))


@correct("significant_heads", "the bounds' signs agree, ranked by argsort")
def sig_signs_agree(result, level=0.95, resamples=1000, seed=0):
    est = result.interval("change", level=level, resamples=resamples, seed=seed)
    keep = ((torch.sign(est.low) == torch.sign(est.high)) & (est.low != 0)).flatten()
    n_heads = result.change.shape[1]
    order = result.change.abs().flatten().argsort(descending=True, stable=True).tolist()
    return [Head(i // n_heads, i % n_heads) for i in order if keep[i]]


@wrong("significant_heads", "hard_coded_size")
def sig_toy_heads(result, level=0.95, resamples=1000, seed=0):
    """Flat index split by the toy's 4 heads: divmod(i, 4)."""
    est = result.interval("change", level=level, resamples=resamples, seed=seed)
    keep = ((est.low > 0) | (est.high < 0)).flatten()
    order = result.change.abs().flatten().argsort(descending=True, stable=True).tolist()
    return [Head(*divmod(i, 4)) for i in order if keep[i]]
