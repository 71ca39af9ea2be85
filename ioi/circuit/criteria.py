"""The paper's three criteria for a circuit explanation (Wang et al. 2022, section 4).

``F(X)`` is the mean logit difference of the model with every head outside ``X`` mean-ablated
(circuit heads kept at their class positions). ``M`` is the whole model, ``C`` the circuit.

* Faithfulness: ``F(C)`` should be close to ``F(M)``; reported as ``F(C) / F(M)`` (the paper:
  ``|F(M) - F(C)| = 0.46`` with ``F(M) = 3.56``, i.e. 87% of the logit difference kept).
* Completeness: for every ``K ⊆ C``, the incompleteness score ``|F(C \\ K) - F(M \\ K)|``
  should be small: the circuit should not miss heads that matter once part of it is gone.
  ``K`` is sampled at random (each head with probability 1/2), taken as a whole class, or
  grown greedily to maximise the score.
* Minimality: for every ``v ∈ C`` there is a ``K ⊆ C \\ {v}`` with a large
  ``|F(C \\ (K ∪ {v})) - F(C \\ K)|``, reported relative to ``F(C)``. We take ``K`` as the
  rest of ``v``'s class (the paper picks ``K`` by hand, often inside the class) or grow it
  greedily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ioi.circuit.ablation import MeanAblation
from ioi.circuit.spec import Circuit
from ioi.head import Head

COMPLETENESS_MODES = ("random", "class", "greedy")
MINIMALITY_MODES = ("class", "greedy")


@dataclass(frozen=True)
class Faithfulness:
    """``F(M)``, ``F(C)`` and their ratio."""

    f_model: float
    f_circuit: float

    @property
    def ratio(self) -> float:
        """``F(C) / F(M)``: the fraction of the model's logit difference the circuit keeps."""
        return self.f_circuit / self.f_model

    @property
    def gap(self) -> float:
        """``|F(M) - F(C)|``, the paper's headline number."""
        return abs(self.f_model - self.f_circuit)


def faithfulness(ablation: MeanAblation, circuit: Circuit) -> Faithfulness:
    """``F(M)`` and ``F(C)`` under per-template mean ablation."""
    circuit.check(ablation.model)
    return Faithfulness(
        f_model=float(ablation.logit_diff(None)),
        f_circuit=float(ablation.logit_diff(circuit.kept_positions())),
    )


@dataclass(frozen=True)
class KnockoutScore:
    """One ``K``: the two logit differences and the score (absolute and relative to ``F(M)``)."""

    label: str
    removed: tuple[tuple[int, int], ...]  # `Head` values when built by this module
    f_with: float  # F(C \ K) (completeness) or F(C \ (K ∪ {v})) (minimality)
    f_without: float  # F(M \ K) (completeness) or F(C \ K) (minimality)
    score: float
    relative: float


def _incompleteness(
    ablation: MeanAblation, circuit: Circuit, k: Sequence[tuple[int, int]], label: str, f_m: float
):
    f_c_k = float(ablation.logit_diff(circuit.without(k)))
    f_m_k = float(ablation.logit_diff(ablation.all_heads_except(k)))
    gap = abs(f_c_k - f_m_k)
    return KnockoutScore(label, tuple(sorted(k)), f_c_k, f_m_k, gap, gap / abs(f_m))


def _greedy(heads: Sequence[Head], score_of, steps: int) -> list[tuple[Head, ...]]:
    """Grow K one head at a time, each time adding the head that maximises ``score_of(K)``."""
    chosen: list[Head] = []
    path = []
    for _ in range(min(steps, len(heads))):
        left = [h for h in heads if h not in chosen]
        best = max(left, key=lambda h: score_of(chosen + [h]))
        chosen.append(best)
        path.append(tuple(chosen))
    return path


def completeness(
    ablation: MeanAblation,
    circuit: Circuit,
    modes: Sequence[str] = COMPLETENESS_MODES,
    n_random: int = 10,
    greedy_steps: int = 4,
    seed: int = 0,
) -> list[KnockoutScore]:
    """Incompleteness ``|F(C \\ K) - F(M \\ K)|`` for sampled ``K`` (see module docstring).

    Args:
        modes: any of ``"random"`` (``n_random`` subsets, each head in with probability 1/2),
            ``"class"`` (each class as a whole), ``"greedy"`` (``greedy_steps`` additions).
        seed: seeds the random subsets (a local generator).

    Returns:
        One `KnockoutScore` per ``K``, labelled ``random i``, ``class NAME`` or ``greedy |K|``.
    """
    unknown = [m for m in modes if m not in COMPLETENESS_MODES]
    if unknown:
        raise ValueError(f"unknown completeness modes {unknown}; choose from {COMPLETENESS_MODES}")
    heads = circuit.all_heads()
    f_m = float(ablation.logit_diff(None))
    out = []
    if "random" in modes:
        gen = torch.Generator().manual_seed(seed)
        for i in range(n_random):
            pick = torch.rand(len(heads), generator=gen) < 0.5
            k = [h for h, p in zip(heads, pick.tolist(), strict=True) if p]
            out.append(_incompleteness(ablation, circuit, k, f"random {i}", f_m))
    if "class" in modes:
        for cls, members in circuit.heads.items():
            out.append(_incompleteness(ablation, circuit, list(members), f"class {cls}", f_m))
    if "greedy" in modes:

        def score(k):
            return _incompleteness(ablation, circuit, k, "", f_m).score

        for k in _greedy(heads, score, greedy_steps):
            out.append(_incompleteness(ablation, circuit, list(k), f"greedy {len(k)}", f_m))
    return out


def _minimality_score(ablation, circuit, v: Head, k: Sequence[Head], f_c: float) -> KnockoutScore:
    with_v_removed = float(ablation.logit_diff(circuit.without([*k, v])))
    without = float(ablation.logit_diff(circuit.without(k)))
    gap = abs(with_v_removed - without)
    return KnockoutScore(str(v), tuple(sorted(k)), with_v_removed, without, gap, gap / abs(f_c))


def minimality(
    ablation: MeanAblation, circuit: Circuit, mode: str = "class", greedy_steps: int = 3
) -> list[KnockoutScore]:
    """Per head ``v``: ``|F(C \\ (K ∪ {v})) - F(C \\ K)| / F(C)`` for a chosen ``K ⊆ C \\ {v}``.

    Args:
        mode: ``"class"``: ``K`` is the rest of ``v``'s class (the first class if several);
            ``"greedy"``: ``K`` grown greedily (up to ``greedy_steps`` heads of ``C \\ {v}``)
            to maximise the score, keeping the best ``K`` seen (including the empty set).
    """
    if mode not in MINIMALITY_MODES:
        raise ValueError(f"unknown minimality mode {mode!r}; choose from {MINIMALITY_MODES}")
    f_c = float(ablation.logit_diff(circuit.kept_positions()))
    out = []
    for v in circuit.all_heads():
        if mode == "class":
            cls = circuit.classes_of(v)[0]
            k = [h for h in circuit.heads[cls] if h != v]
            out.append(_minimality_score(ablation, circuit, v, k, f_c))
            continue
        others = [h for h in circuit.all_heads() if h != v]

        def score(k, v=v):
            return _minimality_score(ablation, circuit, v, k, f_c).score

        candidates = [(), *_greedy(others, score, greedy_steps)]
        best = max(candidates, key=score)
        out.append(_minimality_score(ablation, circuit, v, list(best), f_c))
    return out
