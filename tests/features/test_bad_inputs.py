"""Bad input to the feature-circuit functions, as a tired user passes it: a NaN threshold, a NaN
metric, a node outside the prompts, a seed that is not an int. Each is a clear ValueError or
TypeError, never an empty circuit, a NaN result or a raw IndexError, and no hook outlives it."""

from __future__ import annotations

import pytest
import torch

from ioi.features import (
    FeatureNode,
    exact_node_effects,
    faithfulness,
    feature_attribution,
    feature_circuit,
    select_nodes,
)
from ioi.testing import assert_user_session_errors, hooks_left, logit_diff, tiny_model, token_pair
from tests.features.tiny_saes import random_sae64, sae_hooks_left

pytestmark = pytest.mark.usefixtures("one_thread")

HOOK = "blocks.1.hook_resid_pre"


@pytest.fixture(scope="module")
def setup():
    model = tiny_model(dtype=torch.float64)
    clean, corrupted = token_pair(seed=1)
    return model, {HOOK: random_sae64(32, 24)}, clean, corrupted


def _nan(logits):
    return logit_diff(logits) * float("nan")


def test_a_nan_threshold_is_refused_not_an_empty_circuit(setup):
    model, saes, clean, corrupted = setup
    attribution = feature_attribution(model, saes, clean, corrupted, logit_diff)
    with pytest.raises(ValueError, match="threshold must be a non-negative number, got nan"):
        select_nodes(attribution, threshold=float("nan"))
    with pytest.raises(ValueError, match="top_n must be a positive integer .*, got 0"):
        select_nodes(attribution, top_n=0)
    with pytest.raises(ValueError, match="threshold must be a non-negative number, got nan"):
        feature_circuit(model, saes, clean, corrupted, logit_diff, threshold=float("nan"))
    assert hooks_left(model) == [] and sae_hooks_left(saes) == []


def test_a_nan_metric_is_refused_not_returned_as_nan(setup):
    model, saes, clean, corrupted = setup
    node = [FeatureNode(HOOK, 2, 3)]
    with pytest.raises(ValueError, match="the metric is nan on the clean run with the SAE"):
        exact_node_effects(model, saes, clean, corrupted, _nan, node)
    with pytest.raises(ValueError, match="the metric is nan on the model's run"):
        faithfulness(model, saes, clean, _nan, node)
    assert hooks_left(model) == [] and sae_hooks_left(saes) == []


def test_faithfulness_names_a_node_outside_the_prompts(setup):
    model, saes, clean, _ = setup
    with pytest.raises(ValueError, match=r"position outside 0\.\.5"):
        faithfulness(model, saes, clean, logit_diff, [FeatureNode(HOOK, 99, 2)])
    assert hooks_left(model) == [] and sae_hooks_left(saes) == []


USER_SETUP = """
import torch
from ioi.features import FeatureNode, SAESpec, exact_node_effects, train_sae
from ioi.features.testing import random_sae
from ioi.testing import logit_diff, tiny_model, token_pair
model = tiny_model()
clean, corrupted = token_pair(seed=1)
hook = "blocks.1.hook_resid_pre"
saes = {hook: random_sae(32, 24)}
acts = torch.randn(256, 8)
spec = SAESpec(d_sae=16, k=4, steps=2, batch_size=64)
"""
CASES = {  # outside the tests' runtime type checks, our own checks answer
    "seed str": (
        "train_sae(acts, spec, seed='a')",
        "TypeError",
        "seed must be an int; got 'a'",
    ),
    "seed float": (
        "train_sae(acts, spec, seed=1.5)",
        "TypeError",
        "seed must be an int; got 1.5",
    ),
    "float position": (
        "exact_node_effects(model, saes, clean, corrupted, logit_diff, [FeatureNode(hook, 2.0, 3)])",
        "TypeError",
        "the position must be an int, got 2.0",
    ),
}


def test_wrong_types_are_named_in_a_user_session():
    assert_user_session_errors(USER_SETUP, CASES)
