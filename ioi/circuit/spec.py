"""A circuit: classes of heads, and the position at which each class is kept.

Wang et al. (2022) describe the IOI circuit as classes of heads (name movers, S-inhibition,
induction, ...) and, for the mean-ablation experiments, the one position where each class
acts (``end`` for the heads that read or write the answer, ``S2`` for the heads that detect
the repeated name, ``S1+1`` for previous-token heads). `Circuit` holds exactly that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from transformer_lens import HookedTransformer

from ioi.dataset import WORD_IDX_KEYS
from ioi.head import Head, HeadLike
from ioi.reference import reference_figures

PAPER_CLASSES = (
    "name_mover",
    "negative_name_mover",
    "backup_name_mover",
    "s_inhibition",
    "induction",
    "duplicate_token",
    "previous_token",
)


@dataclass(frozen=True)
class Circuit:
    """Classes of heads and the ``word_idx`` position each class is kept at.

    Args:
        heads: class name -> heads, each a `Head`, a ``(layer, head)`` pair or a ``"layer.head"``
            label (stored as `Head` values).
        positions: class name -> a ``word_idx`` key (``"end"``, ``"S2"``, ``"S1+1"``, ...).
        name: a label for reports.

    A head may sit in several classes; it is then kept at each of their positions.

    Raises:
        ValueError: no heads, a class without a position (or the reverse), an unknown
            position key (the valid keys are listed), or a malformed head.
        TypeError: a head that is neither a label nor a pair of ints (see `Head.coerce`).

    Example:
        >>> circuit = Circuit({"name_mover": ["9.9", "9.6"]}, {"name_mover": "end"})
        >>> [str(h) for h in circuit.all_heads()]
        ['9.6', '9.9']
    """

    heads: Mapping[str, Sequence[HeadLike]]
    positions: Mapping[str, str]
    name: str = field(default="")

    def __post_init__(self) -> None:
        heads = {
            str(c): tuple(dict.fromkeys(Head.coerce(h) for h in hs)) for c, hs in self.heads.items()
        }
        heads = {c: hs for c, hs in heads.items() if hs}
        if not heads:
            raise ValueError("a circuit needs at least one head in at least one class")
        missing = sorted(set(heads) - set(self.positions))
        extra = sorted(set(self.positions) - set(self.heads))
        if missing or extra:
            raise ValueError(
                f"every class needs exactly one position: classes without a position {missing}, "
                f"positions for unknown classes {extra}"
            )
        bad = {c: p for c, p in self.positions.items() if p not in WORD_IDX_KEYS}
        if bad:
            raise ValueError(f"unknown position keys {bad}; valid keys: {', '.join(WORD_IDX_KEYS)}")
        positions = {c: self.positions[c] for c in heads}
        object.__setattr__(self, "heads", MappingProxyType(heads))
        object.__setattr__(self, "positions", MappingProxyType(positions))

    def all_heads(self) -> tuple[Head, ...]:
        """Every head in the circuit, sorted, once."""
        return tuple(sorted({h for hs in self.heads.values() for h in hs}))

    def __len__(self) -> int:
        return len(self.all_heads())

    def kept_positions(self) -> dict[Head, tuple[str, ...]]:
        """head -> the position keys it is kept at (one per class it belongs to)."""
        out: dict[Head, tuple[str, ...]] = {}
        for cls, hs in self.heads.items():
            for h in hs:
                if self.positions[cls] not in out.get(h, ()):
                    out[h] = out.get(h, ()) + (self.positions[cls],)
        return out

    def classes_of(self, head: tuple[int, int]) -> tuple[str, ...]:
        """The classes ``head`` belongs to."""
        return tuple(c for c, hs in self.heads.items() if head in hs)

    def check(self, model: HookedTransformer) -> None:
        """Raise ValueError if a head is not in ``model``."""
        n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
        bad = [str(h) for h in self.all_heads() if h.layer >= n_layers or h.head >= n_heads]
        if bad:
            raise ValueError(
                f"heads {', '.join(bad)} are not in this model (layers 0..{n_layers - 1}, heads 0..{n_heads - 1})"
            )

    def without(self, removed: Iterable[tuple[int, int]]) -> dict[Head, tuple[str, ...]]:
        """The kept positions of ``C \\ K`` (may be empty: then every head is ablated)."""
        removed = set(removed)
        return {h: p for h, p in self.kept_positions().items() if h not in removed}

    def describe(self) -> str:
        """One line per class: ``name_mover @end: 9.9 9.6``."""
        return "\n".join(
            f"{c} @{self.positions[c]}: " + " ".join(map(str, hs)) for c, hs in self.heads.items()
        )


def gpt2_small_circuit() -> Circuit:
    """The published GPT-2 small IOI circuit (Wang et al. 2022, figure 2), from the reference file."""
    paper = reference_figures()["paper"]
    return Circuit(
        heads={c: tuple(paper["circuit"][c]) for c in PAPER_CLASSES},
        positions={c: paper["positions_kept_in_mean_ablation"][c] for c in PAPER_CLASSES},
        name="GPT-2 small (Wang et al. 2022)",
    )
