"""The edge graph: which component outputs feed which component inputs through the residual stream.

Senders write into the residual stream: the embeddings (token and position together, one node),
each head's output and each MLP's output. Receivers read from it: each head's q, k and v input,
each MLP's input and the logits (the final residual). An edge ``u -> v`` exists when ``u`` is
written before ``v`` reads: the embeddings feed everything; heads of layer L feed MLP L (unless
attention and MLP run in parallel) and every later layer; MLP L feeds layer L + 1 onwards; every
sender feeds the logits.

With ``split_positions`` (a label -> [batch] position tensor map, e.g. the IOI word positions)
every edge is repeated once per label and reads and writes only at that position of each prompt
(the residual stream is position-wise, so an edge never crosses positions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.head import Head

SENDER_KINDS = ("embed", "head", "mlp")
RECEIVER_KINDS = ("q", "k", "v", "mlp", "logits")


def _index(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")


@dataclass(frozen=True, order=True)
class EdgeSender:
    """A writer into the residual stream: ``"embed"``, ``"head"`` (layer, head) or ``"mlp"`` (layer).

    ``str``: ``"embed"``, ``"a5.1"`` (head 5.1's output), ``"m3"`` (MLP 3's output).
    """

    kind: str
    layer: int = 0
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SENDER_KINDS:
            raise ValueError(f"unknown sender kind {self.kind!r}; choose one of {SENDER_KINDS}")
        _index(self.layer, "sender layer")
        if self.kind == "head":
            _index(self.head, "a head sender's head")
        elif self.head is not None:
            raise ValueError(f"a {self.kind!r} sender has no head; got head={self.head!r}")
        if self.kind == "embed" and self.layer != 0:
            raise ValueError(f"the embedding sender has layer 0, got {self.layer!r}")

    @property
    def writes_before(self) -> float:
        """Where in the forward pass it writes: layer L's attention at L, its MLP at L + 0.5."""
        return {"embed": -1.0, "head": float(self.layer), "mlp": self.layer + 0.5}[self.kind]

    def __str__(self) -> str:
        if self.kind == "embed":
            return "embed"
        if self.kind == "head":
            return f"a{Head(self.layer, self.head)}"
        return f"m{self.layer}"


@dataclass(frozen=True, order=True)
class EdgeReceiver:
    """A reader of the residual stream: a head's ``"q"``/``"k"``/``"v"`` input, an ``"mlp"``'s
    input, or the ``"logits"``.

    ``str``: ``"9.9.q"``, ``"m4"``, ``"logits"``.
    """

    kind: str
    layer: int = 0
    head: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in RECEIVER_KINDS:
            raise ValueError(f"unknown receiver kind {self.kind!r}; choose one of {RECEIVER_KINDS}")
        _index(self.layer, "receiver layer")
        if self.kind in ("q", "k", "v"):
            _index(self.head, f"a {self.kind!r} receiver's head")
        elif self.head is not None:
            raise ValueError(f"a {self.kind!r} receiver has no head; got head={self.head!r}")
        if self.kind == "logits" and self.layer != 0:
            raise ValueError(f"the logits receiver has layer 0, got {self.layer!r}")

    def reads_at(self, model: HookedTransformer) -> float:
        """Where it reads: layer L's attention at L, its MLP at L + 0.5 (L in parallel blocks)."""
        if self.kind == "logits":
            return float(model.cfg.n_layers)
        if self.kind == "mlp":
            return self.layer + (0.0 if model.cfg.parallel_attn_mlp else 0.5)
        return float(self.layer)

    def __str__(self) -> str:
        if self.kind == "logits":
            return "logits"
        if self.kind == "mlp":
            return f"m{self.layer}"
        return f"{Head(self.layer, self.head)}.{self.kind}"


@dataclass(frozen=True, order=True)
class Edge:
    """``sender -> receiver``, optionally at one labelled position (``pos``)."""

    sender: EdgeSender
    receiver: EdgeReceiver
    pos: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sender, EdgeSender) or not isinstance(self.receiver, EdgeReceiver):
            raise TypeError(
                "an Edge joins an EdgeSender and an EdgeReceiver, got "
                f"{type(self.sender).__name__} and {type(self.receiver).__name__}"
            )

    def __str__(self) -> str:
        at = "" if self.pos is None else f" @{self.pos}"
        return f"{self.sender} -> {self.receiver}{at}"


def check_edge(model: HookedTransformer, edge: Edge) -> None:
    """Raise ValueError unless both ends exist in ``model`` and the sender writes before the
    receiver reads."""
    cfg = model.cfg
    for end, what in ((edge.sender, "sender"), (edge.receiver, "receiver")):
        if end.kind != "logits" and end.layer >= cfg.n_layers:
            raise ValueError(
                f"edge {edge}: {what} layer {end.layer} is outside 0..{cfg.n_layers - 1}"
            )
        if end.head is not None and end.head >= cfg.n_heads:
            raise ValueError(f"edge {edge}: {what} head {end.head} is outside 0..{cfg.n_heads - 1}")
        if end.kind == "mlp" and cfg.attn_only:
            raise ValueError(f"edge {edge}: this model is attention-only and has no MLPs")
    if edge.sender.writes_before >= edge.receiver.reads_at(model):
        raise ValueError(
            f"edge {edge}: its sender does not write before its receiver reads (a sender feeds "
            "only receivers in later layers, heads of layer L also MLP L, MLP L layer L + 1 on)"
        )


def all_senders(model: HookedTransformer) -> list[EdgeSender]:
    """Every sender in forward order: embed, then each layer's heads and its MLP."""
    cfg = model.cfg
    out = [EdgeSender("embed")]
    for layer in range(cfg.n_layers):
        out += [EdgeSender("head", layer, h) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            out.append(EdgeSender("mlp", layer))
    return out


def all_receivers(model: HookedTransformer) -> list[EdgeReceiver]:
    """Every receiver in forward order: each layer's q, k, v inputs and its MLP, then logits."""
    cfg = model.cfg
    out = []
    for layer in range(cfg.n_layers):
        out += [EdgeReceiver(i, layer, h) for i in ("q", "k", "v") for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            out.append(EdgeReceiver("mlp", layer))
    return [*out, EdgeReceiver("logits")]


def _check_positions(
    positions: Mapping[str, Tensor] | None,
) -> dict[str, Tensor] | None:
    if positions is None:
        return None
    if not isinstance(positions, Mapping) or not positions:
        raise ValueError(
            "split_positions is None or a non-empty mapping label -> [batch] int tensor, e.g. "
            "{'S2': dataset.word_idx['S2'], 'end': dataset.word_idx['end']}"
        )
    out = {}
    for label, pos in positions.items():
        if not isinstance(label, str):
            raise TypeError(f"split_positions labels are str, got {type(label).__name__}")
        pos = torch.as_tensor(pos)
        if pos.ndim != 1 or pos.dtype.is_floating_point or pos.dtype == torch.bool:
            raise ValueError(
                f"split_positions[{label!r}] must be a [batch] int tensor (one position per "
                f"prompt), got dtype {pos.dtype} shape {tuple(pos.shape)}"
            )
        out[label] = pos.long()
    return out


@dataclass(frozen=True)
class EdgeGraph:
    """Every edge of a model, in a fixed order (sender-major), and the positions they live at.

    Attributes:
        edges: the edges; scores are tensors aligned with this tuple.
        positions: None (each edge covers every position) or label -> [batch] positions.
    """

    edges: tuple[Edge, ...]
    positions: dict[str, Tensor] | None = None
    _index: dict[Edge, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "edges", tuple(self.edges))  # a list compares unequal to a tuple
        for i, edge in enumerate(self.edges):
            if not isinstance(edge, Edge):
                raise TypeError(
                    f"an EdgeGraph holds Edge objects, got {type(edge).__name__} {edge!r} at "
                    f"index {i}; build one with EdgeGraph.from_model(model) or from its edges"
                )
            if self._index.setdefault(edge, i) != i:
                raise ValueError(
                    f"edge {edge} appears twice in the graph (at {self._index[edge]} and {i}); "
                    "each edge is scored once, so give it once"
                )

    @classmethod
    def from_model(
        cls,
        model: HookedTransformer,
        split_positions: Mapping[str, Int[Tensor, " batch"]] | None = None,
    ) -> EdgeGraph:
        """Every edge of ``model`` (see the module docstring), once per position label if split.

        Example:
            >>> graph = EdgeGraph.from_model(model)  # GPT-2 small: 32,491 edges
            >>> str(graph.edges[0])
            'embed -> 0.0.q'
        """
        positions = _check_positions(split_positions)
        labels = [None] if positions is None else list(positions)
        receivers = all_receivers(model)
        edges = [
            Edge(s, r, pos)
            for s in all_senders(model)
            for r in receivers
            if s.writes_before < r.reads_at(model)
            for pos in labels
        ]
        return cls(tuple(edges), positions)

    def __len__(self) -> int:
        return len(self.edges)

    def index(self, edge: Edge) -> int:
        """The edge's place in ``edges``; ValueError naming it if the graph lacks it."""
        try:
            return self._index[edge]
        except KeyError:
            raise ValueError(f"edge {edge} is not in this graph") from None

    def subset(self, edges) -> EdgeGraph:
        """A graph of some of these edges (same positions), in the order given."""
        edges = tuple(edges)
        for e in edges:
            self.index(e)
        return EdgeGraph(edges, self.positions)
