"""Is the IOI circuit one mechanism or several? Compare circuits across template families.

Two views: the circuits discovered on each group of prompts (BABA vs ABBA, or each template)
and their overlap (Jaccard index of the head sets); and a permutation test on per-prompt head
importance: if the grouping did not matter, shuffling the group labels across prompts would
give between-group differences as large as the real ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.circuit.ablation import answer_logit_diff, logit_diff_with_hooks
from ioi.circuit.discovery import DiscoveredCircuit, discover_circuit
from ioi.circuit.oracle import PathPatchingOracle
from ioi.dataset import IOIDataset
from ioi.inputs import check_count, check_int_tensor, check_token_pair
from ioi.statistics import check_seed
from ioi.templates import BABA_TEMPLATES

GROUPINGS = ("family", "template")


def jaccard(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> float:
    """``|A ∩ B| / |A ∪ B|`` (1.0 for two empty sets)."""
    a, b = set(a), set(b)
    return 1.0 if not a | b else len(a & b) / len(a | b)


@torch.no_grad()
def head_importance_per_prompt(
    model: HookedTransformer, ioi: IOIDataset, abc: IOIDataset
) -> Float[Tensor, "batch layer head"]:
    """Each head's total effect per prompt: the drop in logit difference when its output
    (every position) takes the ABC value, as a fraction of the mean IOI - ABC gap.

    Raises:
        ValueError: ``abc`` does not align with ``ioi`` prompt by prompt (another size or
            sequence length), e.g. it is not ``ioi.gen_flipped_prompts(...)``.
    """
    check_token_pair(model, ioi.toks, abc.toks, ("ioi.toks", "abc.toks"))
    names = [get_act_name("z", layer) for layer in range(model.cfg.n_layers)]
    _, abc_cache = model.run_with_cache(
        abc.toks.to(model.cfg.device), names_filter=names, return_type=None
    )
    clean = logit_diff_with_hooks(model, ioi)
    end, answers = ioi.word_idx["end"], ioi.answer_tokens
    gap = float(clean.mean() - answer_logit_diff(model, abc.toks, answers, end).mean())
    out = torch.zeros(ioi.N, model.cfg.n_layers, model.cfg.n_heads)
    for layer, name in enumerate(names):
        for head in range(model.cfg.n_heads):

            def patch(
                z: Tensor, hook, head=head, name=name
            ) -> Tensor:  # z: [batch, pos, head, d_head]
                z[:, :, head] = abc_cache[name][:, :, head]
                return z

            patched = logit_diff_with_hooks(model, ioi, [(name, patch)])
            out[:, layer, head] = (clean - patched) / gap
    return out


@dataclass(frozen=True)
class PermutationTest:
    """Between-group differences of mean head importance, against label shuffles."""

    statistic: float
    p_value: float
    n_permutations: int
    group_means: Float[Tensor, "group layer head"]
    null: Float[Tensor, " perm"]


def _between_group_ss(values: Tensor, labels: Tensor, n_groups: int) -> Tensor:
    """Σ_g n_g · ||mean_g − mean||², over the flattened head dimensions."""
    flat = values.reshape(values.shape[0], -1)  # [batch, layer * head]
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()  # [batch, group]
    counts = onehot.sum(0)  # [group]
    means = (onehot.T @ flat) / counts[:, None]  # [group, layer * head]
    return (counts[:, None] * (means - flat.mean(0)) ** 2).sum()


def permutation_test(
    importance: Float[Tensor, "batch layer head"],
    labels: Int[Tensor, " batch"],
    n_permutations: int = 1000,
    seed: int = 0,
) -> PermutationTest:
    """Do groups of prompts use heads differently? Shuffle the labels, recompute the statistic.

    The statistic is the between-group sum of squares of mean head importance; the p-value is
    ``(1 + #{null >= observed}) / (1 + n_permutations)`` with a seeded local generator.

    Raises:
        ValueError: fewer than two groups, a label array of the wrong length, importance that
            is not finite, or ``n_permutations < 1``.
        TypeError: importance or labels that are not tensors, a seed that is not an int.
    """
    if not isinstance(importance, Tensor) or importance.ndim != 3:
        raise TypeError(
            "importance must be a [batch, layer, head] float tensor "
            f"(head_importance_per_prompt), got {type(importance).__name__}"
            + (f" of shape {tuple(importance.shape)}" if isinstance(importance, Tensor) else "")
        )
    if not bool(torch.isfinite(importance).all()):
        raise ValueError(
            "importance holds NaN or infinite values, so no statistic or p-value can be "
            "computed; check the metric that gave it (a zero IOI - ABC gap?)"
        )
    labels = check_int_tensor(labels, "labels", ndim=1).cpu().long()
    check_count(n_permutations, "n_permutations")
    check_seed(seed)
    if labels.shape != (importance.shape[0],):
        raise ValueError(
            f"labels must have shape [{importance.shape[0]}], got {tuple(labels.shape)}"
        )
    _, labels = labels.unique(return_inverse=True)  # groups numbered 0..G-1
    n_groups = int(labels.max()) + 1
    if n_groups < 2 or n_permutations < 1:
        raise ValueError(
            f"need >= 2 groups and >= 1 permutation, got {n_groups} and {n_permutations}"
        )
    observed = _between_group_ss(importance, labels, n_groups)
    gen = torch.Generator().manual_seed(seed)
    null = torch.stack(
        [
            _between_group_ss(
                importance, labels[torch.randperm(len(labels), generator=gen)], n_groups
            )
            for _ in range(n_permutations)
        ]
    )
    onehot = torch.nn.functional.one_hot(labels, n_groups).float()
    means = torch.einsum("bg,blh->glh", onehot, importance) / onehot.sum(0)[:, None, None]
    p = (1 + int((null >= observed).sum())) / (1 + n_permutations)
    return PermutationTest(float(observed), p, n_permutations, means, null)


@dataclass(frozen=True)
class GroupComparison:
    """Circuits per group, their pairwise Jaccard overlap, and the permutation test."""

    groups: tuple[str, ...]
    circuits: tuple[DiscoveredCircuit, ...]
    jaccard: Float[Tensor, "group group"]
    test: PermutationTest


def group_labels(ioi: IOIDataset, by: str) -> tuple[Int[Tensor, " batch"], tuple[str, ...]]:
    """Per-prompt group index and group names: ``"family"`` (BABA/ABBA) or ``"template"``."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r}; choose one of {GROUPINGS}")
    if by == "family":
        labels = (ioi.template_idx >= len(BABA_TEMPLATES)).long()
        names = ("BABA", "ABBA")
    else:
        labels = ioi.template_idx.clone()
        names = tuple(f"template {t}" for t in range(len(ioi.templates)))
    present = labels.unique()
    remap = {int(g): i for i, g in enumerate(present.tolist())}
    return torch.tensor([remap[int(g)] for g in labels]), tuple(names[int(g)] for g in present)


def compare_groups(
    oracle: PathPatchingOracle,
    threshold: float,
    by: str = "family",
    n_permutations: int = 1000,
    seed: int = 0,
    min_group_size: int = 2,
) -> GroupComparison:
    """Discover a circuit per group (same caches, a metric over the group's prompts only),
    compare them pairwise (Jaccard) and test whether head importance differs by group.

    Groups smaller than ``min_group_size`` prompts are left out of both.
    """
    check_count(n_permutations, "n_permutations")
    check_seed(seed)
    ioi = oracle.ioi
    labels, names = group_labels(ioi, by)
    sizes = torch.bincount(labels)
    kept = [g for g in range(len(names)) if int(sizes[g]) >= min_group_size]
    if len(kept) < 2:
        raise ValueError(f"need >= 2 groups of >= {min_group_size} prompts; sizes {sizes.tolist()}")
    rows = [torch.nonzero(labels == g).flatten() for g in kept]
    found = tuple(discover_circuit(oracle.for_rows(r), threshold) for r in rows)
    matrix = torch.tensor([[jaccard(a.heads(), b.heads()) for b in found] for a in found])
    mask = torch.isin(labels, torch.tensor(kept))
    importance = head_importance_per_prompt(oracle.model, ioi, oracle.abc)[mask]
    test = permutation_test(importance, labels[mask], n_permutations, seed)
    return GroupComparison(tuple(names[g] for g in kept), found, matrix, test)
