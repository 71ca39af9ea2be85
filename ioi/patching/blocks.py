"""Transformer blocks with fused LayerNorms and GELUs: the same function, fewer passes over memory.

TransformerLens 3.9 writes ``LayerNorm`` as six elementwise steps (centre, square, mean, add,
root, divide, then scale and shift) and GPT-2's ``gelu_new`` as seven, each a full pass over its
activation. On a CPU those passes are memory-bound and cost nearly as much as the matrix products
of a block (``python -m ioi.bench patching --profile`` lists them). Here a block runs the same
computation with ``torch.nn.functional.layer_norm`` and ``torch.nn.functional.gelu``, one fused
kernel each, equal to TransformerLens's up to float rounding. Every hook point a block owns is
still called, so hooks fire as usual; a LayerNorm whose ``hook_scale`` or ``hook_normalized`` has
a hook (the fused kernel computes neither separately), and any block this module does not know
how to reproduce, runs through TransformerLens's own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.components import LayerNorm, TransformerBlock
from transformer_lens.components.mlps.mlp import MLP
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES
from transformer_lens.utilities.addmm import batch_addmm

# TransformerLens activation names -> the fused function computing the same values.
FUSED_ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
    "relu": F.relu,
}


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def norm(ln: nn.Module, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """``ln(x)``; a plain float32/64 `LayerNorm` without hooks on its scale or output is fused."""
    if (
        type(ln) is not LayerNorm
        or x.dtype not in (torch.float32, torch.float64)
        or ln.w.dtype != x.dtype
        or _has_hooks(ln)
        or _has_hooks(ln.hook_scale)
        or _has_hooks(ln.hook_normalized)
    ):
        return ln(x)
    return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, ln.eps)


def mlp_out(block: TransformerBlock, normed: Float[Tensor, "batch pos d_model"]) -> Tensor:
    """``block.apply_mlp(normed)`` (the MLP and ``hook_mlp_out``) with a fused activation."""
    mlp = block.mlp
    fused = FUSED_ACTIVATIONS.get(block.cfg.act_fn)
    if type(mlp) is not MLP or fused is None or block.cfg.use_normalization_before_and_after:
        return block.apply_mlp(normed)
    if _has_hooks(mlp):
        return block.apply_mlp(normed)
    pre = mlp.hook_pre(batch_addmm(mlp.b_in, mlp.W_in, normed))  # [batch, pos, d_mlp]
    post = mlp.hook_post(fused(pre))
    return block.hook_mlp_out(batch_addmm(mlp.b_out, mlp.W_out, post))


def fused_block_applies(model: HookedTransformer) -> bool:
    """Whether `block_forward` may replace ``TransformerBlock.forward`` for this model's blocks:
    pre-norm blocks with attention then MLP, no split or repeated attention inputs, one device."""
    cfg = model.cfg
    return not (
        cfg.attn_only
        or cfg.parallel_attn_mlp
        or cfg.use_attn_in
        or cfg.use_split_qkv_input
        or cfg.use_normalization_before_and_after
        or cfg.use_hook_mlp_in
        or cfg.n_devices != 1
        or cfg.original_architecture in POST_NORM_ARCHITECTURES
    )


def block_forward(
    model: HookedTransformer,
    layer: int,
    resid_pre: Float[Tensor, "batch pos d_model"],
    past_kv_cache_entry: TransformerLensKeyValueCacheEntry | None = None,
    attention_mask: Int[Tensor, "batch offset_pos"] | None = None,
    shortformer_pos_embed: Tensor | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """``model.blocks[layer](resid_pre, ...)``, with fused norms and activation where they apply."""
    block = model.blocks[layer]
    if type(block) is not TransformerBlock or not fused_block_applies(model) or _has_hooks(block):
        return block(
            resid_pre,
            shortformer_pos_embed=shortformer_pos_embed,
            past_kv_cache_entry=past_kv_cache_entry,
            attention_mask=attention_mask,
        )
    resid_pre = block.hook_resid_pre(resid_pre)
    normed = norm(block.ln1, resid_pre)
    qk_in = normed if shortformer_pos_embed is None else normed + shortformer_pos_embed
    attn = block.attn(
        query_input=qk_in,
        key_input=qk_in,
        value_input=normed,
        past_kv_cache_entry=past_kv_cache_entry,
        attention_mask=attention_mask,
    )
    resid_mid = block.hook_resid_mid(resid_pre + block.hook_attn_out(attn))
    return block.hook_resid_post(resid_mid + mlp_out(block, norm(block.ln2, resid_mid)))


def run_blocks(
    model: HookedTransformer,
    resid: Float[Tensor, "batch pos d_model"],
    start: int,
    stop: int,
    past_kv_cache: TransformerLensKeyValueCache | None = None,
    attention_mask: Int[Tensor, "batch offset_pos"] | None = None,
    shortformer_pos_embed: Tensor | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """``model(resid, start_at_layer=start, stop_at_layer=stop, ...)`` with `block_forward`."""
    for layer in range(start, stop):
        entry = past_kv_cache[layer] if past_kv_cache is not None else None
        resid = block_forward(model, layer, resid, entry, attention_mask, shortformer_pos_embed)
    return resid
