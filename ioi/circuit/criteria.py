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

Each result also keeps the per-prompt logit differences it was computed from, so every number
has an interval over prompts: `Faithfulness.interval` and `KnockoutScore.interval`, by the
seeded percentile bootstrap of `ioi.statistics` (the same prompts resampled for both terms of a
difference or a ratio, as they were measured on the same prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor

from ioi.circuit.ablation import MeanAblation
from ioi.circuit.spec import Circuit
from ioi.head import Head
from ioi.inputs import check_count
from ioi.statistics import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    Estimate,
    bootstrap,
    check_seed,
)

COMPLETENESS_MODES = ("random", "class", "greedy")
MINIMALITY_MODES = ("class", "greedy")
FAITHFULNESS_VALUES = ("ratio", "gap", "f_model", "f_circuit")


def _per_prompt_field():
    """A per-prompt tensor kept beside the numbers; left out of ``==`` and ``repr``."""
    return field(default=None, compare=False, repr=False)


def _no_per_prompt(what: str) -> ValueError:
    return ValueError(
        f"this {what} has no per-prompt values, so it has no interval; build it with "
        "`faithfulness`, `completeness` or `minimality` (they keep them)"
    )


@dataclass(frozen=True)
class Faithfulness:
    """``F(M)``, ``F(C)`` and their ratio.

    ``f_model_per_prompt`` and ``f_circuit_per_prompt`` ([batch], when known) are the
    per-prompt logit differences whose means are ``f_model`` and ``f_circuit``.
    """

    f_model: float
    f_circuit: float
    f_model_per_prompt: Float[Tensor, " batch"] | None = _per_prompt_field()
    f_circuit_per_prompt: Float[Tensor, " batch"] | None = _per_prompt_field()

    def interval(
        self,
        value: str = "ratio",
        *,
        level: float | int = DEFAULT_LEVEL,
        resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
    ) -> Estimate:
        """Bootstrap interval over prompts of ``"ratio"`` (``F(C) / F(M)``), ``"gap"``
        (``|F(M) - F(C)|``), ``"f_model"`` or ``"f_circuit"``; see `ioi.statistics.bootstrap`.

        Raises:
            ValueError: an unknown value, no per-prompt values, or bad bootstrap options.
        """
        if value not in FAITHFULNESS_VALUES:
            raise ValueError(f"unknown value {value!r}; valid: {', '.join(FAITHFULNESS_VALUES)}")
        if self.f_model_per_prompt is None or self.f_circuit_per_prompt is None:
            raise _no_per_prompt("Faithfulness")
        options = dict(level=level, resamples=resamples, seed=seed)
        model, circuit = self.f_model_per_prompt, self.f_circuit_per_prompt
        if value in ("f_model", "f_circuit"):
            return bootstrap(model if value == "f_model" else circuit, **options)
        if value == "gap":
            return bootstrap(model - circuit, lambda d: d.abs(), **options)
        return bootstrap([circuit, model], lambda c, m: c / m, **options)

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
    _check_circuit(circuit)
    circuit.check(ablation.model)
    model = ablation.logit_diff(None, per_prompt=True)
    kept = ablation.logit_diff(circuit.kept_positions(), per_prompt=True)
    return Faithfulness(float(model.mean()), float(kept.mean()), model, kept)


@dataclass(frozen=True)
class KnockoutScore:
    """One ``K``: the two logit differences and the score (absolute and relative to ``F(M)``).

    The per-prompt fields ([batch], when known) hold the logit differences whose means are
    ``f_with``, ``f_without`` and the reference the score is relative to (``F(M)`` for
    completeness, ``F(C)`` for minimality).
    """

    label: str
    removed: tuple[tuple[int, int], ...]  # `Head` values when built by this module
    f_with: float  # F(C \ K) (completeness) or F(C \ (K ∪ {v})) (minimality)
    f_without: float  # F(M \ K) (completeness) or F(C \ K) (minimality)
    score: float
    relative: float
    f_with_per_prompt: Float[Tensor, " batch"] | None = _per_prompt_field()
    f_without_per_prompt: Float[Tensor, " batch"] | None = _per_prompt_field()
    reference_per_prompt: Float[Tensor, " batch"] | None = _per_prompt_field()

    def interval(
        self,
        relative: bool = False,
        *,
        level: float | int = DEFAULT_LEVEL,
        resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
    ) -> Estimate:
        """Bootstrap interval over prompts of ``score`` (``|mean(with) - mean(without)|``), or
        of ``relative`` (divided by ``|mean(reference)|``); see `ioi.statistics.bootstrap`.

        An absolute value is never below 0, so read the interval's width, not whether it
        contains 0: a score near 0 has a low bound near 0.
        """
        series = (self.f_with_per_prompt, self.f_without_per_prompt, self.reference_per_prompt)
        if any(s is None for s in series):
            raise _no_per_prompt("KnockoutScore")
        options = dict(level=level, resamples=resamples, seed=seed)
        with_, without, reference = series
        if not relative:
            return bootstrap(with_ - without, lambda d: d.abs(), **options)
        return bootstrap([with_ - without, reference], lambda d, r: d.abs() / r.abs(), **options)


def _check_circuit(circuit: object) -> None:
    if not isinstance(circuit, Circuit):
        raise TypeError(
            f"circuit must be a Circuit (e.g. gpt2_small_circuit() or Circuit(heads, positions)), "
            f"got {type(circuit).__name__}"
        )


def _knockout(
    label: str, k: Sequence[Head], with_: Tensor, without: Tensor, reference: Tensor
) -> KnockoutScore:
    """A `KnockoutScore` from the three per-prompt logit differences."""
    f_with, f_without = float(with_.mean()), float(without.mean())
    gap = abs(f_with - f_without)
    relative = gap / abs(float(reference.mean()))
    return KnockoutScore(
        label, tuple(sorted(k)), f_with, f_without, gap, relative, with_, without, reference
    )


def _incompleteness(
    ablation: MeanAblation, circuit: Circuit, k: Sequence[tuple[int, int]], label: str, f_m: Tensor
):
    f_c_k = ablation.logit_diff(circuit.without(k), per_prompt=True)
    f_m_k = ablation.logit_diff(ablation.all_heads_except(k), per_prompt=True)
    return _knockout(label, k, f_c_k, f_m_k, f_m)


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
    if isinstance(modes, str):
        raise TypeError(f"modes is a sequence of mode names, e.g. ({modes!r},), got {modes!r}")
    unknown = [m for m in modes if m not in COMPLETENESS_MODES]
    if unknown or not modes:
        raise ValueError(
            f"unknown completeness modes {unknown or list(modes)}; choose one or more of "
            f"{COMPLETENESS_MODES}"
        )
    _check_circuit(circuit)
    if "random" in modes:
        check_count(n_random, "n_random")
        check_seed(seed)
    if "greedy" in modes:
        check_count(greedy_steps, "greedy_steps")
    heads = circuit.all_heads()
    f_m = ablation.logit_diff(None, per_prompt=True)
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


def _minimality_score(ablation, circuit, v: Head, k: Sequence[Head], f_c: Tensor) -> KnockoutScore:
    with_v_removed = ablation.logit_diff(circuit.without([*k, v]), per_prompt=True)
    without = ablation.logit_diff(circuit.without(k), per_prompt=True)
    return _knockout(str(v), k, with_v_removed, without, f_c)


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
    _check_circuit(circuit)
    if mode == "greedy":
        check_count(greedy_steps, "greedy_steps")
    f_c = ablation.logit_diff(circuit.kept_positions(), per_prompt=True)
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
