"""Tokens and positions for path patching: the one module of it that knows `IOIDataset`.

The engine works on token tensors and per-prompt position tensors; this adapter turns what a
caller passes into those. A dataset argument is an `IOIDataset` or its [batch, pos] token
tensor; a position spec is ``None`` (every position), a key of the dataset's ``word_idx``
(``"end"``, ``"S2"``, ...; needs an `IOIDataset`) or an integer tensor of shape [batch] giving
one position per prompt, which serves any task.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from ioi.dataset import IOIDataset
from ioi.inputs import check_int_tensor

PositionSpec = str | Int[Tensor, " batch"] | None
"""``None`` (all positions), a ``word_idx`` key such as ``"end"``, or a [batch] tensor."""

DatasetLike = IOIDataset | Int[Tensor, "batch pos"]
"""An `IOIDataset` or its token tensor (then positions must be tensors, not keys)."""


def dataset_tokens(ds: DatasetLike, what: str) -> Int[Tensor, "batch pos"]:
    """The token tensor of a dataset argument (not yet checked against a model's vocabulary)."""
    if isinstance(ds, IOIDataset):
        return ds.toks
    if isinstance(ds, Tensor):
        return check_int_tensor(ds, what, ndim=2)
    raise TypeError(
        f"{what} must be an IOIDataset or an int tensor [batch, pos], got {type(ds).__name__}"
    )


def resolve_positions(
    spec: PositionSpec, ds: DatasetLike, what: str
) -> Int[Tensor, " batch"] | None:
    """Turn a position spec into a [batch] tensor (or None for all positions).

    Raises:
        ValueError: a key that is not in ``word_idx`` (the message lists the keys), a tensor
            of the wrong shape, or positions outside the sequence.
    """
    toks = dataset_tokens(ds, "dataset")
    batch, n_pos = toks.shape
    if spec is None:
        return None
    if isinstance(spec, str):
        if not isinstance(ds, IOIDataset):
            raise ValueError(
                f"{what}={spec!r} names a word_idx key, which needs an IOIDataset; "
                "pass a [batch] position tensor with a plain token tensor"
            )
        if spec not in ds.word_idx:
            raise ValueError(
                f"unknown {what} key {spec!r}; valid keys: {', '.join(sorted(ds.word_idx))}"
            )
        spec = ds.word_idx[spec]
    if not isinstance(spec, Tensor) or spec.shape != (batch,) or spec.is_floating_point():
        raise ValueError(
            f"{what} must be None, a word_idx key or an int tensor of shape [{batch}], got {spec!r}"
        )
    if spec.min() < 0 or spec.max() >= n_pos:
        raise ValueError(f"{what} must lie in 0..{n_pos - 1}, got {spec.tolist()}")
    return spec.long().cpu()


def position_mask(
    positions: Int[Tensor, " batch"] | None, batch: int, n_pos: int
) -> Bool[Tensor, "batch pos"]:
    """[batch, pos] True at each prompt's position (everywhere if ``positions`` is None)."""
    if positions is None:
        return torch.ones(batch, n_pos, dtype=torch.bool)
    mask = torch.zeros(batch, n_pos, dtype=torch.bool)
    mask[torch.arange(batch), positions] = True
    return mask
