"""Word-position nodes: against the absolute-position attribution and a per-prompt loop."""

from __future__ import annotations

import pytest
import torch

from ioi.features.attribution import FeatureNode, feature_attribution
from ioi.features.families import compare_families, permutation_test
from ioi.features.word_positions import OTHER, by_word_position, word_labels
from ioi.testing import BATCH, N_POS, logit_diff, tiny_model, token_pair
from tests.features.tiny_saes import random_sae64

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

HOOK = "blocks.1.hook_resid_pre"
WORDS = ("IO", "S1", "S2", "end", "S1+1", "IO-1")


def same_template(batch: int) -> dict[str, torch.Tensor]:
    """One template's word positions for every prompt (S1+1 and IO-1 share position 2)."""
    where = {"S1": 1, "IO": 3, "S2": 4, "end": N_POS - 1}
    where |= {"S1+1": where["S1"] + 1, "IO-1": where["IO"] - 1}
    return {k: torch.full((batch,), v) for k, v in where.items()}


def two_templates(batch: int) -> dict[str, torch.Tensor]:
    """Prompts alternating between two templates of different word positions."""
    a, b = same_template(batch), {"S1": 0, "IO": 2, "S2": 3, "end": N_POS - 2}
    b |= {"S1+1": 1, "IO-1": 1}
    return {k: torch.where(torch.arange(batch) % 2 == 0, a[k], b[k]) for k in a}


@pytest.fixture(scope="module")
def attribution():
    model = tiny_model(dtype=torch.float64)
    saes = {HOOK: random_sae64(32, 16, seed=4)}
    clean, corrupted = token_pair(seed=5)
    return feature_attribution(model, saes, clean, corrupted, logit_diff, per_prompt=True)


def loop_reference(per_prompt, word_idx, words):
    """Each prompt's shares summed per word by a plain loop over prompts and positions."""
    batch, n_pos, width = per_prompt.shape
    out = torch.zeros(batch, len(words) + 1, width, dtype=per_prompt.dtype)
    for i in range(batch):
        for pos in range(n_pos):
            hits = [k for k, w in enumerate(words) if int(word_idx[w][i]) == pos]
            out[i, hits[0] if hits else len(words)] += per_prompt[i, pos]
    return out


def test_one_template_agrees_with_absolute_positions(attribution):
    word_idx = same_template(BATCH)
    result = by_word_position(attribution, word_idx, WORDS)
    absolute = attribution.scores[HOOK]
    assert result.positions == WORDS + (OTHER,)
    # S1+1 and IO-1 are the same token: the word first in WORDS takes it, IO-1 gets nothing.
    for k, word in enumerate(WORDS):
        pos = int(word_idx[word][0])
        expected = absolute[pos] if word != "IO-1" else torch.zeros_like(absolute[pos])
        torch.testing.assert_close(result.scores[HOOK][k], expected)
    taken = {int(word_idx[w][0]) for w in WORDS}
    rest = [p for p in range(N_POS) if p not in taken]
    torch.testing.assert_close(result.scores[HOOK][-1], absolute[rest].sum(0))
    # Every node's effect is kept: the word totals add up to the absolute totals.
    torch.testing.assert_close(result.scores[HOOK].sum(0), absolute.sum(0))
    node = FeatureNode(HOOK, WORDS.index("S2"), 3)
    assert result.effect(node) == pytest.approx(float(absolute[4, 3]))
    assert result.label(node) == f"{HOOK}[S2].f3"


def test_templates_of_different_lengths_follow_each_prompt(attribution):
    word_idx = two_templates(BATCH)
    result = by_word_position(attribution, word_idx, WORDS)
    expected = loop_reference(attribution.per_prompt[HOOK], word_idx, WORDS)
    torch.testing.assert_close(result.per_prompt[HOOK], expected)
    torch.testing.assert_close(result.scores[HOOK], expected.mean(0))


def test_family_comparison_on_word_positions(attribution):
    word_idx = two_templates(BATCH)
    labels = ["A", "B"] * (BATCH // 2) + ["A"] * (BATCH % 2)
    out = compare_families(
        attribution, labels, top_n=5, n_permutations=30, word_idx=word_idx, words=WORDS
    )
    shares = loop_reference(attribution.per_prompt[HOOK], word_idx, WORDS).flatten(1)
    reference = permutation_test(shares, labels, top_n=5, n_permutations=30)
    assert out.p_value == reference.p_value
    assert out.test.circuits == reference.circuits
    assert out.positions == WORDS + (OTHER,)
    absolute = compare_families(attribution, labels, top_n=5, n_permutations=30)
    assert absolute.positions is None


def test_word_labels_precedence_and_bad_input(attribution):
    word_idx = same_template(2)
    labels = word_labels(word_idx, N_POS, ("IO-1", "S1+1"))
    assert labels[0, 2] == 0  # IO-1 comes first this time
    with pytest.raises(ValueError, match="valid: .*S1"):
        word_labels(word_idx, N_POS, ("IO", "S3"))
    with pytest.raises(ValueError, match="outside the 3 token positions"):
        word_labels(word_idx, 3, ("end",))
    with pytest.raises(ValueError, match="word_idx has 2 prompts"):
        by_word_position(attribution, word_idx, WORDS)
    with pytest.raises(TypeError, match="word_idx"):
        word_labels([1, 2], N_POS)
    no_shares = type(attribution)(attribution.scores, "atp", 1, 0.0, 0.0)
    with pytest.raises(ValueError, match="per_prompt=True"):
        by_word_position(no_shares, same_template(BATCH))
