"""What individual heads do: direct logit attribution, attention detectors, copying scores.

Four tools from Wang et al. (2022) for characterising heads, each model-generic:

* Direct logit attribution (DLA): each component's output at ``end``, through the final
  LayerNorm's cached scale, projected on the logit-difference direction ``W_U[IO] - W_U[S]``.
* Attention detectors on repeated random tokens: previous-token, duplicate-token and induction
  scores; plus attention between IOI word positions (e.g. ``end`` -> ``IO``).
* Copying scores (paper, section 3.3): does a head's OV circuit map a name to itself (or, for
  negative copying, to minus itself)?
* The name-mover scatter (paper, figure 3): attention from ``end`` to a name against the
  head output's projection on that name's unembedding.

Example:
    >>> _, cache = model.run_with_cache(ds.toks)
    >>> per_head = per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import einops
import plotly.graph_objects as go
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.dataset import IOIDataset
from ioi.templates import NAMES

DETECTOR_KINDS = ("previous_token", "duplicate_token", "induction")

# ---- direct logit attribution ------------------------------------------------------------


def logit_diff_directions(
    model: HookedTransformer, answer_tokens: Int[Tensor, "batch 2"]
) -> Float[Tensor, "batch d_model"]:
    """``W_U[:, correct] - W_U[:, incorrect]`` per prompt: the residual direction of the logit diff."""
    answers = answer_tokens.to(model.W_U.device)
    return (model.W_U[:, answers[:, 0]] - model.W_U[:, answers[:, 1]]).T


def _at_positions(
    stack: Float[Tensor, "*comp batch pos d_model"], positions: Int[Tensor, " batch"] | None
) -> Float[Tensor, "*comp batch d_model"]:
    """Each prompt's vector at its own position (the last position if None)."""
    if positions is None:
        return stack[..., -1, :]
    rows = torch.arange(stack.shape[-3], device=stack.device)
    return stack[..., rows, positions.to(stack.device), :]


def apply_final_ln(
    residual_stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*comp batch d_model"]:
    """Scale a stack of residual components by the final LayerNorm, at each prompt's position.

    Uses ``cache.apply_ln_to_stack`` (centre, then divide by the cached ``ln_final`` scale).
    Prompts that share a position are scaled together, since TransformerLens's position slice
    is one index for the whole batch.
    """
    shape = residual_stack.shape
    flat = residual_stack.reshape(-1, *shape[-2:])  # [comp, batch, d_model], as TL expects
    if positions is None:
        return cache.apply_ln_to_stack(flat, layer=-1, pos_slice=-1).reshape(shape)
    out = torch.empty_like(flat)
    positions = positions.cpu()
    for pos in positions.unique().tolist():
        rows = torch.nonzero(positions == pos).flatten()
        out[:, rows.to(out.device)] = cache.apply_ln_to_stack(
            flat, layer=-1, pos_slice=pos, batch_slice=rows
        )
    return out.reshape(shape)


def residual_stack_to_logit_diff(
    residual_stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    logit_diff_directions: Float[Tensor, "batch d_model"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*comp"]:
    """Mean logit difference each component of the stack writes, through the final LayerNorm.

    Args:
        residual_stack: components of the residual stream, already taken at ``positions``.
        cache: the run's cache (for the final LayerNorm's scale).
        logit_diff_directions: from `logit_diff_directions`.
        positions: each prompt's position the stack was taken at (``word_idx["end"]``); None
            means the last position.
    """
    scaled = apply_final_ln(residual_stack, cache, positions)
    per_prompt = einops.einsum(
        scaled,
        logit_diff_directions.to(scaled.device),
        "... batch d_model, batch d_model -> ... batch",
    )
    return per_prompt.mean(-1)


def head_results_at(
    model: HookedTransformer, cache: ActivationCache, positions: Int[Tensor, " batch"] | None
) -> Float[Tensor, "layer head batch d_model"]:
    """Every head's output (``z @ W_O``, no bias) at each prompt's position."""
    per_layer = []
    for layer in range(model.cfg.n_layers):
        z = cache[get_act_name("z", layer)]  # [batch, pos, head, d_head]
        rows = torch.arange(z.shape[0], device=z.device)
        at = z[:, -1] if positions is None else z[rows, positions.to(z.device)]
        per_layer.append(
            einops.einsum(
                at, model.W_O[layer], "batch head d_head, head d_head d_model -> head batch d_model"
            )
        )
    return torch.stack(per_layer)


@torch.no_grad()
def per_head_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "layer head"]:
    """Direct logit attribution of every head at ``positions`` (final LN scale applied)."""
    results = head_results_at(model, cache, positions)
    directions = logit_diff_directions(model, answer_tokens)
    return residual_stack_to_logit_diff(results, cache, directions, positions)


@torch.no_grad()
def per_layer_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> tuple[Float[Tensor, " comp"], list[str]]:
    """DLA of every block output (embeddings, each attention and MLP layer) and their labels."""
    stack, labels = cache.decompose_resid(layer=-1, return_labels=True)
    directions = logit_diff_directions(model, answer_tokens)
    values = residual_stack_to_logit_diff(
        _at_positions(stack, positions), cache, directions, positions
    )
    return values, labels


@torch.no_grad()
def accumulated_resid_logit_diffs(
    model: HookedTransformer,
    cache: ActivationCache,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> tuple[Float[Tensor, " comp"], list[str]]:
    """Logit difference read from the accumulated residual stream after each sub-layer."""
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=True, return_labels=True)
    directions = logit_diff_directions(model, answer_tokens)
    values = residual_stack_to_logit_diff(
        _at_positions(stack, positions), cache, directions, positions
    )
    return values, labels


# ---- attention detectors -----------------------------------------------------------------


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
            f"names must be non-empty and single tokens with a leading space; bad: {bad}"
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
        normed = model.blocks[layer].ln1(resid)  # the head reads its layer's LayerNorm
        for head in range(model.cfg.n_heads):
            out = normed @ model.W_V[layer, head] @ model.W_O[layer, head]  # [name, 1, d_model]
            logits = model.unembed(model.ln_final(-out if negative else out))[:, 0]
            top = logits.topk(k, dim=-1).indices  # [name, k]
            scores[layer, head] = (top == targets).any(-1).float().mean()
    return scores


# ---- the name-mover scatter --------------------------------------------------------------


@dataclass(frozen=True)
class NameMoverScatter:
    """Per prompt: attention from ``end`` to IO / S, and the head output's projection on each.

    ``attn_to_s`` adds the attention to both S tokens (S1 and S2).
    """

    layer: int
    head: int
    attn_to_io: Float[Tensor, " batch"]
    attn_to_s: Float[Tensor, " batch"]
    proj_io: Float[Tensor, " batch"]
    proj_s: Float[Tensor, " batch"]


@torch.no_grad()
def name_mover_scatter(
    model: HookedTransformer, ds: IOIDataset, layer: int, head: int
) -> NameMoverScatter:
    """Data for the paper's figure 3 for one head: attention vs. projection on the name's unembedding."""
    if not (0 <= layer < model.cfg.n_layers and 0 <= head < model.cfg.n_heads):
        raise ValueError(
            f"head {layer}.{head} is not in this model: layers 0..{model.cfg.n_layers - 1}, "
            f"heads 0..{model.cfg.n_heads - 1}"
        )
    names = [get_act_name("pattern", layer), get_act_name("z", layer)]
    _, cache = model.run_with_cache(
        ds.toks.to(model.cfg.device), names_filter=names, return_type=None
    )
    rows, end = torch.arange(ds.N), ds.word_idx["end"]
    pattern = cache[names[0]][:, head].cpu()  # [batch, dest, src]
    out = (
        cache[names[1]][:, :, head].cpu()[rows, end] @ model.W_O[layer, head].cpu()
    )  # [batch, d_model]
    W_U = model.W_U.cpu()
    return NameMoverScatter(
        layer=layer,
        head=head,
        attn_to_io=pattern[rows, end, ds.word_idx["IO"]],
        attn_to_s=pattern[rows, end, ds.word_idx["S1"]] + pattern[rows, end, ds.word_idx["S2"]],
        proj_io=(out * W_U[:, ds.io_tokenIDs].T).sum(-1),
        proj_s=(out * W_U[:, ds.s_tokenIDs].T).sum(-1),
    )


def plot_name_mover_scatter(data: NameMoverScatter) -> go.Figure:
    """Plotly scatter of `NameMoverScatter`: IO points and S points."""
    fig = go.Figure()
    for label, x, y in (("IO", data.attn_to_io, data.proj_io), ("S", data.attn_to_s, data.proj_s)):
        fig.add_trace(go.Scatter(x=x.tolist(), y=y.tolist(), mode="markers", name=label))
    fig.update_layout(
        title=f"Head {data.layer}.{data.head}: attention from end vs. output on the name's unembedding",
        xaxis_title="attention probability on the name",
        yaxis_title="dot product of head output with W_U[name]",
    )
    return fig
