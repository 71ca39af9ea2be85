"""One circuit or several: do prompt families (BABA vs ABBA, templates) use different features?

Each family's circuit is its ``top_n`` nodes by ``|mean IE|`` over the family's prompts (the
per-prompt shares of `ioi.features.attribution.feature_attribution(..., per_prompt=True)`, so a
family's IE is the mean of its prompts' shares). Two circuits are compared by

* the Jaccard index of their node sets, ``|A & B| / |A | B|``, and
* the weighted Jaccard index of ``|IE|`` over the union of their nodes,
  ``sum min(|a|, |b|) / sum max(|a|, |b|)``.

The test statistic is the mean over pairs of families of ``1 - weighted Jaccard``. A seeded
permutation test asks whether the families differ more than random splits of the same prompts
into groups of the same sizes: ``p = (1 + #{splits at least as different}) / (1 + n_permutations)``.

Verdict (``alpha`` 0.05 unless given):

* ``"shared"``: ``p >= alpha``, the families' circuits differ no more than random splits do;
* ``"partly shared"``: ``p < alpha`` and the mean node Jaccard index is at least 0.5;
* ``"family-specific"``: ``p < alpha`` and the mean node Jaccard index is below 0.5.

Nodes are per token position unless ``word_idx`` is given: then each prompt's shares are summed
per IOI word position first (`ioi.features.word_positions.by_word_position`), so templates of
different lengths line up word by word. Without it, compare only families whose prompts align
position by position (BABA and ABBA prompts of the same template do).

Groupings (`family_labels`): ``"family"`` (BABA or ABBA), ``"template"`` (each of the dataset's
templates) and ``"template group"`` (a BABA template with its ABBA twin).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import torch
from jaxtyping import Float
from torch import Tensor

from ioi.dataset import IOIDataset
from ioi.features.attribution import FeatureAttribution, FeatureNode
from ioi.features.word_positions import WORD_POSITIONS, by_word_position
from ioi.templates import BABA_TEMPLATES

VERDICTS = ("shared", "partly shared", "family-specific")
GROUPINGS = ("family", "template", "template group")
SHARED_NODES = 0.5  # mean node Jaccard index from which a significant difference is "partly shared"


def jaccard(a: set, b: set) -> float:
    """``|a & b| / |a | b|`` (1 for two empty sets)."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def weighted_jaccard(a: Float[Tensor, " node"], b: Float[Tensor, " node"]) -> float:
    """``sum min(|a|, |b|) / sum max(|a|, |b|)`` (1 if both are all zero)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    x, y = a.abs().double(), b.abs().double()
    top = torch.maximum(x, y).sum()
    return float(torch.minimum(x, y).sum() / top) if top > 0 else 1.0


def family_labels(ds: IOIDataset, by: str = "family") -> list[str]:
    """Each prompt's family: ``"BABA"``/``"ABBA"`` (``by="family"``), its template, or its
    template group (the BABA template and its ABBA twin, ``by="template group"``)."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; choose one of {', '.join(GROUPINGS)}")
    if by == "template":
        return [f"template {int(t)}" for t in ds.template_idx]
    if by == "template group":
        return [f"group {int(t) % len(BABA_TEMPLATES)}" for t in ds.template_idx]
    names = {"BAB": "BABA", "ABB": "ABBA"}
    return [names.get(p.pattern, p.pattern) for p in ds.prompts]


@dataclass(frozen=True)
class PermutationTest:
    """The families' circuits compared, against random splits of the same prompts.

    Attributes:
        families: the family labels, sorted.
        circuits: family -> indices of its ``top_n`` nodes, largest ``|IE|`` first.
        jaccard, weighted_jaccard: (family, family) -> index, for each pair.
        statistic: mean over pairs of ``1 - weighted Jaccard``.
        null: [n_permutations] the statistic for random splits.
        p_value: ``(1 + #{null >= statistic}) / (1 + n_permutations)``.
        verdict: one of `VERDICTS` (the rule is in the module docstring).
    """

    families: tuple[Hashable, ...]
    circuits: dict[Hashable, tuple[int, ...]]
    jaccard: dict[tuple[Hashable, Hashable], float]
    weighted_jaccard: dict[tuple[Hashable, Hashable], float]
    statistic: float
    null: Tensor
    p_value: float
    verdict: str
    alpha: float
    seed: int


def _group_means(shares: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """[n_groups, node] mean share of each group's prompts."""
    sums = torch.zeros(n_groups, shares.shape[1], dtype=torch.float64)
    sums.index_add_(0, groups, shares.double())
    counts = torch.bincount(groups, minlength=n_groups).double()
    return sums / counts[:, None]


def _compare(means: Tensor, top_n: int) -> tuple[list[Tensor], list[float], list[float]]:
    """Each group's top nodes, and the node and weighted Jaccard index of each pair."""
    tops = [row.abs().argsort(descending=True, stable=True)[:top_n] for row in means]
    nodes, weighted = [], []
    for i, j in combinations(range(len(means)), 2):
        union = torch.unique(torch.cat([tops[i], tops[j]]))
        nodes.append(jaccard(set(tops[i].tolist()), set(tops[j].tolist())))
        weighted.append(weighted_jaccard(means[i, union], means[j, union]))
    return tops, nodes, weighted


def permutation_test(
    shares: Float[Tensor, "batch node"],
    labels: Sequence[Hashable],
    *,
    top_n: int,
    n_permutations: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> PermutationTest:
    """Do the families' circuits differ more than random splits of the same prompts do?

    Args:
        shares: each prompt's share of each node's IE (rows average to the IE).
        labels: each prompt's family (at least two families, each with a prompt).
        top_n: nodes per family circuit.
        n_permutations: random splits (same group sizes) drawn with a ``torch.Generator(seed)``.
        seed: the generator's seed; the same seed gives the same null and p-value.
        alpha: the significance level of the verdict.
    """
    if not isinstance(shares, Tensor) or shares.ndim != 2:
        raise ValueError("shares must be a [batch, node] tensor (prompts by nodes)")
    if not bool(torch.isfinite(shares).all()):
        raise ValueError(
            "shares hold NaN or infinite values, so no circuit or p-value can be computed; "
            "check the metric and the attribution that gave them"
        )
    labels = list(labels)
    if len(labels) != shares.shape[0]:
        raise ValueError(f"{len(labels)} labels for {shares.shape[0]} prompts; give one per prompt")
    families = tuple(sorted(set(labels), key=str))
    if len(families) < 2:
        raise ValueError(f"need at least two families to compare, got {list(families)}")
    for what, value in (("top_n", top_n), ("n_permutations", n_permutations), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (what != "seed"):
            raise ValueError(
                f"{what} must be a {'non-negative' if what == 'seed' else 'positive'} integer, got {value!r}"
            )
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    top_n = min(top_n, shares.shape[1])
    groups = torch.tensor([families.index(label) for label in labels])
    means = _group_means(shares, groups, len(families))
    tops, nodes, weighted = _compare(means, top_n)
    statistic = sum(1 - w for w in weighted) / len(weighted)
    generator = torch.Generator().manual_seed(seed)
    null = torch.empty(n_permutations, dtype=torch.float64)
    for k in range(n_permutations):
        shuffled = groups[torch.randperm(len(groups), generator=generator)]
        _, _, w = _compare(_group_means(shares, shuffled, len(families)), top_n)
        null[k] = sum(1 - x for x in w) / len(w)
    # A split as different as the families, up to rounding, counts against them.
    at_least = int((null >= statistic - 1e-12).sum())
    p_value = (1 + at_least) / (1 + n_permutations)
    mean_nodes = sum(nodes) / len(nodes)
    if p_value >= alpha:
        verdict = "shared"
    else:
        verdict = "partly shared" if mean_nodes >= SHARED_NODES else "family-specific"
    pairs = list(combinations(families, 2))
    return PermutationTest(
        families,
        {family: tuple(top.tolist()) for family, top in zip(families, tops, strict=True)},
        dict(zip(pairs, nodes, strict=True)),
        dict(zip(pairs, weighted, strict=True)),
        statistic,
        null,
        p_value,
        verdict,
        alpha,
        seed,
    )


@dataclass(frozen=True)
class FamilyComparison:
    """`permutation_test` on a `FeatureAttribution`, with the circuits as nodes.

    Attributes:
        test: the permutation test over node indices.
        circuits: family -> its top nodes, largest ``|IE|`` first.
        positions: the IOI word of each node ``pos`` for word-position nodes, else None.
    """

    test: PermutationTest
    circuits: dict[Hashable, tuple[FeatureNode, ...]]
    positions: tuple[str, ...] | None = None

    @property
    def verdict(self) -> str:
        return self.test.verdict

    @property
    def p_value(self) -> float:
        return self.test.p_value


def compare_families(
    attribution: FeatureAttribution,
    labels: Sequence[Hashable],
    *,
    top_n: int = 30,
    n_permutations: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    word_idx: Mapping[str, Tensor] | None = None,
    words: Sequence[str] = WORD_POSITIONS,
) -> FamilyComparison:
    """Per-family circuits of an attribution made with ``per_prompt=True``, their overlap and
    the permutation test (see the module docstring for the verdict's rule).

    With ``word_idx`` (the dataset's), nodes are per IOI word position (``words``, then
    ``"other"``) rather than per token position, and the circuits' nodes' ``pos`` index
    ``FamilyComparison.positions``."""
    if attribution.per_prompt is None:
        raise ValueError(
            "the attribution has no per-prompt shares; compute it with "
            "feature_attribution(..., per_prompt=True)"
        )
    if word_idx is not None:
        attribution = by_word_position(attribution, word_idx, words)
    shares = torch.cat([t.flatten(1) for t in attribution.per_prompt.values()], dim=1)
    test = permutation_test(
        shares, labels, top_n=top_n, n_permutations=n_permutations, seed=seed, alpha=alpha
    )
    nodes = attribution.nodes()
    circuits = {f: tuple(nodes[i] for i in top) for f, top in test.circuits.items()}
    return FamilyComparison(test, circuits, getattr(attribution, "positions", None))
