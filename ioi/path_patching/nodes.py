"""Senders and receivers: what path patching reads from and writes into.

A `Sender` is a component whose output takes its value from the *corrupted* run (a head's
``hook_z`` or an MLP's ``hook_mlp_out``). A `Receiver` is one input (``q``, ``k`` or ``v``) of one
head, which is recomputed with the sender patched and then written into an otherwise unchanged
clean run.

The datasets' tokens and where senders and receivers are patched come from
`ioi.path_patching.positions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from transformer_lens import HookedTransformer
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from ioi.head import Head, HeadLike

SENDER_KINDS = ("head", "mlp")
RECEIVER_INPUTS = ("q", "k", "v")


def _check_index(value: object, what: str, size: int, axis: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
        raise ValueError(f"{what} must be an int in 0..{size - 1} ({size} {axis}), got {value!r}")


@dataclass(frozen=True)
class Sender:
    """A component whose output is patched from the corrupted run: a head or an MLP.

    Args:
        kind: ``"head"`` (its ``hook_z``) or ``"mlp"`` (its ``hook_mlp_out``).
        layer: block index.
        head: head index for ``kind="head"``; must be None for ``"mlp"``.

    Example:
        >>> Sender("head", 9, 9), Sender("mlp", 0)
        (Sender(kind='head', layer=9, head=9), Sender(kind='mlp', layer=0, head=None))
    """

    kind: str
    layer: int
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SENDER_KINDS:
            raise ValueError(f"unknown sender kind {self.kind!r}; choose one of {SENDER_KINDS}")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise ValueError(f"sender layer must be an int >= 0, got {self.layer!r}")
        if self.kind == "head" and (
            isinstance(self.head, bool) or not isinstance(self.head, int) or self.head < 0
        ):
            raise ValueError(f"a head sender needs head=int >= 0, got {self.head!r}")
        if self.kind == "mlp" and self.head is not None:
            raise ValueError(f"an MLP sender has no head; use head=None, got {self.head!r}")

    def check(self, model: HookedTransformer) -> None:
        """Raise ValueError if this sender does not exist in ``model``."""
        _check_index(self.layer, "sender layer", model.cfg.n_layers, "layers")
        if self.kind == "head":
            _check_index(self.head, "sender head", model.cfg.n_heads, "heads")
        elif model.cfg.attn_only:
            raise ValueError("this model is attention-only: it has no MLP senders")


@dataclass(frozen=True)
class Receiver:
    """One input (``"q"``, ``"k"`` or ``"v"``) of one attention head.

    Example:
        >>> Receiver(9, 9, "q")
        Receiver(layer=9, head=9, input='q')
    """

    layer: int
    head: int
    input: str

    def __post_init__(self) -> None:
        if self.input not in RECEIVER_INPUTS:
            raise ValueError(
                f"unknown receiver input {self.input!r}; choose one of {RECEIVER_INPUTS}"
            )
        for what, value in (("receiver layer", self.layer), ("receiver head", self.head)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{what} must be an int >= 0, got {value!r}")

    def check(self, model: HookedTransformer) -> None:
        """Raise ValueError if this head does not exist in ``model``."""
        _check_index(self.layer, "receiver layer", model.cfg.n_layers, "layers")
        _check_index(self.head, "receiver head", model.cfg.n_heads, "heads")


def make_receivers(
    receiver_heads: Sequence[HeadLike], receiver_input: str | Sequence[str]
) -> list[Receiver]:
    """Receivers for every (layer, head) in ``receiver_heads`` and every input named.

    Args:
        receiver_heads: heads in any form `ioi.head.Head.coerce` takes: ``(9, 6)``, ``"9.6"``,
            a `Head`.
        receiver_input: ``"q"``, ``"k"``, ``"v"`` or several of them.

    Raises:
        ValueError: no heads, a malformed head, or an unknown input.
        TypeError: a head that is not a pair of ints or a label (``(1.9, 0)`` is refused, not
            rounded down).
    """
    inputs = (receiver_input,) if isinstance(receiver_input, str) else tuple(receiver_input)
    heads = list(receiver_heads)
    if not heads or not inputs:
        raise ValueError(
            "path patching to heads needs at least one receiver head, e.g. [(9, 9)], and one "
            f"receiver input from {RECEIVER_INPUTS}"
        )
    receivers = []
    for item in heads:
        head = Head.coerce(item)  # refuses (1.9, 0), (True, 0), "9,6", ...
        receivers.extend(Receiver(head.layer, head.head, i) for i in inputs)
    return list(dict.fromkeys(receivers))  # drop repeats, keep order


def check_sender(model: HookedTransformer, sender: object) -> None:
    """``sender`` is a `Sender` that exists in ``model`` (TypeError, ValueError otherwise)."""
    if not isinstance(sender, Sender):
        raise TypeError(
            "a sender is a Sender, e.g. Sender('head', 0, 1) or Sender('mlp', 0) (or "
            f"all_head_senders(model)), got {type(sender).__name__} {sender!r}"
        )
    sender.check(model)


def _stop(model: HookedTransformer, below_layer: object) -> int:
    """The layer the senders stop before: ``below_layer`` in 0..n_layers, or all if None."""
    if below_layer is None:
        return model.cfg.n_layers
    n = model.cfg.n_layers
    if (
        isinstance(below_layer, bool)
        or not isinstance(below_layer, int)
        or not 0 <= below_layer <= n
    ):
        raise ValueError(
            f"below_layer must be None (every layer) or an int in 0..{n} (the senders in the "
            f"layers below it), got {below_layer!r}"
        )
    return below_layer


def all_head_senders(model: HookedTransformer, below_layer: int | None = None) -> list[Sender]:
    """Every head as a sender, layer-major, optionally only layers < ``below_layer``."""
    stop = _stop(model, below_layer)
    return [Sender("head", lay, h) for lay in range(stop) for h in range(model.cfg.n_heads)]


def all_mlp_senders(model: HookedTransformer, below_layer: int | None = None) -> list[Sender]:
    """Every MLP as a sender, optionally only layers < ``below_layer``."""
    stop = _stop(model, below_layer)
    return [Sender("mlp", lay) for lay in range(stop)]


def check_supported(model: HookedTransformer) -> None:
    """Raise ValueError if the model's block layout is not the pre-norm GPT-2 layout.

    The fast engine reproduces a block by hand (attention output added, then the MLP on the
    second LayerNorm of the sum, or of the block's input in a parallel block), so architectures
    that differ from that are refused. Grouped-query attention needs its hooks ungrouped
    (``cfg.ungroup_grouped_query_attention``, as `ioi.models.load_model` sets it), so that every
    head has its own k and v to patch.
    """
    cfg = model.cfg
    problems = []
    if getattr(cfg, "use_normalization_before_and_after", False):
        problems.append("LayerNorm before and after each sublayer")
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        problems.append(f"post-norm architecture {cfg.original_architecture}")
    if cfg.n_key_value_heads is not None and not cfg.ungroup_grouped_query_attention:
        problems.append(
            "grouped-query attention with grouped hooks (set "
            "model.cfg.ungroup_grouped_query_attention = True)"
        )
    if cfg.positional_embedding_type == "shortformer":
        problems.append("shortformer positional embeddings")
    if getattr(cfg, "output_logits_soft_cap", -1.0) > 0:
        problems.append("soft-capped logits")
    if problems:
        raise ValueError(
            "path patching supports pre-norm GPT-2-style blocks (LN/LNPre/RMS, absolute or "
            "rotary positions, sequential or parallel attention and MLP, one k and v per head); "
            f"this model has: {', '.join(problems)}"
        )
