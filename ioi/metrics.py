"""Logit-difference metrics for IOI, and factories for the normalised patching metric.

Every patching function takes a metric ``logits -> scalar``; build one here and pass it in.
The factories mark each metric with ``logit_positions`` (the positions it reads) and
``logit_tokens`` (the vocabulary ids it reads), which lets the patching engine skip unembedding
the logits no metric looks at.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ioi.inputs import check_answer_tokens, check_int_tensor, check_positions

Metric = Callable[[Tensor], Tensor]
REDUCTIONS = ("mean", "none")
"""``reduce=`` of the factories: the mean over prompts (a scalar) or one value per prompt."""


def _check_reduce(reduce: object) -> bool:
    """True when the metric should return one value per prompt (``reduce="none"``)."""
    if reduce not in REDUCTIONS:
        raise ValueError(
            f"unknown reduce {reduce!r}; valid: 'mean' (a scalar, the default) or 'none' "
            "(one value per prompt, for intervals over prompts)"
        )
    return reduce == "none"


def _check_logits(logits: object) -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch tensor, got a {type(logits).__name__}")
    if logits.ndim != 3 or not logits.dtype.is_floating_point:
        raise ValueError(
            "logits must be a float tensor of shape [batch, pos, d_vocab] (the model's output), "
            f"got {logits.dtype} of shape {tuple(logits.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("logits hold an empty batch: the mean over no prompts is undefined")
    return logits


def _check_answers(logits: Tensor, answer_tokens: object) -> None:
    _check_logits(logits)
    check_answer_tokens(answer_tokens, logits.shape[0], logits.shape[-1])


def _check_factory_inputs(answer_tokens: object, positions: object) -> None:
    """What a metric factory can check before it sees logits: ids and positions, per prompt."""
    answers = check_int_tensor(answer_tokens, "answer_tokens", ndim=2)
    if answers.shape[0] == 0 or answers.shape[1] != 2:
        raise ValueError(
            "answer_tokens must have shape [batch, 2] (correct, incorrect) with batch >= 1, "
            f"got {tuple(answers.shape)}"
        )
    if int(answers.min()) < 0:
        raise ValueError(f"answer_tokens holds a negative id ({int(answers.min())})")
    if positions is not None:
        check_positions(positions, answers.shape[0], 2**62)


def final_logits(
    logits: Float[Tensor, "batch pos d_vocab"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "batch d_vocab"]:
    """The logits each prompt predicts its answer from: ``positions`` (per prompt) or the last one."""
    _check_logits(logits)
    if positions is None:
        return logits[:, -1]
    check_positions(positions, logits.shape[0], logits.shape[1])
    rows = torch.arange(logits.shape[0], device=logits.device)
    return logits[rows, positions.to(logits.device)]


def answer_logit_diffs(
    logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
    rows: Int[Tensor, " row"] | None = None,
) -> Float[Tensor, " row"]:
    """Correct minus incorrect logit of each prompt in ``rows`` (all if None), at its position.

    ``answer_tokens`` and ``positions`` (default: the last) are per prompt of the whole batch.
    Reads just the two answer logits of each row (no copy of the vocabulary axis) and checks
    nothing: `logits_to_ave_logit_diff` checks its inputs and then calls this.
    """
    device = logits.device
    if rows is None:
        rows = torch.arange(logits.shape[0], device=device)
    rows = rows.to(device)
    if positions is None:
        pos = torch.full_like(rows, logits.shape[1] - 1)
    else:
        pos = positions.to(device)[rows]
    picked = logits[rows[:, None], pos[:, None], answer_tokens.to(device)[rows]]  # [row, 2]
    return picked[:, 0] - picked[:, 1]


def logits_to_ave_logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
    per_prompt: bool = False,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*batch"]:
    """Logit of the correct answer minus the incorrect one, at each prompt's final position.

    Args:
        logits: model output.
        answer_tokens: [batch, 2] ids of (correct, incorrect), e.g. ``IOIDataset.answer_tokens``.
        per_prompt: return the [batch] differences instead of their mean.
        positions: per-prompt index of the predicting token (``word_idx["end"]``); default last.

    Raises:
        TypeError: logits, ids or positions that are not tensors; ``per_prompt`` not a bool.
        ValueError: an empty batch, ids outside the vocabulary or of the wrong shape, float ids,
            positions outside ``0..pos-1`` (negative positions are refused, not wrapped).
    """
    if not isinstance(per_prompt, bool):
        raise TypeError(f"per_prompt must be True or False, got {per_prompt!r}")
    _check_answers(logits, answer_tokens)
    if positions is not None:
        check_positions(positions, logits.shape[0], logits.shape[1])
    diff = answer_logit_diffs(logits, answer_tokens, positions)
    return diff if per_prompt else diff.mean()


def _scalar(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Tensor):
        raise TypeError(f"{what} must be a number or a one-element tensor, got {value!r}")
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ValueError(
            f"{what} must be one number (the mean logit difference), got a tensor of shape "
            f"{tuple(value.shape)}; take .mean() of the per-prompt differences"
        )
    return float(value.detach() if isinstance(value, Tensor) else value)


def make_normaliser(
    clean_logit_diff: float | Tensor, corrupted_logit_diff: float | Tensor
) -> Callable[[Tensor], Tensor]:
    """``diff -> (diff - corrupted) / (clean - corrupted)``: 0 at the corrupted baseline, 1 at the
    clean one. The normalisation of every normalised IOI metric (`make_ioi_metric` and the
    per-subset metric of `ioi.circuit.oracle`).

    Raises:
        ValueError: a baseline is not finite, or the two are equal (it would divide by zero).
    """
    clean = _scalar(clean_logit_diff, "clean_logit_diff")
    corrupted = _scalar(corrupted_logit_diff, "corrupted_logit_diff")
    if not (torch.isfinite(torch.tensor(clean)) and torch.isfinite(torch.tensor(corrupted))):
        raise ValueError(f"baselines must be finite, got clean={clean} corrupted={corrupted}")
    if abs(clean - corrupted) < 1e-6:
        raise ValueError(
            f"clean and corrupted logit differences are equal ({clean:.6g}); the normalised "
            "metric would divide by zero. Use a corrupted input that changes the answer, "
            "e.g. the ABC dataset, or use the raw logit difference."
        )

    def normalise(diff: Tensor) -> Tensor:
        return (diff - corrupted) / (clean - corrupted)

    return normalise


def make_ioi_metric(
    clean_logit_diff: float | Tensor,
    corrupted_logit_diff: float | Tensor,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
    reduce: str = "mean",
) -> Metric:
    """The normalised IOI metric: 0 at the corrupted baseline, 1 at the clean one.

    ``reduce="none"`` gives each prompt's normalised logit difference ([batch]; the
    normalisation is linear, so their mean is the default scalar metric); patching results then
    keep per-prompt effects and can give intervals (`ioi.statistics`).

    Raises:
        ValueError: if the two baselines are equal (the metric would divide by zero), the
            answer ids or positions are malformed (`TypeError` if they are not tensors), or
            ``reduce`` is not ``"mean"`` or ``"none"``.
    """
    per_prompt = _check_reduce(reduce)
    _check_factory_inputs(answer_tokens, positions)
    normalise = make_normaliser(clean_logit_diff, corrupted_logit_diff)

    def ioi_metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, "*batch"]:
        diff = logits_to_ave_logit_diff(logits, answer_tokens, per_prompt, positions)
        return normalise(diff)

    ioi_metric.logit_positions = _declared(positions)
    ioi_metric.logit_tokens = _declared_tokens(answer_tokens)
    return ioi_metric


def make_logit_diff_metric(
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
    reduce: str = "mean",
) -> Metric:
    """The raw mean logit difference as a ``logits -> scalar`` metric; ``reduce="none"``: the
    [batch] per-prompt differences instead (see `make_ioi_metric`)."""
    per_prompt = _check_reduce(reduce)
    _check_factory_inputs(answer_tokens, positions)

    def logit_diff(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, "*batch"]:
        return logits_to_ave_logit_diff(logits, answer_tokens, per_prompt, positions)

    logit_diff.logit_positions = _declared(positions)
    logit_diff.logit_tokens = _declared_tokens(answer_tokens)
    return logit_diff


def _declared(positions: Tensor | None) -> Tensor | str:
    # The patching engine reads this attribute and unembeds only these positions: the metric
    # never looks at any other logit, so the result is the same and a sweep is much cheaper.
    return "last" if positions is None else positions.detach().clone()


def _declared_tokens(answer_tokens: Tensor) -> Tensor:
    # ... and unembeds only these vocabulary columns (the answers) at those positions.
    return answer_tokens.detach().flatten().unique()


def io_probability(
    logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, " batch"]:
    """Probability the model gives the correct answer, per prompt."""
    _check_answers(logits, answer_tokens)
    probs = final_logits(logits, positions).float().softmax(-1)
    return probs.gather(1, answer_tokens[:, :1].to(probs.device)).squeeze(1)
