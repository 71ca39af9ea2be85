"""Direct logit attribution: what each component writes along the logit-difference direction.

Each component's output at ``end``, through the final LayerNorm's cached scale, projected on
the logit-difference direction ``W_U[IO] - W_U[S]`` (Wang et al. 2022): per head, per layer
(block outputs) and accumulated over the residual stream.

Example:
    >>> _, cache = model.run_with_cache(ds.toks)
    >>> per_head = per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"])
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.patching.sites import valid_components


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
    """Logit difference read from the accumulated residual stream after each sub-layer (after
    attention too, where the block has a residual between attention and MLP)."""
    incl_mid = "resid_mid" in valid_components(
        model.cfg
    )  # not in parallel or attention-only blocks
    stack, labels = cache.accumulated_resid(layer=-1, incl_mid=incl_mid, return_labels=True)
    directions = logit_diff_directions(model, answer_tokens)
    values = residual_stack_to_logit_diff(
        _at_positions(stack, positions), cache, directions, positions
    )
    return values, labels
