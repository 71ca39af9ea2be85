"""Where patched-in activations come from: another run, zeros, or a batch mean.

A source answers one question: "what value goes into hook ``name``?", as a tensor that
broadcasts against the activation of the run being patched ([batch, ...]).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from transformer_lens import ActivationCache


def _lookup(cache: ActivationCache | Mapping[str, Tensor], name: str, role: str) -> Tensor:
    try:
        return cache[name]
    except KeyError:
        raise ValueError(
            f"the {role} has no activation {name!r}; cache it with "
            f"model.run_with_cache(tokens) (or a names_filter that includes it)"
        ) from None


def check_cache(cache: object, role: str) -> None:
    """``cache`` must be an `ActivationCache` or a dict of hook name -> tensor (`TypeError`)."""
    if not isinstance(cache, ActivationCache | Mapping):
        raise TypeError(
            f"{role} must be an ActivationCache (from model.run_with_cache(tokens)) or a dict of "
            f"hook name -> tensor, got {type(cache).__name__}"
        )


@dataclass(frozen=True)
class RunSource:
    """Activations of another run on the same-shaped input (``clean_cache`` in TransformerLens)."""

    cache: ActivationCache | Mapping[str, Tensor]
    role: str = "source cache"

    def __post_init__(self) -> None:
        check_cache(self.cache, self.role)

    def value(self, name: str, like: Tensor) -> Tensor:
        """The source activation at ``name``; must have exactly ``like``'s shape."""
        value = _lookup(self.cache, name, self.role)
        if tuple(value.shape) != tuple(like.shape):
            raise ValueError(
                f"the {self.role} holds {name!r} with shape {tuple(value.shape)} but the run being "
                f"patched has shape {tuple(like.shape)}; both runs need the same batch size and "
                "sequence length"
            )
        return value.to(device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class ZeroSource:
    """Zero ablation: patched entries become 0."""

    def value(self, name: str, like: Tensor) -> Tensor:
        """A zero that broadcasts against any activation."""
        return torch.zeros((), device=like.device, dtype=like.dtype)


@dataclass(frozen=True)
class MeanSource:
    """Mean ablation: patched entries become the batch mean of a reference run, per position."""

    cache: ActivationCache | Mapping[str, Tensor]
    role: str = "mean-ablation cache"

    def __post_init__(self) -> None:
        check_cache(self.cache, self.role)

    def value(self, name: str, like: Tensor) -> Tensor:
        """The reference activation averaged over its batch, shape [1, ...]."""
        value = _lookup(self.cache, name, self.role)
        if tuple(value.shape[1:]) != tuple(like.shape[1:]):
            raise ValueError(
                f"the {self.role} holds {name!r} with shape {tuple(value.shape)}; it needs shape "
                f"[any batch, {', '.join(map(str, like.shape[1:]))}] (same sequence length)"
            )
        return value.to(device=like.device, dtype=like.dtype).mean(dim=0, keepdim=True)


Source = RunSource | ZeroSource | MeanSource
