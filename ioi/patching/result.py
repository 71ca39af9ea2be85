"""`PatchResult`: a patching sweep's values with named axes, baselines and tables.

It does not know how it is drawn: `ioi.patching.heatmap(result)` (in `ioi.patching.plot`) does.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

from jaxtyping import Float
from torch import Tensor

from ioi.patching.sites import PerPrompt, Site
from ioi.patching.sweep import Sweep

Mode = Literal["denoise", "noise"]
Value = Literal["effect", "change", "normalized"]


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
    """

    effect: Float[Tensor, "..."]
    sweep: Sweep
    clean_baseline: float
    corrupted_baseline: float
    mode: Mode = "denoise"
    source: str = "run"
    method: str = "exact"

    def __post_init__(self) -> None:
        assert tuple(self.effect.shape) == self.sweep.shape, "effect does not match its sweep"

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
        if value not in ("effect", "change", "normalized"):
            raise ValueError(f"unknown value {value!r}; valid: effect, change, normalized")
        return getattr(self, value)

    def table(self) -> list[dict[str, object]]:
        """One row per site: its fields, its axis labels, effect, change and normalised effect."""
        effect = self.effect.flatten().tolist()
        change = self.change.flatten().tolist()
        gap = self.clean_baseline - self.corrupted_baseline
        rows = []
        labels_per_site = itertools.product(*self.sweep.labels)  # row-major, like the sites
        for i, (site, labels) in enumerate(zip(self.sites, labels_per_site, strict=True)):
            row: dict[str, object] = {"site": site.describe(), **_site_fields(site)}
            for axis, label in zip(self.axes, labels, strict=True):
                row[f"{axis}_label"] = label
            row["effect"] = effect[i]
            row["change"] = change[i]
            row["normalized"] = (effect[i] - self.corrupted_baseline) / gap if gap else None
            rows.append(row)
        return rows

    def top_k(self, k: int = 10) -> list[dict[str, object]]:
        """The ``k`` rows of `table` with the largest absolute change."""
        rows = self.table()
        return sorted(rows, key=lambda row: -abs(float(row["change"])))[:k]

    def significant(self, threshold: float = 0.1) -> list[dict[str, object]]:
        """Rows whose change is at least ``threshold`` of the clean-corrupted gap, largest first."""
        gap = abs(self.clean_baseline - self.corrupted_baseline)
        if gap == 0:
            raise ValueError("clean and corrupted baselines are equal; no gap to compare against")
        return [row for row in self.top_k(len(self.sites)) if abs(row["change"]) >= threshold * gap]

    def to_dataframe(self):
        """`table` as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.table())


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
