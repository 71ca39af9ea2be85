"""Bad input to the circuit criteria and comparisons, as a tired user passes it: counts of 0 or
less, seeds that are not ints, thresholds out of range, NaN importance, prompt rows outside the
batch, datasets that do not align. Each is a clear ValueError or TypeError naming the argument,
never an empty result, a wrapped index, a silent p-value or a raw torch error."""

from __future__ import annotations

import pytest
import torch

from ioi.circuit import (
    Circuit,
    MeanAblation,
    choose_threshold,
    completeness,
    discover_model_circuit,
    head_importance_per_prompt,
    make_rows_ioi_metric,
    minimality,
    permutation_test,
)
from ioi.dataset import IOIDataset
from ioi.testing import assert_user_session_errors, gpt2_vocab_model, hook_count

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = Circuit({"mover": [(2, 0), (2, 1)], "early": [(0, 2)]}, {"mover": "end", "early": "S2"})


@pytest.fixture(scope="module")
def setup():
    model = gpt2_vocab_model()
    ioi = IOIDataset(8, "mixed", seed=1, tokenizer=model)
    abc = ioi.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    return model, ioi, abc, MeanAblation.build(model, ioi, abc)


@pytest.mark.parametrize("value", [0, -1])
def test_counts_below_one_are_refused_not_an_empty_list(setup, value):
    *_, ablation = setup
    with pytest.raises(ValueError, match=f"n_random must be an int >= 1, got {value}"):
        completeness(ablation, SMALL, modes=("random",), n_random=value)
    with pytest.raises(ValueError, match=f"greedy_steps must be an int >= 1, got {value}"):
        completeness(ablation, SMALL, modes=("greedy",), greedy_steps=value)
    with pytest.raises(ValueError, match=f"greedy_steps must be an int >= 1, got {value}"):
        minimality(ablation, SMALL, mode="greedy", greedy_steps=value)
    with pytest.raises(ValueError, match="choose one or more of"):
        completeness(ablation, SMALL, modes=())
    assert hook_count(ablation.model) == 0


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.5])
def test_min_faithfulness_outside_0_1_is_refused_before_any_work(setup, value):
    model, *_ = setup
    with pytest.raises(ValueError, match="min_faithfulness must lie in 0..1"):
        choose_threshold([], min_faithfulness=value)
    with pytest.raises(ValueError, match="min_faithfulness must lie in 0..1"):
        discover_model_circuit(model, n_prompts=4, min_faithfulness=value)


def test_nan_importance_gets_no_p_value():
    importance = torch.randn(8, 3, 4)
    importance[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="importance holds NaN"):
        permutation_test(importance, torch.arange(8) % 2)
    with pytest.raises(ValueError, match="n_permutations must be an int >= 1, got 0"):
        permutation_test(importance.nan_to_num(), torch.arange(8) % 2, n_permutations=0)


@pytest.mark.parametrize(
    "rows, message",
    [
        (torch.tensor([99]), r"rows \(prompt indices\) must lie in 0\.\.7"),
        (torch.tensor([-1]), r"rows \(prompt indices\) must lie in 0\.\.7"),
        (torch.tensor([], dtype=torch.long), "rows is empty"),
    ],
)
def test_rows_outside_the_batch_are_refused_when_the_metric_is_made(setup, rows, message):
    _, ioi, _, _ = setup
    with pytest.raises(ValueError, match=message):
        make_rows_ioi_metric(2.0, -1.0, ioi.answer_tokens, ioi.word_idx["end"], rows)


def test_head_importance_needs_aligned_datasets(setup):
    model, ioi, _, _ = setup
    other = IOIDataset(4, seed=2, tokenizer=model)
    with pytest.raises(ValueError, match="ioi.toks .* and abc.toks .* must have the same shape"):
        head_importance_per_prompt(model, ioi, other)
    assert hook_count(model) == 0


USER_SETUP = """
import torch
from ioi.circuit import Circuit, MeanAblation, completeness, faithfulness, permutation_test
from ioi.dataset import IOIDataset
from ioi.testing import gpt2_vocab_model
model = gpt2_vocab_model()
ioi = IOIDataset(8, "mixed", seed=1, tokenizer=model)
ablation = MeanAblation.build(model, ioi, ioi.gen_flipped_prompts("ABB->XYZ, BAB->XYZ"))
small = Circuit({"mover": [(2, 0)]}, {"mover": "end"})
imp, labels = torch.randn(8, 3, 4), torch.arange(8) % 2
"""
CASES = {  # outside the tests' runtime type checks, our own checks answer
    "seed str": (
        "permutation_test(imp, labels, seed='1')",
        "TypeError",
        "seed must be an int; got '1'",
    ),
    "seed float": (
        "completeness(ablation, small, modes=('random',), seed=1.5)",
        "TypeError",
        "seed must be an int; got 1.5",
    ),
    "labels list": (
        "permutation_test(imp, [0, 1] * 4)",
        "TypeError",
        "labels must be an integer torch tensor",
    ),
    "importance list": (
        "permutation_test(imp.tolist(), labels)",
        "TypeError",
        "importance must be a \\[batch, layer, head\\]",
    ),
    "modes str": (
        "completeness(ablation, small, modes='random')",
        "TypeError",
        "modes is a sequence of mode names, e.g. \\('random',\\)",
    ),
    "not a circuit": (
        "faithfulness(ablation, [(2, 0)])",
        "TypeError",
        "circuit must be a Circuit",
    ),
}


def test_wrong_types_are_named_in_a_user_session():
    assert_user_session_errors(USER_SETUP, CASES)
