"""Discovery's head budget: which heads it keeps, when it stops, and what it says it left out.

The expected heads are computed here from the oracle's own answers (`find_output_heads` and an
unbudgeted discovery of one round), not from the budgeted code path.
"""

from __future__ import annotations

import pytest

from ioi.circuit import PathPatchingOracle, discover_circuit
from ioi.circuit.discovery import find_output_heads
from ioi.dataset import IOIDataset
from ioi.testing import gpt2_vocab_model
from tests.circuit.test_discovery_batched import ABC, assert_same_discovery

pytestmark = pytest.mark.usefixtures("one_thread")
T = 0.2  # on this model: 7 output heads, 10 heads in all


@pytest.fixture(scope="module")
def oracle():
    model = gpt2_vocab_model(seed=0)
    ioi = IOIDataset(8, "mixed", seed=0, tokenizer=model)
    return PathPatchingOracle(model, ioi, ioi.gen_flipped_prompts(ABC))


def fresh(oracle):
    """The same caches, an empty memo."""
    return oracle.for_rows(oracle.rows)


def strongest(edges, k):
    return {e.sender for e in sorted(edges, key=lambda e: -abs(e.effect))[:k]}


def test_the_model_has_enough_heads_for_the_budget_to_bind(oracle):
    free = discover_circuit(oracle, T)
    assert len(find_output_heads(oracle, T)) == 7 and len(free.heads()) == 10
    assert not free.budget_full and free.left_out == 0 and free.max_heads is None


def test_a_budget_that_does_not_fill_changes_nothing(oracle):
    free = discover_circuit(oracle, T)
    roomy = discover_circuit(oracle, T, max_heads=len(free.heads()) + 1)
    assert_same_discovery(roomy, free, atol=0)
    assert not roomy.budget_full and roomy.left_out == 0 and roomy.max_heads == 11


def test_a_budget_filled_by_the_output_heads_keeps_the_strongest_and_stops(oracle):
    ours = fresh(oracle)
    found = discover_circuit(ours, T, max_heads=5)
    output = find_output_heads(oracle, T)
    assert found.heads() == strongest(output, 5)
    assert found.budget_full and found.left_out == len(output) - 5 == 2
    assert {e.input for e in found.edges} == {"logits"}
    assert all(not receivers for _, receivers, *_ in ours._memo), "asked a q/k/v path after filling"


def test_a_budget_filled_in_the_second_round_keeps_its_strongest_new_head(oracle):
    output = {e.sender for e in find_output_heads(oracle, T)}
    one_round = discover_circuit(oracle, T, max_depth=1)
    new = {}  # new sender -> its strongest |effect| among the round's edges
    for e in one_round.edges:
        if e.input != "logits" and e.sender not in output:
            new[e.sender] = max(new.get(e.sender, 0.0), abs(e.effect))
    assert len(new) >= 2, "the round must offer more new heads than the budget takes"
    found = discover_circuit(fresh(oracle), T, max_heads=len(output) + 1)
    assert found.heads() == output | {max(new, key=new.get)}
    assert found.budget_full and found.left_out == len(new) - 1
    kept = found.heads()
    assert [e for e in one_round.edges if e.sender in kept] == list(found.edges)


def test_a_smaller_threshold_with_the_same_strongest_heads_asks_nothing_new(oracle):
    ours = fresh(oracle)
    first = discover_circuit(ours, 0.2, max_heads=5)
    known = len(ours._memo)
    second = discover_circuit(ours, 0.1, max_heads=5)
    assert len(find_output_heads(oracle, 0.1)) > len(find_output_heads(oracle, 0.2))
    assert second.heads() == first.heads() and len(ours._memo) == known
    assert second.left_out > first.left_out


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"max_heads": 0}, ValueError, "max_heads must be >= 1 or None"),
        ({"max_heads": -3}, ValueError, "max_heads must be >= 1 or None"),
        # (the tests' run-time type checker may answer a wrong type first, naming the argument)
        ({"max_heads": 2.5}, TypeError, "max_heads"),
        ({"max_heads": True}, TypeError, "max_heads must be an int or None, got bool"),
        ({"max_heads": "5"}, TypeError, "max_heads"),
        ({"max_depth": -1}, ValueError, "max_depth must be >= 0 or None"),
        ({"max_depth": 1.0}, TypeError, "max_depth"),
        ({"threshold": "0.1"}, TypeError, "threshold"),
        ({"threshold": 0.0}, ValueError, "threshold must be > 0"),
        ({"threshold": float("nan")}, ValueError, "threshold must be > 0"),
    ],
)
def test_bad_budget_depth_or_threshold_is_refused(oracle, options, error, match):
    kwargs = {"threshold": T, **options}
    with pytest.raises(error, match=match):
        discover_circuit(oracle, **kwargs)


def test_depth_zero_is_the_output_heads_only(oracle):
    found = discover_circuit(oracle, T, max_depth=0)
    assert found.heads() == {e.sender for e in find_output_heads(oracle, T)}
