"""Feature attributions per IOI word position instead of per absolute token position.

A node of `ioi.features.attribution.feature_attribution` is a feature at one token position, so
prompts of templates of different lengths do not line up: position 4 is the IO in one template
and a verb in another. `by_word_position` sums each prompt's shares over the positions that hold
the same IOI word (the dataset's ``word_idx``: ``IO``, ``S1``, ``S2``, ``end``, ``S1+1``, ...)
and puts every remaining position into ``"other"``. A node's ``pos`` is then an index into
`WordAttribution.positions`, and the same index means the same word in every template, so
circuits (`ioi.features.circuit.select_nodes`) and family comparisons
(`ioi.features.families.compare_families`) of different templates are comparable.

A position that is two words at once (in ``"Then, [B] and [A]"`` the token after S1 is the one
before IO) goes to the word that comes first in ``words``.

Edges and faithfulness (`ioi.features.circuit.edge_attribution`, `faithfulness`) patch token
positions, so they take nodes of a token-position attribution, not of a `WordAttribution`
(whose ``pos`` is a word index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from ioi.dataset import WORD_IDX_KEYS
from ioi.features.attribution import FeatureAttribution, FeatureNode

WORD_POSITIONS = ("IO", "S1", "S2", "end", "S1+1", "IO+1", "IO-1", "S1-1", "starts")
OTHER = "other"


@dataclass(frozen=True)
class WordAttribution(FeatureAttribution):
    """A `FeatureAttribution` whose position axis is IOI words (`positions`), not tokens.

    Attributes:
        positions: the word of each row of ``scores``: ``words`` then ``"other"``.
    """

    positions: tuple[str, ...] = ()

    def word(self, node: FeatureNode) -> str:
        """The IOI word of a node's position."""
        return self.positions[node.pos]

    def label(self, node: FeatureNode) -> str:
        """``hook[word].f12`` (or ``.error``)."""
        what = "error" if node.feature is None else f"f{node.feature}"
        return f"{node.hook}[{self.word(node)}].{what}"


def word_labels(
    word_idx: Mapping[str, Int[Tensor, " batch"]],
    n_pos: int,
    words: Sequence[str] = WORD_POSITIONS,
) -> Int[Tensor, "batch pos"]:
    """Each prompt's word index at each token position; ``len(words)`` means ``"other"``.

    Args:
        word_idx: the dataset's ``word_idx`` (`ioi.dataset.IOIDataset.word_idx`).
        n_pos: the number of token positions of the tokens attributed.
        words: which ``word_idx`` keys become positions, in order of precedence.
    """
    words = _check_words(word_idx, words)
    batch = len(word_idx[words[0]])
    labels = torch.full((batch, n_pos), len(words), dtype=torch.long)
    rows = torch.arange(batch)
    # Fill in reverse so the word earliest in ``words`` wins a shared position.
    for k in reversed(range(len(words))):
        where = word_idx[words[k]].long()
        if bool(((where < 0) | (where >= n_pos)).any()):
            raise ValueError(
                f"word_idx[{words[k]!r}] points outside the {n_pos} token positions; "
                "pass the word_idx of the dataset whose tokens were attributed"
            )
        labels[rows, where] = k
    return labels


def _check_words(word_idx: object, words: Sequence[str]) -> tuple[str, ...]:
    if not isinstance(word_idx, Mapping):
        raise TypeError(
            f"word_idx must be a dataset's word_idx dict, got {type(word_idx).__name__}"
        )
    if isinstance(words, str) or not words:
        raise ValueError(f"words must be a non-empty list of word_idx keys, got {words!r}")
    words = tuple(words)
    unknown = [w for w in words if w not in word_idx]
    if unknown or len(set(words)) != len(words):
        raise ValueError(
            f"words must be distinct keys of word_idx; unknown {unknown}, valid: "
            f"{', '.join(k for k in WORD_IDX_KEYS if k in word_idx)}"
        )
    return words


def by_word_position(
    attribution: FeatureAttribution,
    word_idx: Mapping[str, Int[Tensor, " batch"]],
    words: Sequence[str] = WORD_POSITIONS,
) -> WordAttribution:
    """Each node's effect summed per IOI word position, prompt by prompt.

    Args:
        attribution: from ``feature_attribution(..., per_prompt=True)`` on the dataset's tokens.
        word_idx: the dataset's ``word_idx``, one entry per prompt attributed.
        words: the word positions kept (the rest of the tokens are ``"other"``).

    Returns:
        A `WordAttribution`: ``scores[hook]`` is [word, d_sae + 1], the mean over prompts of
        each prompt's shares summed over the token positions holding that word, and
        ``per_prompt[hook]`` is [batch, word, d_sae + 1].
    """
    if attribution.per_prompt is None:
        raise ValueError(
            "the attribution has no per-prompt shares; compute it with "
            "feature_attribution(..., per_prompt=True)"
        )
    first = next(iter(attribution.per_prompt.values()))
    batch, n_pos, _ = first.shape
    labels = word_labels(word_idx, n_pos, words)
    if labels.shape[0] != batch:
        raise ValueError(f"word_idx has {labels.shape[0]} prompts, the attribution {batch}")
    n_words = len(words) + 1
    shares = {}
    for hook, table in attribution.per_prompt.items():
        out = torch.zeros(batch, n_words, table.shape[2], dtype=table.dtype)
        index = labels.to(table.device)[:, :, None].expand_as(table)  # [batch, pos, node]
        shares[hook] = out.to(table.device).scatter_add_(1, index, table)
    return WordAttribution(
        {hook: share.mean(0) for hook, share in shares.items()},
        attribution.method,
        attribution.steps,
        attribution.clean_metric,
        attribution.corrupted_metric,
        shares,
        positions=tuple(words) + (OTHER,),
    )
