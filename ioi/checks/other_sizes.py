"""Grading a second time on a model of other sizes, so that the toy's sizes written in fail.

The toy has 3 layers and 4 heads; an answer that writes those in (``torch.zeros(3, 4)``,
``range(3)``, ``divmod(i, 4)``) passes every check run on the toy alone. Checkers call
`expect_on_other_sizes` with one of the random models of `fixtures` (`other_model_batch`,
`other_ioi_model`), whose sizes are all larger: such an answer is then named
``hard_coded_size`` (the exercise declares it in ``shared``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.checks.core import Exercise, toy_sized
from ioi.checks.fixtures import other_ioi_model, toy_model


def toy_grid_axes(layer_axis: int = 0, head_axis: int = 1) -> dict[int, int]:
    """``{axis: the toy's size}`` for a result laid out by layer and head (a [layer, head] grid)."""
    cfg = toy_model().cfg
    return {layer_axis: cfg.n_layers, head_axis: cfg.n_heads}


def describe_sizes(model: HookedTransformer) -> str:
    """A model of other sizes in words, for messages."""
    return (
        f"a random model of {model.cfg.n_layers} layers x {model.cfg.n_heads} heads (not the toy)"
    )


def describe_other_ioi_model() -> str:
    """`other_ioi_model` in words, for messages (checkers run the toy's IOI prompts through it)."""
    return f"{describe_sizes(other_ioi_model())} over the toy's vocabulary; the same prompts"


def hard_coded_size_error(
    raised_as: Callable[[Exception], str | None] | None = None,
) -> Callable[[Exception], str | None]:
    """A ``raised_as`` (`Exercise.call`) that names an IndexError ``hard_coded_size``: on the
    larger model an index past the toy's sizes is the sizes written in. Other exceptions go to
    ``raised_as``."""

    def name(err: Exception) -> str | None:
        if isinstance(err, IndexError):
            return "hard_coded_size"
        return raised_as(err) if raised_as is not None else None

    return name


def expect_on_other_sizes(
    ex: Exercise,
    fn: Callable,
    *args,
    call: str,
    model,
    expected: Tensor | tuple,
    axes: Mapping[int, int],
    compare: Callable[[object, object, str, dict], None] | None = None,
    raised_as: Callable[[Exception], str | None] | None = None,
    **tolerance,
) -> None:
    """Call ``fn(*args)`` on the model of other sizes and compare with the library's answer.

    Args:
        ex: the exercise; it must declare ``hard_coded_size``.
        fn: the learner's function; ``args`` its arguments (``model`` among them).
        call: how it was called, for messages.
        model: the model of other sizes (its hooks are checked after the call).
        expected: the library's result on that model: a tensor, or a ``(values, labels)``
            pair checked by ``compare``.
        axes: axis of the values -> the toy's size there: a result cut to those sizes (or
            0 past them) is ``hard_coded_size``.
        compare: ``compare(got, expected, call, mistakes)`` for results that are not one
            tensor (default: `Exercise.expect_tensor`).
        raised_as: names other exceptions (an IndexError is ``hard_coded_size``).
        tolerance: ``atol``, ``rtol``, ``unchanged`` for `Exercise.expect_tensor`.
    """
    got = ex.call(fn, *args, call=call, model=model, raised_as=hard_coded_size_error(raised_as))
    values = expected[0] if isinstance(expected, tuple) else expected
    mistakes = {"hard_coded_size": lambda: toy_sized(values, axes)}
    if compare is None:
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, **tolerance)
    else:
        compare(got, expected, call, mistakes)
