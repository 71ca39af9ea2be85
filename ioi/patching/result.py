"""`PatchResult`: a patching sweep's values with named axes, baselines and tables.

It does not know how it is drawn: `ioi.patching.heatmap(result)` (in `ioi.patching.plot`) does.

A result made with a per-prompt metric (``reduce="none"`` in `ioi.metrics`, or any metric that
returns [batch]) keeps the per-prompt values and both runs' per-prompt baselines; its
``effect`` is their mean, and `PatchResult.interval` gives the standard error and a seeded
bootstrap interval over prompts (`ioi.statistics.bootstrap`). The change is bootstrapped as
the per-prompt difference from the unpatched run (paired), the normalised effect as a ratio
of resampled means.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ioi.patching.sites import PerPrompt, Site
from ioi.patching.sweep import Sweep
from ioi.statistics import DEFAULT_LEVEL, DEFAULT_RESAMPLES, Estimate, bootstrap

Mode = Literal["denoise", "noise"]
Value = Literal["effect", "change", "normalized"]
VALUES = ("effect", "change", "normalized")
SELECT_BY = ("threshold", "interval")


@dataclass(frozen=True)
class PatchResult:
    """The metric with each site patched, shaped like its sweep.

    Attributes:
        effect: metric of the patched run per site, shape ``sweep.shape``.
        sweep: the sites and named axes.
        clean_baseline: metric of the unpatched clean run.
        corrupted_baseline: metric of the unpatched corrupted run.
        mode: ``"denoise"`` (clean into corrupted: what suffices) or ``"noise"`` (corrupted,
            zero or mean into clean: what is necessary).
        source: ``"run"`` (the other run), ``"zero"`` or ``"mean"``.
        method: ``"exact"`` (activation patching) or ``"attribution"`` (gradient estimate).
        per_prompt: [*sweep.shape, batch] per-prompt effects (a per-prompt metric), else None;
            ``effect`` is their mean.
        clean_per_prompt, corrupted_per_prompt: [batch] metric of each unpatched run, per
            prompt (None when unknown: the baseline then counts as exact in intervals).
    """

    effect: Float[Tensor, "..."]
    sweep: Sweep
    clean_baseline: float
    corrupted_baseline: float
    mode: Mode = "denoise"
    source: str = "run"
    method: str = "exact"
    per_prompt: Float[Tensor, "..."] | None = None
    clean_per_prompt: Float[Tensor, " batch"] | None = None
    corrupted_per_prompt: Float[Tensor, " batch"] | None = None

    def __post_init__(self) -> None:
        assert tuple(self.effect.shape) == self.sweep.shape, "effect does not match its sweep"
        if self.per_prompt is not None:
            assert tuple(self.per_prompt.shape[:-1]) == self.sweep.shape, "per_prompt: wrong grid"
            batch = self.per_prompt.shape[-1]
            for base in (self.clean_per_prompt, self.corrupted_per_prompt):
                assert base is None or tuple(base.shape) == (batch,), "baseline: wrong batch"

    @property
    def axes(self) -> tuple[str, ...]:
        """Names of the effect's dimensions, e.g. ``("layer", "head")``."""
        return self.sweep.axes

    @property
    def sites(self) -> tuple[Site, ...]:
        """Sites in row-major order of ``effect``."""
        return self.sweep.sites

    @property
    def receiver_baseline(self) -> float:
        """Metric of the run being patched: corrupted when denoising, clean when noising."""
        return self.corrupted_baseline if self.mode == "denoise" else self.clean_baseline

    @property
    def change(self) -> Float[Tensor, "..."]:
        """Effect minus the unpatched run being patched."""
        return self.effect - self.receiver_baseline

    @property
    def normalized(self) -> Float[Tensor, "..."]:
        """``(effect - corrupted) / (clean - corrupted)``: 0 is corrupted-like, 1 clean-like.

        Denoising a site that restores the behaviour gives 1; noising a site the behaviour
        needs drops it from 1 towards 0.
        """
        gap = self.clean_baseline - self.corrupted_baseline
        if gap == 0:
            raise ValueError(
                "clean and corrupted baselines are equal, so the effect cannot be normalised; "
                "use `effect` or `change`, or a metric that separates the two runs"
            )
        return (self.effect - self.corrupted_baseline) / gap

    def values(self, value: Value = "effect") -> Float[Tensor, "..."]:
        """The effect, the change, or the normalised effect, by name."""
        if value not in VALUES:
            raise ValueError(f"unknown value {value!r}; valid: {', '.join(VALUES)}")
        return getattr(self, value)

    @property
    def n_prompts(self) -> int | None:
        """Number of prompts behind the per-prompt values; None without them."""
        return None if self.per_prompt is None else int(self.per_prompt.shape[-1])

    def interval(
        self,
        value: str = "change",
        *,
        level: float | int = DEFAULT_LEVEL,
        resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
    ) -> Estimate:
        """Mean, standard error and bootstrap interval over prompts of a value, per site.

        Args:
            value: ``"change"`` (default: per-prompt patched minus unpatched, so an interval
                that excludes 0 is an effect), ``"effect"`` or ``"normalized"``.
            level, resamples, seed: see `ioi.statistics.bootstrap`.

        Returns:
            An `Estimate` shaped like ``effect``; its mean equals `values` (value).

        Raises:
            ValueError: the result has no per-prompt values (a scalar metric was used), an
                unknown value, or bad bootstrap options.
        """
        if value not in VALUES:
            raise ValueError(f"unknown value {value!r}; valid: {', '.join(VALUES)}")
        if self.per_prompt is None:
            raise ValueError(
                "this result has no per-prompt values, so it has no interval: pass a "
                "per-prompt metric (e.g. make_ioi_metric(..., reduce='none'), or any metric "
                "returning one value per prompt [batch])"
            )
        options = dict(level=level, resamples=resamples, seed=seed)
        patched = self.per_prompt
        if value == "effect":
            return bootstrap(patched, **options)
        if value == "change":
            receiver = self._baseline_series("corrupted" if self.mode == "denoise" else "clean")
            return bootstrap(patched - receiver, **options)
        if self.clean_baseline == self.corrupted_baseline:
            raise ValueError(
                "clean and corrupted baselines are equal, so the normalised effect has no "
                "interval; use interval('change') or interval('effect')"
            )
        series = [patched, self._baseline_series("corrupted"), self._baseline_series("clean")]
        return bootstrap(series, _normalise, **options)

    def _baseline_series(self, run: str) -> Float[Tensor, " batch"]:
        """The run's per-prompt metric, or its mean repeated when only the mean is known."""
        known = self.clean_per_prompt if run == "clean" else self.corrupted_per_prompt
        if known is not None:
            return known.to(self.per_prompt.device, self.per_prompt.dtype)
        mean = self.clean_baseline if run == "clean" else self.corrupted_baseline
        return torch.full_like(self.per_prompt[(0,) * (self.per_prompt.ndim - 1)], mean)

    def table(self, intervals: bool | None = None, **options) -> list[dict[str, object]]:
        """One row per site: its fields, its axis labels, effect, change and normalised effect.

        Args:
            intervals: add ``n``, ``change_se``, ``change_low``, ``change_high`` (and
                ``normalized_low``/``normalized_high`` when the baselines differ); None: when
                the result has per-prompt values.
            options: ``level``, ``resamples``, ``seed`` for `interval`.
        """
        effect = self.effect.flatten().tolist()
        change = self.change.flatten().tolist()
        gap = self.clean_baseline - self.corrupted_baseline
        if intervals is None:
            intervals = self.per_prompt is not None
        extra = self._interval_columns(gap, options) if intervals else [{}] * len(self.sites)
        rows = []
        labels_per_site = itertools.product(*self.sweep.labels)  # row-major, like the sites
        for i, (site, labels) in enumerate(zip(self.sites, labels_per_site, strict=True)):
            row: dict[str, object] = {"site": site.describe(), **_site_fields(site)}
            for axis, label in zip(self.axes, labels, strict=True):
                row[f"{axis}_label"] = label
            row["effect"] = effect[i]
            row["change"] = change[i]
            row["normalized"] = (effect[i] - self.corrupted_baseline) / gap if gap else None
            row.update(extra[i])
            rows.append(row)
        return rows

    def _interval_columns(self, gap: float, options: dict) -> list[dict[str, object]]:
        change = self.interval("change", **options)
        columns = {
            "change_se": change.se.flatten().tolist(),
            "change_low": change.low.flatten().tolist(),
            "change_high": change.high.flatten().tolist(),
        }
        if gap:
            normalized = self.interval("normalized", **options)
            columns["normalized_low"] = normalized.low.flatten().tolist()
            columns["normalized_high"] = normalized.high.flatten().tolist()
        return [
            {"n": change.n, **{name: col[i] for name, col in columns.items()}}
            for i in range(len(self.sites))
        ]

    def top_k(self, k: int = 10, **table_options) -> list[dict[str, object]]:
        """The ``k`` rows of `table` with the largest absolute change."""
        rows = self.table(**table_options)
        return sorted(rows, key=lambda row: -abs(float(row["change"])))[:k]

    def significant(
        self, threshold: float = 0.1, by: str = "threshold", **options
    ) -> list[dict[str, object]]:
        """Rows that matter, largest change first.

        Args:
            threshold: ``by="threshold"``: keep rows whose change is at least this fraction
                of the clean-corrupted gap.
            by: ``"threshold"`` or ``"interval"`` (keep rows whose bootstrap interval of the
                change excludes 0; needs per-prompt values, see `interval`).
            options: ``level``, ``resamples``, ``seed`` for `interval` (``by="interval"``).
        """
        if by not in SELECT_BY:
            raise ValueError(f"unknown by={by!r}; valid: {', '.join(SELECT_BY)}")
        if by == "interval":
            rows = self.top_k(len(self.sites), intervals=True, **options)
            return [row for row in rows if row["change_low"] > 0 or row["change_high"] < 0]
        gap = abs(self.clean_baseline - self.corrupted_baseline)
        if gap == 0:
            raise ValueError("clean and corrupted baselines are equal; no gap to compare against")
        return [row for row in self.top_k(len(self.sites)) if abs(row["change"]) >= threshold * gap]

    def to_dataframe(self):
        """`table` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.table())


def _normalise(patched: Tensor, corrupted: Tensor, clean: Tensor) -> Tensor:
    """``(patched - corrupted) / (clean - corrupted)`` on (resampled) means; baselines broadcast
    over the grid's leading axes."""
    return (patched - corrupted) / (clean - corrupted)


def _site_fields(site: Site) -> dict[str, object]:
    pos = site.pos
    if isinstance(pos, PerPrompt):
        pos = "per-prompt"
    elif isinstance(pos, tuple):
        pos = ",".join(map(str, pos))
    return {
        "component": site.component,
        "layer": site.layer,
        "head": site.head,
        "pos": pos,
        "src_pos": site.src_pos,
    }
