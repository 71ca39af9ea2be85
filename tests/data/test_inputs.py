"""The shared input checks refuse every malformed tensor with a ValueError or TypeError."""

import pytest
import torch

from ioi.inputs import check_answer_tokens, check_positions, check_tokens


@pytest.mark.parametrize(
    "bad, error",
    [
        ([[1, 2]], TypeError),
        (torch.tensor([[1.0, 2.0]]), ValueError),
        (torch.tensor([[True, False]]), ValueError),
        (torch.tensor([1, 2]), ValueError),
        (torch.zeros(0, 3, dtype=torch.long), ValueError),
        (torch.tensor([[1, 10]]), ValueError),
        (torch.tensor([[-1, 2]]), ValueError),
        (torch.ones(1, 9, dtype=torch.long), ValueError),
    ],
)
def test_bad_tokens_are_refused(bad, error):
    with pytest.raises(error):
        check_tokens(bad, d_vocab=10, n_ctx=8)


def test_good_tokens_pass_through():
    toks = torch.tensor([[1, 2, 9]])
    assert check_tokens(toks, d_vocab=10, n_ctx=8) is toks


def test_answers_and_positions():
    with pytest.raises(ValueError, match="shape"):
        check_answer_tokens(torch.tensor([[1, 2, 3]]), batch=1, d_vocab=10)
    with pytest.raises(ValueError, match="vocabulary"):
        check_answer_tokens(torch.tensor([[1, 12]]), batch=1, d_vocab=10)
    with pytest.raises(ValueError, match="not wrapped"):
        check_positions(torch.tensor([-1, 2]), batch=2, n_pos=5)
    with pytest.raises(ValueError, match="one entry per prompt"):
        check_positions(torch.tensor([1]), batch=2, n_pos=5)
    assert check_positions(torch.tensor([0, 4]), batch=2, n_pos=5).tolist() == [0, 4]
