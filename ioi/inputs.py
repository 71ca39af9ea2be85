"""Checks of the inputs every layer receives: token tensors, answer ids, positions.

One place for them, so that a bad input fails the same way (a `TypeError` for a wrong Python
type, a `ValueError` naming the problem and what is valid) whichever function it reaches first,
and never as an ``IndexError`` or a ``RuntimeError`` from deep inside torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Int
from torch import Tensor


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def check_int_tensor(value: object, what: str, ndim: int | None = None) -> Tensor:
    """``value`` must be an integer tensor (not float, not bool) with ``ndim`` dims; returns it."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{what} must be an integer torch tensor, got {_describe(value)}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise ValueError(
            f"{what} must hold integers (e.g. torch.long), got {_describe(value)}; "
            "convert it with .long() only if the values really are ids or positions"
        )
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimension(s), got {_describe(value)}")
    return value


def check_count(value: object, what: str, minimum: int = 1) -> int:
    """An int (not a bool, not a float) of at least ``minimum``; returns it.

    Raises:
        ValueError: naming ``what``, the bound and the value given.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def check_tokens(
    tokens: object,
    d_vocab: int,
    n_ctx: int | None = None,
    what: str = "tokens",
) -> Int[Tensor, "batch pos"]:
    """A [batch, pos] integer tensor of ids in ``[0, d_vocab)``, at most ``n_ctx`` long.

    Raises:
        TypeError: not a tensor.
        ValueError: wrong dtype or shape, an empty batch or sequence, an id outside the
            vocabulary, or more positions than the model's context.
    """
    toks = check_int_tensor(tokens, what, ndim=2)
    batch, n_pos = toks.shape
    if batch == 0 or n_pos == 0:
        raise ValueError(f"{what} is empty (shape {tuple(toks.shape)}); give at least one prompt")
    low, high = int(toks.min()), int(toks.max())
    if low < 0 or high >= d_vocab:
        bad = low if low < 0 else high
        raise ValueError(f"{what} holds token id {bad}, outside the vocabulary 0..{d_vocab - 1}")
    if n_ctx is not None and n_pos > n_ctx:
        raise ValueError(
            f"{what} has {n_pos} positions but the model's context is {n_ctx}; "
            "use shorter prompts or truncate them"
        )
    return toks


def check_model_tokens(model, tokens: object, what: str = "tokens") -> Int[Tensor, "batch pos"]:
    """`check_tokens` against a `HookedTransformer`'s vocabulary and context."""
    return check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx, what)


def check_answer_tokens(
    answer_tokens: object, batch: int, d_vocab: int, what: str = "answer_tokens"
) -> Int[Tensor, "batch 2"]:
    """[batch, 2] ids (correct, incorrect) inside the vocabulary."""
    answers = check_int_tensor(answer_tokens, what, ndim=2)
    if answers.shape != (batch, 2):
        raise ValueError(
            f"{what} must have shape [{batch}, 2] (correct, incorrect) for a batch of {batch}, "
            f"got {tuple(answers.shape)}"
        )
    if int(answers.min()) < 0 or int(answers.max()) >= d_vocab:
        raise ValueError(f"{what} holds ids outside the vocabulary 0..{d_vocab - 1}")
    return answers


def check_positions(
    positions: object, batch: int, n_pos: int, what: str = "positions"
) -> Int[Tensor, " batch"]:
    """[batch] per-prompt positions in ``[0, n_pos)``; negative positions are refused, not wrapped."""
    pos = check_int_tensor(positions, what, ndim=1)
    if pos.shape[0] != batch:
        raise ValueError(f"{what} must have one entry per prompt ({batch}), got {pos.shape[0]}")
    if batch and (int(pos.min()) < 0 or int(pos.max()) >= n_pos):
        raise ValueError(
            f"{what} must lie in 0..{n_pos - 1} (negative positions are not wrapped), "
            f"got values from {int(pos.min())} to {int(pos.max())}"
        )
    return pos


def check_baseline_finite(value: object, run: str = "the unpatched run") -> None:
    """Refuse a metric that is NaN or infinite on an unpatched run (clean or corrupted)."""
    base = torch.as_tensor(value, dtype=torch.float64)
    if not bool(torch.isfinite(base).all()):
        raise ValueError(
            f"the metric is {base.flatten()[0].item()} on {run} already, so no patching "
            "result would mean anything; fix the metric first (a division by a zero difference "
            "of baselines? a log of 0?)"
        )


def check_metric_finite(
    values: Tensor, label: Callable[[int], str], baseline: object | None = None
) -> None:
    """Refuse a patching result in which the metric gave NaN or infinity.

    ``values`` holds one metric value per site (or sender) along its first axis; ``label(i)``
    names site ``i``. ``baseline``, the metric of the unpatched run if known: when it is already
    not finite the metric itself is at fault, not any patch, and the message says so.

    Raises:
        ValueError: naming the unpatched run, or the first site whose value is not finite.
    """
    if baseline is not None:
        check_baseline_finite(baseline)
    bad = ~torch.isfinite(values.reshape(values.shape[0], -1)).all(dim=1)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        every = " (every site: is the metric finite at all?)" if bool(bad.all()) else ""
        raise ValueError(
            f"the metric is not finite ({values[first].flatten()[0].item()}) when patching "
            f"{label(first)}, the first of {int(bad.sum())} of {values.shape[0]} sites{every}. "
            "A metric that declares logit_positions/logit_tokens may read only those logits "
            "(the engine leaves every other logit NaN)"
        )


def check_token_pair(
    model,
    first: object,
    second: object,
    names: tuple[str, str] = ("clean_tokens", "corrupted_tokens"),
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Two token batches for the same model that align position by position (same shape)."""
    a = check_model_tokens(model, first, names[0])
    b = check_model_tokens(model, second, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} {tuple(a.shape)} and {names[1]} {tuple(b.shape)} must have the same "
            "shape (the same prompts, position by position)"
        )
    return a, b
