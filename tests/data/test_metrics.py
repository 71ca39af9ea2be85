import pytest
import torch
from jaxtyping import TypeCheckError

from ioi.metrics import (
    _check_answers,
    answer_logit_diffs,
    io_probability,
    logits_to_ave_logit_diff,
    make_ioi_metric,
)


def hand_logits():
    # batch 2, pos 3, vocab 4. Prompt 0 answers at the last position, prompt 1 at position 1.
    logits = torch.zeros(2, 3, 4)
    logits[0, 2] = torch.tensor([1.0, 4.0, 2.0, 0.0])  # correct id 1, incorrect id 2: diff 2
    logits[1, 1] = torch.tensor([3.0, 0.0, 0.0, -1.0])  # correct id 0, incorrect id 3: diff 4
    logits[1, 2] = torch.tensor([0.0, 0.0, 0.0, 9.0])  # a decoy at the last position
    answers = torch.tensor([[1, 2], [0, 3]])
    return logits, answers


def test_logit_diff_by_hand():
    logits, answers = hand_logits()
    per = logits_to_ave_logit_diff(logits, answers, per_prompt=True, positions=torch.tensor([2, 1]))
    assert torch.allclose(per, torch.tensor([2.0, 4.0]))
    assert logits_to_ave_logit_diff(
        logits, answers, positions=torch.tensor([2, 1])
    ) == pytest.approx(3.0)
    # With no positions, the last position is used: prompt 1 reads the decoy (0 - 9).
    assert torch.allclose(
        logits_to_ave_logit_diff(logits, answers, per_prompt=True), torch.tensor([2.0, -9.0])
    )


def test_normalised_metric_is_zero_at_corrupted_and_one_at_clean():
    logits, answers = hand_logits()
    pos = torch.tensor([2, 1])
    metric = make_ioi_metric(
        clean_logit_diff=3.0, corrupted_logit_diff=-1.0, answer_tokens=answers, positions=pos
    )
    assert metric(logits).item() == pytest.approx(1.0)
    shifted = logits.clone()
    shifted[0, 2, 1] -= 8.0  # prompt 0 diff 2 -> -6, mean (-6 + 4) / 2 = -1
    assert metric(shifted).item() == pytest.approx(0.0)


def test_equal_baselines_raise():
    _, answers = hand_logits()
    with pytest.raises(ValueError, match="equal"):
        make_ioi_metric(2.5, 2.5, answers)
    with pytest.raises(ValueError, match="finite"):
        make_ioi_metric(float("nan"), 1.0, answers)


def test_shape_errors_are_clear():
    logits, answers = hand_logits()
    # Without runtime type checking (a user's session) our own check names the problem...
    with pytest.raises(ValueError, match=r"shape \[2, 2\] \(correct, incorrect\)"):
        _check_answers(logits, answers[:, :1])
    with pytest.raises(
        ValueError, match=r"shape \[2, 2\] \(correct, incorrect\) for a batch of 2, got \(1, 2\)"
    ):
        _check_answers(logits, answers[:1])
    # ...and with it (these tests), jaxtyping stops the call first.
    with pytest.raises((ValueError, TypeCheckError)):
        logits_to_ave_logit_diff(logits, answers[:, :1])
    with pytest.raises((ValueError, TypeCheckError)):
        logits_to_ave_logit_diff(logits, answers[:1])


def test_io_probability():
    logits, answers = hand_logits()
    p = io_probability(logits, answers, positions=torch.tensor([2, 1]))
    expected0 = torch.softmax(torch.tensor([1.0, 4.0, 2.0, 0.0]), 0)[1]
    assert p[0].item() == pytest.approx(expected0.item())


def test_answer_logit_diffs_is_a_per_row_loop():
    """Two logits per row, at its position, for the rows asked (the oracle's metric uses it)."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 5, 9, generator=gen)
    answers = torch.tensor([[1, 2], [3, 0], [8, 7], [4, 4]])
    positions = torch.tensor([4, 0, 2, 3])
    rows = torch.tensor([2, 0])
    expected = [logits[b, positions[b], answers[b, 0]] - logits[b, positions[b], answers[b, 1]]
                for b in rows.tolist()]  # fmt: skip
    got = answer_logit_diffs(logits, answers, positions, rows)
    torch.testing.assert_close(got, torch.stack(expected))
    last = answer_logit_diffs(logits, answers)  # all rows, last position
    torch.testing.assert_close(
        last, logits[torch.arange(4), -1].gather(1, answers).diff(dim=1)[:, 0].neg()
    )
