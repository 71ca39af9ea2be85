"""Run a `HookedTransformer` from a layer to its logits, unembedding without a weight copy.

TransformerLens 3.9's ``Unembed.forward`` multiplies by ``W_U.T.contiguous()``: a fresh copy
of the whole unembedding matrix (154 MB for GPT-2) on every call. A patching sweep makes many
calls, and on a CPU that copy costs as much as unembedding a few dozen tokens. Here the blocks
and the final norm still run through the model's own modules (so hooks fire as usual), and the
unembedding is the same affine map computed straight from ``W_U`` (equal up to float rounding),
with ``unembed.hook_in``/``hook_out`` still called. Models whose unembed is not TransformerLens's
plain `Unembed` go through ``model.forward`` unchanged.
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.components import TransformerBlock, Unembed
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES
from transformer_lens.utilities import apply_softcap

from ioi.patching.blocks import (
    KEYS_CHANGED_IN_FORWARD,
    block_forward,
    mlp_out,
    norm,
    run_blocks,
)


def logits_from_layer(
    model: HookedTransformer,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    fused: bool = True,
    **kwargs,
) -> Float[Tensor, "batch pos d_vocab"]:
    """``model(resid, start_at_layer=layer, **kwargs)``, without copying ``W_U`` per call.

    ``fused`` runs the blocks with fused norms and activations (`ioi.patching.blocks`); False
    runs TransformerLens's own modules, bitwise what ``model(tokens)`` computes.
    """
    if type(model.unembed) is not Unembed:
        return model(resid, start_at_layer=layer, **kwargs)
    if fused:
        final = run_blocks(model, resid, layer, model.cfg.n_layers, **kwargs)
    else:
        final = model(resid, start_at_layer=layer, stop_at_layer=model.cfg.n_layers, **kwargs)
    if model.cfg.normalization_type is not None:
        final = norm(model.ln_final, final) if fused else model.ln_final(final)
    unembed = model.unembed
    x = unembed.hook_in(final)
    flat = torch.addmm(unembed.b_U, x.reshape(-1, x.shape[-1]), unembed.W_U)  # [batch*pos, d_vocab]
    logits = unembed.hook_out(flat.view(*x.shape[:-1], flat.shape[-1]))
    return apply_softcap(logits, model.cfg.output_logits_soft_cap)


def logits_at_rows(
    model: HookedTransformer,
    resid: Float[Tensor, "batch pos d_model"],
    layer: int,
    rows: Tensor,
    vocab: Int[Tensor, " vocab"] | None = None,
    **kwargs,
) -> Float[Tensor, "batch vocab"] | None:
    """Like `logits_from_layer`, but only the logits at position ``rows[b]`` of each sequence ``b``
    (and, if ``vocab`` is given, only for those token ids: columns ``vocab`` of the unembedding).

    Blocks before the last run on every position (later positions attend to earlier ones). In
    the last block only the keys and values are needed at every position: its queries, output
    projection and MLP, then the final norm and the unembedding, run on the picked rows alone
    (`last_block_at_rows`; where that does not apply the last block runs in full). The caller
    places these rows in a NaN-filled logits tensor, so a metric that reads a position it did
    not declare gets NaN, never a silently wrong number. Returns None where this shortcut does
    not apply (a non-standard unembed, or soft-capped logits), and the caller falls back to
    full logits.
    """
    if type(model.unembed) is not Unembed or model.cfg.output_logits_soft_cap > 0:
        return None
    last = model.cfg.n_layers - 1
    if layer <= last and last_block_shortcut_applies(model):
        before = resid
        if layer < last:
            before = run_blocks(model, resid, layer, last, **kwargs)
        cache = kwargs.get("past_kv_cache")
        picked = last_block_at_rows(
            model,
            before,
            rows,
            past_kv_cache_entry=None if cache is None else cache.entries[-1],
            attention_mask=kwargs.get("attention_mask"),
        )
    else:
        final = run_blocks(model, resid, layer, model.cfg.n_layers, **kwargs)
        index = torch.arange(final.shape[0], device=final.device)
        picked = final[index, rows].unsqueeze(1)  # [batch, 1, d_model]: the norm is per position
    if model.cfg.normalization_type is not None:
        picked = norm(model.ln_final, picked)
    W_U, b_U = model.unembed.W_U, model.unembed.b_U
    if vocab is not None:
        W_U, b_U = W_U[:, vocab], b_U[vocab]
    return torch.addmm(b_U, picked.squeeze(1), W_U)


def last_block_shortcut_applies(model: HookedTransformer) -> bool:
    """Whether `last_block_at_rows` reproduces the last block exactly for this model.

    It needs position-free attention (positions enter only through the embedding), keys and
    values that are exactly what the attention's projection returns, a plain `TransformerBlock`,
    and no hook anywhere in the last block (a hook there would see one row instead of all).
    """
    cfg = model.cfg
    block = model.blocks[-1]
    if (
        type(block) is not TransformerBlock
        or cfg.positional_embedding_type != "standard"
        or cfg.attention_dir != "causal"
        or cfg.use_split_qkv_input
        or cfg.use_attn_in
        or cfg.use_logn_attn
        or cfg.clip_qkv is not None
        or cfg.original_architecture in KEYS_CHANGED_IN_FORWARD
    ):
        return False
    return not any(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
        for module in block.modules()
    )


def last_block_at_rows(
    model: HookedTransformer,
    resid: Float[Tensor, "batch pos d_model"],
    rows: Int[Tensor, " batch"],
    past_kv_cache_entry: TransformerLensKeyValueCacheEntry | None = None,
    attention_mask: Int[Tensor, "batch all_pos"] | None = None,
) -> Float[Tensor, "batch 1 d_model"]:
    """The last block's output at position ``rows[b]`` of each sequence, computed for that row.

    Keys and values come from the block's own norm and attention projection at every position
    (after the last layer's ``past_kv_cache_entry`` prefix, if any). The block itself then runs on the single row,
    with those keys and values as its cache and a padding mask that hides every key after the
    row, so each row attends to exactly the keys it would attend to in a full pass.
    """
    block = model.blocks[-1]
    batch, n_new = resid.shape[:2]
    normed = norm(block.ln1, resid)
    _, keys, values = block.attn.calculate_qkv_matrices(normed[:, :1], normed, normed)
    n_prefix = 0
    if past_kv_cache_entry is not None:
        n_prefix = past_kv_cache_entry.past_keys.shape[1]
        keys = torch.cat([past_kv_cache_entry.past_keys, keys], dim=1)
        values = torch.cat([past_kv_cache_entry.past_values, values], dim=1)
    index = torch.arange(batch, device=resid.device)
    absolute = rows + n_prefix  # the row's position in the whole sequence
    positions = torch.arange(n_prefix + n_new, device=resid.device)
    earlier = positions[None, :] < absolute[:, None]  # the row's own key is appended by the block
    own = torch.ones(batch, 1, dtype=torch.bool, device=resid.device)
    if attention_mask is not None:
        padding = attention_mask[:, -(n_prefix + n_new) :].bool()
        earlier = earlier & padding
        own = padding[index, absolute].unsqueeze(1)
    mask = torch.cat([earlier, own], dim=1).long()
    cache_entry = TransformerLensKeyValueCacheEntry(keys, values, frozen=True)
    row = resid[index, rows].unsqueeze(1)  # [batch, 1, d_model]
    last = model.cfg.n_layers - 1
    return block_forward(model, last, row, past_kv_cache_entry=cache_entry, attention_mask=mask)


def block_after_z_applies(model: HookedTransformer, layer: int) -> bool:
    """Whether `block_after_z` reproduces block ``layer`` from its ``hook_z`` on exactly.

    It needs a plain `TransformerBlock` whose attention output is ``z @ W_O + b_O`` added to
    the residual before an ordinary MLP half (no attention-result hook, no norm after the
    attention or the MLP, no parallel attention and MLP, no 4-bit weights), and no hook on the
    block: its attention is not run, so a hook there would never fire.
    """
    cfg = model.cfg
    block = model.blocks[layer]
    if (
        type(block) is not TransformerBlock
        or cfg.attn_only
        or cfg.parallel_attn_mlp
        or cfg.use_attn_result
        or cfg.use_normalization_before_and_after
        or cfg.use_hook_mlp_in
        or cfg.load_in_4bit
        or cfg.original_architecture in POST_NORM_ARCHITECTURES
    ):
        return False
    return not any(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
        for module in block.modules()
    )


def block_after_z(
    model: HookedTransformer,
    layer: int,
    resid_pre: Float[Tensor, "batch pos d_model"],
    z: Float[Tensor, "batch pos head d_head"],
) -> Float[Tensor, "batch pos d_model"]:
    """Block ``layer``'s output given its input and its (patched) ``z``: the attention's output
    projection, the residual add and the MLP half, as `TransformerBlock.forward` computes them.

    A pass that patches heads' ``z`` at ``layer`` need not recompute that layer's queries,
    keys, values and pattern: they are the unpatched run's. Check `block_after_z_applies` first.
    """
    block = model.blocks[layer]
    attn = block.attn
    w = einops.rearrange(attn.W_O, "head d_head d_model -> d_model (head d_head)")
    flat_z = z.reshape(*z.shape[:2], -1)  # [batch, pos, head * d_head], head-major like w
    attn_out = block.hook_attn_out(F.linear(flat_z, w, attn.b_O))
    resid_mid = block.hook_resid_mid(resid_pre + attn_out)
    mlp = mlp_out(block, norm(block.ln2, resid_mid))  # calls hook_mlp_out itself
    return block.hook_resid_post(resid_mid + mlp)
