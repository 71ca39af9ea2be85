"""Faithfulness against the discovery threshold, and the bundled model's own circuit.

A lower threshold admits more heads; the sweep reports, per threshold, the circuit's size and
``F(C) / F(M)`` under per-template mean ablation, so the trade-off is visible and a threshold
can be chosen by a stated rule rather than by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformer_lens import HookedTransformer

from ioi.circuit.ablation import MeanAblation
from ioi.circuit.discovery import DiscoveredCircuit, discover_circuit
from ioi.circuit.oracle import PathPatchingOracle
from ioi.dataset import IOIDataset

DEFAULT_THRESHOLDS = (0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005)
ABC_FLIP = "ABB->XYZ, BAB->XYZ"


@dataclass(frozen=True)
class SweepPoint:
    """One threshold: circuit size, ``F(M)``, ``F(C)`` and the discovered circuit."""

    threshold: float
    n_heads: int
    f_model: float
    f_circuit: float
    discovered: DiscoveredCircuit

    @property
    def faithfulness(self) -> float:
        """``F(C) / F(M)``."""
        return self.f_circuit / self.f_model


def threshold_sweep(
    oracle: PathPatchingOracle,
    ablation: MeanAblation,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    max_heads: int | None = None,
) -> list[SweepPoint]:
    """Discover the circuit at each threshold and measure its faithfulness.

    A threshold at which no head passes gives an empty circuit: every head ablated.
    ``max_heads`` is discovery's head budget (`discover_circuit`; None: none).
    """
    if not thresholds:
        raise ValueError("thresholds is empty; e.g. (0.1, 0.05, 0.02)")
    f_model = float(ablation.logit_diff(None))
    points = []
    for t in sorted(thresholds, reverse=True):
        found = discover_circuit(oracle, t, max_heads=max_heads)
        keep = {} if found.circuit is None else found.circuit.kept_positions()
        points.append(
            SweepPoint(t, len(found.heads()), f_model, float(ablation.logit_diff(keep)), found)
        )
    return points


def _check_min_faithfulness(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"min_faithfulness must be a number in 0..1, e.g. 0.8; got {value!r}")
    if not 0 <= value <= 1:  # NaN fails too
        raise ValueError(
            f"min_faithfulness must lie in 0..1 (the share of F(M) the circuit keeps), got {value}"
        )


def choose_threshold(points: Sequence[SweepPoint], min_faithfulness: float = 0.8) -> SweepPoint:
    """The largest threshold (smallest circuit) whose faithfulness reaches ``min_faithfulness``;
    if none does, the most faithful point."""
    _check_min_faithfulness(min_faithfulness)
    if not points:
        raise ValueError("no sweep points; run threshold_sweep first")
    good = [
        p for p in points if p.discovered.circuit is not None and p.faithfulness >= min_faithfulness
    ]
    if good:
        return max(good, key=lambda p: p.threshold)
    return max(points, key=lambda p: p.faithfulness)


def discover_model_circuit(
    model: HookedTransformer,
    n_prompts: int = 100,
    seed: int = 0,
    min_faithfulness: float = 0.8,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> tuple[SweepPoint, list[SweepPoint]]:
    """A model's own IOI circuit, found by the code: sweep thresholds, pick by `choose_threshold`.

    Uses a mixed IOI dataset (``seed``) and its ABC version for both path patching and the
    mean ablation. For the bundled toy model this is *the* circuit the course refers to.

    Returns:
        The chosen point and the whole sweep.
    """
    _check_min_faithfulness(min_faithfulness)
    ioi = IOIDataset(n_prompts, "mixed", seed=seed, tokenizer=model)
    abc = ioi.gen_flipped_prompts(ABC_FLIP)
    oracle = PathPatchingOracle(model, ioi, abc)
    points = threshold_sweep(oracle, MeanAblation.build(model, ioi, abc), thresholds)
    return choose_threshold(points, min_faithfulness), points
