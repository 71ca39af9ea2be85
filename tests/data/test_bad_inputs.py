"""Bad input to the data layer is refused with a message that names it, never a silently wrong
dataset or number: one test per class of bad input, several cases each."""

from __future__ import annotations

import pytest
import torch

from ioi.dataset import MAX_PROMPTS, IOIDataset
from ioi.metrics import logits_to_ave_logit_diff, make_ioi_metric
from ioi.templates import NAMES

GOOD_NAMES = ["Mary", "John", "Tom", "James", "Dan", "Sid"]


@pytest.fixture(scope="module")
def ds():
    return IOIDataset(8, seed=1)


# ---- words that would make word_idx point at the wrong token ----------------------------


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(names=GOOD_NAMES + ["store"], places=["store", "park"]), "both names and places"),
        (dict(names=GOOD_NAMES + ["drink"], objects=["drink", "ring"]), "both names and objects"),
        (dict(names=GOOD_NAMES + ["the"]), "words of the templates"),
        (dict(names=GOOD_NAMES + ["Then"]), "words of the templates"),
        (dict(names=GOOD_NAMES + [""]), "non-empty words"),
        (dict(names=GOOD_NAMES + [" Mary"]), "surrounding spaces"),
        (dict(names=GOOD_NAMES + ["{0}"]), "markup"),
        (dict(places=["[A]", "park"]), "markup"),
        (dict(names=GOOD_NAMES + ["Mary"]), "duplicates"),
    ],
)
def test_words_that_would_be_found_in_the_wrong_place_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        IOIDataset(8, **kwargs)


def test_more_prompts_than_fit_are_refused_at_once_with_what_fits():
    for n in (MAX_PROMPTS + 1, 10**7):
        with pytest.raises(ValueError, match=f"more than IOIDataset builds \\({MAX_PROMPTS:,}"):
            IOIDataset(n)


# ---- flips that would make IO equal S ---------------------------------------------------


@pytest.mark.parametrize(
    "flip", ["ABB->AAA", "ABB->XXX", "ABB->BBB", "BAB->AAB", "ABB->XYZ, BAB->YYZ"]
)
def test_flips_that_make_io_equal_s_are_refused(ds, flip):
    with pytest.raises(ValueError, match="IO and S would be the same name"):
        ds.gen_flipped_prompts(flip)


def test_the_flips_that_stay_valid_still_work(ds):
    abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
    assert bool((abc.io_tokenIDs != abc.s_tokenIDs).all())
    swapped = ds.gen_flipped_prompts("ABB->BAA, BAB->ABA")
    assert torch.equal(swapped.io_tokenIDs, ds.s_tokenIDs)
    assert len(set(NAMES)) > 5  # the defaults stay usable


# ---- metrics: wrong ids, positions, batches (as a user meets them) -----------------------

METRIC_SETUP = """
import torch
from ioi.dataset import IOIDataset
from ioi.metrics import io_probability, logits_to_ave_logit_diff as ld
from ioi.metrics import make_ioi_metric, make_logit_diff_metric
ds = IOIDataset(8, seed=1)
a, end = ds.answer_tokens, ds.word_idx["end"]
torch.manual_seed(0)
L = torch.randn(8, ds.toks.shape[1], 50257)
"""
METRIC_CASES = {
    # case: (expression, error, words the message must contain)
    "names a string": ("IOIDataset(8, names='Mary')", "TypeError", "list of strings"),
    "a name not a string": ("IOIDataset(8, names=['Mary', 'John', 7])", "TypeError", "strings"),
    "an object not a string": ("IOIDataset(8, objects=[None, 'ring'])", "TypeError", "strings"),
    "prepend_bos a string": ("IOIDataset(8, prepend_bos='no')", "TypeError", "True or False"),
    "prepend_bos an int": ("IOIDataset(8, prepend_bos=1)", "TypeError", "True or False"),
    "seed a string": ("IOIDataset(8, seed='1')", "TypeError", "seed must be an int"),
    "seed a float": ("IOIDataset(8, seed=1.0)", "TypeError", "seed must be an int"),
    "N a float": ("IOIDataset(4.0)", "TypeError", "N must be an int"),
    "N a bool": ("IOIDataset(True)", "TypeError", "N must be an int"),
    "N a string": ("IOIDataset('8')", "TypeError", "N must be an int"),
    "flip an int": ("ds.gen_flipped_prompts(123)", "TypeError", "flip must be a string"),
    "flip None": ("ds.gen_flipped_prompts(None)", "TypeError", "flip must be a string"),
    "flip a list": ("ds.gen_flipped_prompts(['ABB->XYZ'])", "TypeError", "flip must be a string"),
    "negative positions": ("ld(L, a, positions=end - 100)", "ValueError", "not wrapped"),
    "positions past the end": ("ld(L, a, positions=end + 99)", "ValueError", "must lie in 0"),
    "too few positions": ("ld(L, a, positions=end[:3])", "ValueError", "one entry per prompt"),
    "float positions": ("ld(L, a, positions=end.float())", "ValueError", "must hold integers"),
    "positions as a list": ("ld(L, a, positions=[3] * 8)", "TypeError", "integer torch tensor"),
    "ids past the vocabulary": ("ld(L, a + 50257)", "ValueError", "outside the vocabulary"),
    "negative ids": ("ld(L, a - 10**5)", "ValueError", "outside the vocabulary"),
    "float ids": ("ld(L, a.float())", "ValueError", "must hold integers"),
    "bool ids": ("ld(L, a > 0)", "ValueError", "must hold integers"),
    "one answer column": ("ld(L, a[:, :1])", "ValueError", "shape [8, 2]"),
    "ids of another batch": ("ld(L, a[:3])", "ValueError", "shape [8, 2]"),
    "empty batch": ("ld(L[:0], a[:0])", "ValueError", "empty batch"),
    "logits without positions": ("ld(L[:, 0], a)", "ValueError", "[batch, pos, d_vocab]"),
    "logits as a list": ("ld([[1.0]], a)", "TypeError", "logits must be a torch tensor"),
    "per_prompt a string": ("ld(L, a, 'yes')", "TypeError", "per_prompt must be True or False"),
    "probability, negative positions": (
        "io_probability(L, a, positions=end - 100)",
        "ValueError",
        "not wrapped",
    ),
    "probability, ids past the vocabulary": (
        "io_probability(L, a + 50257)",
        "ValueError",
        "outside the vocabulary",
    ),
    "metric built on float ids": ("make_ioi_metric(2.0, 0.5, a.float())", "ValueError", "integers"),
    "metric built on no prompts": ("make_logit_diff_metric(a[:0])", "ValueError", "batch >= 1"),
    "metric built on negative ids": ("make_logit_diff_metric(a - 10**5)", "ValueError", "negative"),
    "metric built on negative positions": (
        "make_ioi_metric(2.0, 0.5, a, end - 100)",
        "ValueError",
        "not wrapped",
    ),
    "metric built on a list": ("make_logit_diff_metric(a.tolist())", "TypeError", "torch tensor"),
    "baseline of many values": (
        "make_ioi_metric(torch.tensor([1.0, 2.0]), 0.0, a)",
        "ValueError",
        "one number",
    ),
    "baseline a string": ("make_ioi_metric('2.0', 0.0, a)", "TypeError", "must be a number"),
    "baseline a bool": ("make_ioi_metric(True, 0.0, a)", "TypeError", "must be a number"),
    "baseline NaN": ("make_ioi_metric(float('nan'), 0.0, a)", "ValueError", "finite"),
    "equal baselines": ("make_ioi_metric(1.0, 1.0, a)", "ValueError", "equal"),
}


@pytest.fixture(scope="module")
def metric_errors():
    from ioi.testing import errors_in_a_user_session

    return errors_in_a_user_session(
        METRIC_SETUP, {case: expr for case, (expr, _, _) in METRIC_CASES.items()}
    )


@pytest.mark.parametrize("case", METRIC_CASES)
def test_metrics_refuse_bad_ids_positions_batches_and_baselines(metric_errors, case):
    _, error, needle = METRIC_CASES[case]
    got, message = metric_errors[case]
    assert (got, needle in message) == (error, True), f"{case}: {got}: {message}"


def test_good_metric_inputs_still_give_numbers(ds):
    torch.manual_seed(0)
    logits = torch.randn(ds.N, ds.toks.shape[1], 50257)
    end = ds.word_idx["end"]
    value = logits_to_ave_logit_diff(logits, ds.answer_tokens, positions=end)
    rows = torch.arange(ds.N)
    picked = logits[rows, end]
    expected = (picked[rows, ds.io_tokenIDs] - picked[rows, ds.s_tokenIDs]).mean()
    assert torch.isfinite(value) and value.item() == pytest.approx(expected.item(), rel=1e-6)
    metric = make_ioi_metric(value.item() + 1.0, value.item(), ds.answer_tokens, end)
    assert metric(logits).item() == pytest.approx(0.0, abs=1e-5)
