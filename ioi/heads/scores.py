"""What heads attend to and copy: attention detectors, IOI attention, copying scores.

* Attention detectors on repeated random tokens: previous-token, duplicate-token and induction
  scores; plus attention between IOI word positions (e.g. ``end`` -> ``IO``).
* Copying scores (Wang et al. 2022, section 3.3): does a head's OV circuit map a name to itself
  (or, for negative copying, to minus itself)?
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.dataset import IOIDataset
from ioi.templates import NAMES

DETECTOR_KINDS = ("previous_token", "duplicate_token", "induction")


def known_tokens(model: HookedTransformer) -> Int[Tensor, " vocab_sub"]:
    """Token ids with a non-zero embedding (every id for GPT-2; the used ones for the toy)."""
    return torch.nonzero(model.W_E.detach().abs().sum(-1) > 0).flatten().cpu()


def repeated_tokens(
    model: HookedTransformer,
    seq_len: int,
    batch: int,
    seed: int,
    vocab: Int[Tensor, " vocab_sub"] | None = None,
) -> Int[Tensor, "batch pos"]:
    """``[BOS, t_1..t_L, t_1..t_L]`` with random tokens from ``vocab`` (default `known_tokens`).

    Within a sequence the L tokens are distinct when the vocabulary allows, so that a token's
    only earlier copy is its planted duplicate.
    """
    if seq_len < 2 or batch < 1:
        raise ValueError(f"need seq_len >= 2 and batch >= 1, got {seq_len} and {batch}")
    vocab = known_tokens(model) if vocab is None else vocab.cpu()
    gen = torch.Generator().manual_seed(seed)
    if len(vocab) >= seq_len:
        picks = torch.stack(
            [torch.randperm(len(vocab), generator=gen)[:seq_len] for _ in range(batch)]
        )
    else:
        picks = torch.randint(0, len(vocab), (batch, seq_len), generator=gen)
    half = vocab[picks]  # [batch, seq_len]
    bos_id = model.tokenizer.bos_token_id if model.tokenizer is not None else 0
    bos = torch.full((batch, 1), bos_id if bos_id is not None else 0)
    return torch.cat([bos, half, half], dim=1)


def _detector_scores(
    pattern: Float[Tensor, "batch head pos pos"], seq_len: int
) -> dict[str, Float[Tensor, " head"]]:
    """Mean attention along the diagonals that define each detector."""
    dest = torch.arange(seq_len + 1, 2 * seq_len + 1)  # positions of the second copy
    return {
        "previous_token": pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, -1)),
        "duplicate_token": pattern[:, :, dest, dest - seq_len].mean((0, -1)),
        "induction": pattern[:, :, dest, dest - seq_len + 1].mean((0, -1)),
    }


def attention_detector_scores(
    model: HookedTransformer,
    seq_len: int = 20,
    batch: int = 16,
    seed: int = 0,
    vocab: Int[Tensor, " vocab_sub"] | None = None,
) -> dict[str, Float[Tensor, "layer head"]]:
    """Previous-token, duplicate-token and induction scores of every head, from one run.

    * previous-token: mean attention from each position to the one before it;
    * duplicate-token: from a token in the second copy to its earlier occurrence;
    * induction: from a token in the second copy to the token after its earlier occurrence.
    """
    toks = repeated_tokens(model, seq_len, batch, seed, vocab).to(model.cfg.device)
    names = [get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=names, return_type=None)
    per_layer = [_detector_scores(cache[name].cpu(), seq_len) for name in names]
    return {k: torch.stack([scores[k] for scores in per_layer]) for k in DETECTOR_KINDS}


def get_attn_scores(
    model: HookedTransformer, seq_len: int, batch: int, seed: int, kind: str
) -> Float[Tensor, "layer head"]:
    """One detector's [layer, head] scores on seeded repeated random tokens.

    Args:
        kind: ``"previous_token"``, ``"duplicate_token"`` or ``"induction"``.
    """
    if kind not in DETECTOR_KINDS:
        raise ValueError(f"unknown detector kind {kind!r}; choose one of {DETECTOR_KINDS}")
    return attention_detector_scores(model, seq_len, batch, seed)[kind]


def ioi_attention(
    model: HookedTransformer,
    ds: IOIDataset,
    dest: str,
    src: str,
    cache: ActivationCache | None = None,
) -> Float[Tensor, "layer head"]:
    """Mean attention probability from ``word_idx[dest]`` to ``word_idx[src]`` on IOI prompts."""
    for key in (dest, src):
        if key not in ds.word_idx:
            raise ValueError(f"unknown word_idx key {key!r}; valid keys: {sorted(ds.word_idx)}")
    if cache is None:
        names = [get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)]
        with torch.no_grad():
            _, cache = model.run_with_cache(
                ds.toks.to(model.cfg.device), names_filter=names, return_type=None
            )
    rows = torch.arange(ds.N)
    d, s = ds.word_idx[dest], ds.word_idx[src]
    return torch.stack(
        [
            cache[get_act_name("pattern", layer)].cpu()[rows, :, d, s].mean(0)
            for layer in range(model.cfg.n_layers)
        ]
    )


# ---- copying scores ----------------------------------------------------------------------


def name_tokens(
    model: HookedTransformer, names: Sequence[str] | None = None
) -> Int[Tensor, " name"]:
    """Token ids of ``" " + name`` (default: the IOI names); every name must be one token."""
    names = list(NAMES if names is None else names)
    ids = [model.tokenizer.encode(" " + n, add_special_tokens=False) for n in names]
    bad = [n for n, i in zip(names, ids, strict=True) if len(i) != 1]
    if bad or not names:
        raise ValueError(
            f"names must be non-empty and single tokens with a leading space; bad: {bad} "
            "(for another tokenizer, pass the names an IOIDataset kept: names=ds.names)"
        )
    return torch.tensor([i[0] for i in ids])


def name_embeddings_after_mlp0(
    model: HookedTransformer, tokens: Int[Tensor, " name"]
) -> Float[Tensor, "name 1 d_model"]:
    """Token embedding plus block 0's MLP applied to it: GPT-2 uses MLP0 as an extended embedding."""
    embed = model.embed(tokens[:, None].to(model.cfg.device))  # [name, 1, d_model]
    if model.cfg.attn_only:
        return embed
    return embed + model.blocks[0].apply_mlp(model.blocks[0].ln2(embed))


@torch.no_grad()
def get_copying_scores(
    model: HookedTransformer,
    names: Sequence[str] | Int[Tensor, " name"] | None = None,
    k: int = 5,
    negative: bool = False,
) -> Float[Tensor, "layer head"]:
    """Fraction of names each head's OV circuit copies into the top-``k`` logits (paper, 3.3).

    For every head: name embedding + MLP0 -> the head's layer's LayerNorm -> ``W_V @ W_O`` (the
    OV circuit, negated if ``negative``) -> final LayerNorm -> unembedding; the score is the
    fraction of names whose own token is among the ``k`` largest logits.

    Args:
        names: strings (single tokens with a leading space), token ids, or None (IOI names).
        k: how many top logits count as "copied".
        negative: score negative copying (the negated OV output), as for negative name movers.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    tokens = names if isinstance(names, Tensor) else name_tokens(model, names)
    resid = name_embeddings_after_mlp0(model, tokens)
    scores = torch.zeros(model.cfg.n_layers, model.cfg.n_heads)
    targets = tokens.to(resid.device)[:, None]  # [name, 1]
    for layer in range(model.cfg.n_layers):
        normed = model.blocks[layer].ln1(resid)[:, 0]  # the head reads its layer's LayerNorm
        # every head of the layer at once: [head, name, d_model], unembedded as one batch
        out = (normed[None] @ model.W_V[layer]) @ model.W_O[layer]
        logits = model.unembed(model.ln_final(-out if negative else out))  # [head, name, vocab]
        top = logits.topk(k, dim=-1).indices  # [head, name, k]
        scores[layer] = (top == targets[None]).any(-1).float().mean(-1).cpu()
    return scores
