"""Bad input to path patching's helpers, as a tired user passes it: a sender range outside the
model, tokens that are not the model's ids. Each is a clear ValueError or TypeError, never an
empty or silently clipped sender list or a raw torch error."""

from __future__ import annotations

import pytest
import torch

from ioi.path_patching import all_head_senders, all_mlp_senders, cache_for_path_patching
from ioi.testing import assert_user_session_errors, hooks_left, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize("below_layer", [-1, 3, 99])
def test_below_layer_outside_the_model_is_refused_not_clipped(model, below_layer):
    for senders in (all_head_senders, all_mlp_senders):
        with pytest.raises(ValueError, match=r"below_layer must be None .* or an int in 0\.\.2"):
            senders(model, below_layer=below_layer)
    assert len(all_head_senders(model, below_layer=2)) == 8 and all_mlp_senders(model, 0) == []


@pytest.mark.parametrize(
    "toks, message",
    [
        (torch.zeros(2, 30, dtype=torch.long), "toks has 30 positions but the model's context"),
        (torch.full((2, 4), 99), "toks holds token id 99, outside the vocabulary"),
        (torch.zeros(0, 4, dtype=torch.long), "toks is empty"),
    ],
)
def test_the_cache_checks_its_tokens(model, toks, message):
    with pytest.raises(ValueError, match=message):
        cache_for_path_patching(model, toks)
    assert hooks_left(model) == []


def test_receivers_in_layer_0_still_check_the_tokens(model):
    """No sender can reach layer 0, so the grid is all NaN: but only for tokens that are valid."""
    from ioi.path_patching import get_path_patch_head_to_heads, get_path_patch_mlp_to_heads
    from ioi.testing import logit_diff, token_pair

    clean, corrupted = token_pair(seed=1)
    for grid in (get_path_patch_head_to_heads, get_path_patch_mlp_to_heads):
        assert grid([(0, 1)], "q", model, logit_diff, corrupted, clean).isnan().all()
        with pytest.raises(ValueError, match="new_dataset holds token id 99"):
            grid([(0, 1)], "q", model, logit_diff, torch.full_like(corrupted, 99), clean)
    assert hooks_left(model) == []


CASES = {  # outside the tests' runtime type checks, our own checks answer
    "list": ("cache_for_path_patching(model, [[1, 2, 3]])", "TypeError", "integer torch tensor"),
    "float": (
        "cache_for_path_patching(model, torch.ones(2, 4))",
        "ValueError",
        r"toks must hold integers",
    ),
    "layer 0, other shapes": (
        "get_path_patch_mlp_to_heads([(0, 1)], 'q', model, logit_diff, t[:2], t)",
        "ValueError",
        r"new_dataset \(2, 6\) and orig_dataset \(3, 6\) must have the same shape",
    ),
    "str layer": ("all_head_senders(model, below_layer='1')", "ValueError", "got '1'"),
    "readout of a list": (
        "detect_readout(logit_diff, model(t).tolist())",
        "TypeError",
        r"orig_logits must be the model's logits, .* got a list",
    ),
    "readout of tokens": (
        "detect_readout(logit_diff, t)",
        "ValueError",
        r"floating \[batch, pos, d_vocab\] tensor, got a torch.int64 tensor of shape \(3, 6\)",
    ),
    "readout of a str metric": (
        "detect_readout('logit_diff', model(t))",
        "TypeError",
        "metric must be a function of the logits, got a str",
    ),
}


def test_wrong_types_are_named_in_a_user_session():
    setup = (
        "import torch\nfrom ioi.path_patching import *\n"
        "from ioi.testing import logit_diff, tiny_model, token_pair\n"
        "model = tiny_model()\nt = token_pair()[0]\n"
    )
    assert_user_session_errors(setup, CASES)
