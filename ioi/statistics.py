"""Uncertainty over prompts: the mean, its standard error and a seeded bootstrap interval.

Every patching number is a mean over prompts, so it comes with the question of how much it
would move on other prompts of the same distribution. `bootstrap` answers it for a whole grid
of sites at once: it draws ``resamples`` sets of prompt indices (with replacement) *once*, as
a [resample, batch] table of counts, and applies that same table to every site with one
matrix product. Resampling the same prompts for every site keeps the sites' intervals paired,
as their point estimates are (all were measured on the same prompts).

Choices, stated once:

- Method: the percentile bootstrap (the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
  the resampled statistic, linearly interpolated, as `torch.quantile`). Default 1000 resamples,
  level 0.95, seed 0; the indices come from a local `torch.Generator`, never the global RNG.
- Standard error: for the plain mean, ``std(values, ddof=1) / sqrt(n)``; for any other
  statistic (a ratio of means, an absolute difference) the standard deviation of its
  bootstrap distribution.
- Values are centred on each series' first prompt before averaging (and the centre added back),
  so a constant series gives exactly a point interval and large offsets lose no precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Shaped
from torch import Tensor

METHOD = "percentile bootstrap"
DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95

Statistic = Callable[..., Tensor]
"""Maps the means of the per-prompt series (one tensor each, broadcastable) to the estimate."""


@dataclass(frozen=True)
class Estimate:
    """A mean over prompts with its standard error and confidence interval, for a grid of cells.

    Attributes:
        mean: the statistic on all prompts, shape ``[*grid]`` (``[]`` for one number).
        se: its standard error, same shape.
        low, high: the interval's bounds, same shape.
        n: number of prompts.
        level: the interval's coverage, e.g. 0.95.
        method: how the interval was made (``"percentile bootstrap"``).
        resamples: number of bootstrap resamples.
        seed: the seed of the resampling generator.
    """

    mean: Float[Tensor, "*grid"]
    se: Float[Tensor, "*grid"]
    low: Float[Tensor, "*grid"]
    high: Float[Tensor, "*grid"]
    n: int
    level: float
    method: str = METHOD
    resamples: int = DEFAULT_RESAMPLES
    seed: int = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def excludes_zero(self) -> Bool[Tensor, "*grid"]:
        """True where the whole interval lies on one side of zero."""
        return (self.low > 0) | (self.high < 0)

    def describe(self) -> str:
        """The method in words, for a report: level, method, N, resamples and seed."""
        return (
            f"{self.level:.0%} {self.method} intervals over n={self.n} prompts "
            f"({self.resamples} resamples, seed {self.seed})"
        )

    def __str__(self) -> str:
        if self.mean.ndim == 0:
            return (
                f"{float(self.mean):.4g} (SE {float(self.se):.2g}, {self.level:.0%} CI "
                f"[{float(self.low):.4g}, {float(self.high):.4g}], n={self.n})"
            )
        return f"Estimate(shape={self.shape}, {self.describe()})"


def check_options(level: object, resamples: object, seed: object) -> None:
    """Refuse a level outside (0, 1), fewer than one resample, or a seed that is not an int."""
    if isinstance(level, bool) or not isinstance(level, int | float):
        raise TypeError(f"level must be a number in (0, 1), e.g. 0.95; got {level!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, e.g. 0.95; got {level}")
    if isinstance(resamples, bool) or not isinstance(resamples, int):
        raise TypeError(f"resamples must be an int >= 1, e.g. 1000; got {resamples!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, e.g. 1000; got {resamples}")
    check_seed(seed)


def check_seed(seed: object) -> None:
    """A seed for a local ``torch.Generator`` is an int (TypeError naming it otherwise)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}")


def _check_series(values: object, what: str) -> Tensor:
    if not isinstance(values, Tensor):
        raise TypeError(
            f"{what} must be a float tensor [..., batch], got a {type(values).__name__}"
        )
    if not values.dtype.is_floating_point or values.ndim == 0:
        raise ValueError(
            f"{what} must be a float tensor with the prompts on its last axis [..., batch], "
            f"got {values.dtype} of shape {tuple(values.shape)}"
        )
    if values.shape[-1] < 2:
        raise ValueError(
            f"{what} holds {values.shape[-1]} prompt(s); a standard error and an interval need "
            "at least 2"
        )
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{what} holds NaN or infinite values; an interval would mean nothing")
    return values.detach().double().cpu()


def resample_counts(
    n: int, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Float[Tensor, "resample batch"]:
    """How often each of ``n`` prompts is drawn in each resample (each row sums to ``n``)."""
    check_options(DEFAULT_LEVEL, resamples, seed)
    gen = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n, (resamples, n), generator=gen)  # [resample, batch]
    counts = torch.zeros(resamples, n, dtype=torch.float64)
    return counts.scatter_add_(1, index, torch.ones_like(counts))


def _means(values: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """Full-sample and resampled means of [..., batch] values: [...] and [..., resample]."""
    centre = values[..., :1]
    deviations = values - centre  # exactly 0 for a constant series
    n = values.shape[-1]
    full = deviations.mean(-1) + centre[..., 0]
    resampled = deviations @ counts.T / n + centre  # [..., resample]
    return full, resampled


def bootstrap(
    per_prompt: Shaped[Tensor, "*grid batch"] | Sequence[Tensor],
    statistic: Statistic | None = None,
    *,
    level: float | int = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Estimate:
    """Mean, standard error and percentile-bootstrap interval of per-prompt values.

    Args:
        per_prompt: [*grid, batch] values (prompts on the last axis), or several such series
            over the same prompts (their grids broadcast), resampled together.
        statistic: None for the mean of one series; otherwise a function of the series'
            means, e.g. ``lambda patched, corrupted, clean: (patched - corrupted) /
            (clean - corrupted)``. It must broadcast: it is called on the [*grid] means and on
            the [*grid, resample] resampled means.
        level: coverage of the interval, in (0, 1).
        resamples: number of bootstrap resamples, >= 1.
        seed: seeds the resampling (a local generator): the same seed gives the same interval.

    Returns:
        An `Estimate` of shape [*grid].

    Raises:
        TypeError: a wrong type for the values, level, resamples or seed.
        ValueError: a level outside (0, 1), resamples < 1, fewer than 2 prompts, series over
            different numbers of prompts, non-finite values, or a statistic that is not finite.

    Example:
        >>> est = bootstrap(result.per_prompt)  # result from a per-prompt metric
        >>> est.low, est.high
    """
    check_options(level, resamples, seed)
    if isinstance(per_prompt, Tensor):
        series = [_check_series(per_prompt, "per_prompt")]
    elif isinstance(per_prompt, Sequence) and per_prompt:
        series = [_check_series(v, f"per_prompt[{i}]") for i, v in enumerate(per_prompt)]
    else:
        raise TypeError("per_prompt must be a [..., batch] tensor or a non-empty list of them")
    n = series[0].shape[-1]
    if any(v.shape[-1] != n for v in series):
        sizes = [v.shape[-1] for v in series]
        raise ValueError(f"the series hold different numbers of prompts {sizes}; pair them")
    if statistic is None and len(series) != 1:
        raise ValueError("several series need a statistic that combines their means")
    counts = resample_counts(n, resamples, seed)
    pairs = [_means(v, counts) for v in series]
    fn = statistic or (lambda mean: mean)
    point = fn(*(full for full, _ in pairs))
    draws = fn(*(resampled for _, resampled in pairs))  # [*grid, resample]
    if not bool(torch.isfinite(point).all()):
        raise ValueError("the statistic is not finite on the full sample (a ratio over 0?)")
    bad = int((~torch.isfinite(draws)).sum())
    if bad:
        raise ValueError(
            f"the statistic is not finite on {bad} resampled values (a ratio whose denominator "
            "can be 0 on some resamples?); use a difference instead of a ratio"
        )
    if statistic is None:
        se = series[0].std(-1, correction=1) / math.sqrt(n)
    else:
        se = draws.std(-1, correction=1) if resamples > 1 else torch.zeros_like(point)
    low, high = percentiles(draws, level)
    return Estimate(point, se, low, high, n, float(level), METHOD, resamples, seed)


def percentiles(
    draws: Float[Tensor, "*grid resample"], level: float
) -> tuple[Float[Tensor, "*grid"], Float[Tensor, "*grid"]]:
    """The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles along the last axis.

    Linear interpolation between order statistics, as `torch.quantile` (which refuses very
    large inputs, so the sort is done here).
    """
    ordered = draws.sort(-1).values
    last = ordered.shape[-1] - 1
    out = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        where = q * last
        below = math.floor(where)
        above = min(below + 1, last)
        frac = where - below
        low, high = ordered[..., below], ordered[..., above]
        out.append(low + (high - low) * frac if frac else low)
    return out[0], out[1]
