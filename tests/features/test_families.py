"""The family comparison: overlap indices by hand, the permutation test on planted data."""

from __future__ import annotations

import pytest
import torch

from ioi.features.attribution import feature_attribution
from ioi.features.families import (
    compare_families,
    family_labels,
    jaccard,
    permutation_test,
    weighted_jaccard,
)
from ioi.testing import logit_diff, tiny_model, token_pair
from tests.features.tiny_saes import random_sae64

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def planted(n_per_family=20, nodes_a=range(10), nodes_b=range(10), noise=0.05, seed=0):
    """Shares of two families: each family's nodes get IE 1 on top of noise, the rest 0."""
    gen = torch.Generator().manual_seed(seed)
    shares = noise * torch.randn(2 * n_per_family, 60, generator=gen, dtype=torch.float64)
    shares[:n_per_family, list(nodes_a)] += 1.0
    shares[n_per_family:, list(nodes_b)] += 1.0
    return shares, ["A"] * n_per_family + ["B"] * n_per_family


def test_overlap_indices_by_hand():
    assert jaccard({1, 2, 3}, {2, 3, 4, 5}) == pytest.approx(2 / 5)
    assert jaccard(set(), set()) == 1.0
    a, b = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([3.0, 1.0, -1.0])
    assert weighted_jaccard(a, b) == pytest.approx((1 + 1 + 0) / (3 + 2 + 1))


def test_identical_families_share_their_circuit():
    shares, labels = planted()
    shares[20:] = shares[:20]  # family B's prompts are copies of family A's
    test = permutation_test(shares, labels, top_n=10, n_permutations=200, seed=0)
    assert test.statistic == pytest.approx(0.0)
    assert test.p_value == 1.0 and test.verdict == "shared"
    assert test.jaccard[("A", "B")] == 1.0


def test_noise_alone_is_not_significant():
    shares, labels = planted(nodes_b=range(10), noise=0.3, seed=3)
    test = permutation_test(shares, labels, top_n=10, n_permutations=200, seed=1)
    assert test.p_value > 0.05 and test.verdict == "shared"


def test_planted_differences_are_found():
    shares, labels = planted(nodes_b=range(30, 40))
    test = permutation_test(shares, labels, top_n=10, n_permutations=200, seed=0)
    assert test.p_value == pytest.approx(1 / 201) and test.verdict == "family-specific"
    assert set(test.circuits["A"]) == set(range(10)) and set(test.circuits["B"]) == set(
        range(30, 40)
    )
    assert test.jaccard[("A", "B")] == 0.0
    partial = permutation_test(
        *planted(nodes_b=[0, 1, 2, 3, 4, 5, 6, 7, 40, 41]), top_n=10, n_permutations=200
    )
    assert partial.jaccard[("A", "B")] == pytest.approx(8 / 12)
    assert partial.p_value < 0.05 and partial.verdict == "partly shared"


def test_the_seed_reproduces_the_test():
    shares, labels = planted(nodes_b=[0, 1, 2, 3, 4, 5, 6, 7, 40, 41], noise=0.5)
    one = permutation_test(shares, labels, top_n=10, n_permutations=50, seed=7)
    two = permutation_test(shares, labels, top_n=10, n_permutations=50, seed=7)
    other = permutation_test(shares, labels, top_n=10, n_permutations=50, seed=8)
    assert torch.equal(one.null, two.null) and one.p_value == two.p_value
    assert not torch.equal(one.null, other.null)


def test_more_than_two_families():
    shares, _ = planted(n_per_family=15)
    labels = ["x"] * 10 + ["y"] * 10 + ["z"] * 10
    shares[20:, 50:55] += 2.0  # family z has its own nodes
    test = permutation_test(shares, labels, top_n=10, n_permutations=100)
    assert len(test.jaccard) == 3 and test.p_value < 0.05


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(labels=["A"] * 40), "at least two families"),
        (dict(labels=["A", "B"]), "one per prompt"),
        (dict(top_n=0), "top_n"),
        (dict(n_permutations=0), "n_permutations"),
        (dict(alpha=1.5), "alpha"),
        (dict(shares=planted()[0].index_fill(1, torch.tensor([59]), float("nan"))), "NaN"),
    ],
)
def test_bad_input_is_named(kwargs, words):
    shares, labels = planted()
    kwargs = {"shares": shares, "labels": labels, "top_n": 5} | kwargs
    with pytest.raises(ValueError, match=words):
        permutation_test(kwargs.pop("shares"), kwargs.pop("labels"), **kwargs)


def test_compare_families_on_a_tiny_model():
    model = tiny_model(dtype=torch.float64)
    saes = {"blocks.1.hook_resid_pre": random_sae64(32, 16, seed=4)}
    clean, corrupted = token_pair(seed=5)
    no_shares = feature_attribution(model, saes, clean, corrupted, logit_diff)
    with pytest.raises(ValueError, match="per_prompt=True"):
        compare_families(no_shares, ["A", "A", "B"])
    result = feature_attribution(model, saes, clean, corrupted, logit_diff, per_prompt=True)
    out = compare_families(result, ["A", "A", "B"], top_n=5, n_permutations=20)
    shares = result.per_prompt["blocks.1.hook_resid_pre"]
    mean_b = shares[2].flatten()
    expected = [result.nodes()[i] for i in mean_b.abs().argsort(descending=True)[:5].tolist()]
    assert list(out.circuits["B"]) == expected
    assert out.verdict in ("shared", "partly shared", "family-specific")


def test_family_labels():
    from ioi.dataset import IOIDataset

    ds = IOIDataset(N=6, prompt_type="mixed", seed=0)
    assert family_labels(ds) == ["BABA", "ABBA"] * 3
    assert family_labels(ds, "template") == [f"template {int(t)}" for t in ds.template_idx]
    groups = family_labels(ds, "template group")
    assert groups == [f"group {int(t) % 15}" for t in ds.template_idx]  # 15 BABA templates
    with pytest.raises(ValueError, match="family, template"):
        family_labels(ds, "length")
