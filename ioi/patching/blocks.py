"""Transformer blocks with fused LayerNorms, GELUs and softmax: the same function, less time.

TransformerLens 3.9 writes ``LayerNorm`` as six elementwise steps (centre, square, mean, add,
root, divide, then scale and shift) and GPT-2's ``gelu_new`` as seven, each a full pass over its
activation. On a CPU those passes are memory-bound and cost nearly as much as the matrix products
of a block (``python -m ioi.bench patching --profile`` lists them). Here a block runs the same
computation with ``torch.nn.functional.layer_norm`` and ``torch.nn.functional.gelu``, one fused
kernel each, equal to TransformerLens's up to float rounding. Its attention (`attention`) takes
the softmax as ``exp(s - max) / sum``: PyTorch's CPU softmax over rows as short as an IOI prompt
is slow (scores of shape [200, 12, 14, 14] on a 2-core CPU: 3.6 ms, against 1.3 ms for those
steps), and in a narrow model that softmax is the largest single cost of a block. Every hook point a block owns is still called, so hooks
fire as usual; a LayerNorm whose ``hook_scale`` or ``hook_normalized`` has a hook, an attention
with a hook on its scores or pattern (the fused versions compute neither as TransformerLens
does), and any block this module does not know how to reproduce, run through TransformerLens's
own modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.components import Attention, LayerNorm, LayerNormPre, TransformerBlock
from transformer_lens.components.mlps.mlp import MLP
from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES
from transformer_lens.utilities import softcap_enabled
from transformer_lens.utilities.addmm import batch_addmm

# Architectures whose attention changes keys inside `forward`, after ``hook_k``: neither the
# fused attention here nor `ioi.patching.tail.last_block_at_rows` reproduces them.
KEYS_CHANGED_IN_FORWARD = {"OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"}

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
    """``ln(x)``; a plain float32/64 `LayerNorm`, or a `LayerNormPre` (the norm whose scale and
    shift were folded into the next weights, as ``from_pretrained`` loads GPT-2), without hooks
    on its scale or output, is fused."""
    if (
        type(ln) not in (LayerNorm, LayerNormPre)
        or x.dtype not in (torch.float32, torch.float64)
        or x.dtype != ln.cfg.dtype
        or _has_hooks(ln)
        or _has_hooks(ln.hook_scale)
        or _has_hooks(ln.hook_normalized)
    ):
        return ln(x)
    if type(ln) is LayerNormPre:
        return F.layer_norm(x, (x.shape[-1],), None, None, ln.eps)
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


def attention_fuses(attn: nn.Module) -> bool:
    """Whether `attention` may compute ``attn``'s output itself: TransformerLens's plain
    `Attention` (causal, global, learned or shortformer positions, float32/64 weights, no
    soft cap, sinks, query/key norm, clamp, log-n scaling, 4-bit weights or per-head results)
    with no hook on the module, its scores or its pattern."""
    cfg = attn.cfg
    return (
        type(attn) is Attention
        and (attn._attention_dir_override or cfg.attention_dir) == "causal"
        and attn.attn_type == "global"
        and cfg.positional_embedding_type in ("standard", "shortformer")
        and attn.W_Q.dtype in (torch.float32, torch.float64)
        and not softcap_enabled(cfg.attn_scores_soft_cap)
        and not (
            cfg.use_attention_sinks
            or cfg.load_in_4bit
            or cfg.use_attn_result
            or cfg.use_qk_norm
            or cfg.use_logn_attn
            or cfg.use_split_qkv_input
            or cfg.use_attn_in
        )
        and cfg.clip_qkv is None
        and cfg.original_architecture not in KEYS_CHANGED_IN_FORWARD
        and not any(_has_hooks(m) for m in (attn, attn.hook_attn_scores, attn.hook_pattern))
    )


def attention(
    attn: nn.Module,
    query_input: Float[Tensor, "batch pos d_model"],
    key_input: Float[Tensor, "batch pos d_model"],
    value_input: Float[Tensor, "batch pos d_model"],
    past_kv_cache_entry: TransformerLensKeyValueCacheEntry | None = None,
    attention_mask: Int[Tensor, "batch offset_pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """``attn(query_input, key_input, value_input, ...)``, TransformerLens's attention, with the
    softmax as ``exp(s - max) / sum`` where `attention_fuses` (else the module itself runs).

    Queries, keys and values come from the module's own projection (``hook_q``/``hook_k``/
    ``hook_v`` fire), a key-value cache entry appends to the keys and values as in
    TransformerLens, the causal and padding masks are TransformerLens's, a pattern row with no
    key to attend to is 0 (TransformerLens turns its NaN into 0 too), and ``hook_z`` fires.
    """
    if not attention_fuses(attn):
        return attn(
            query_input=query_input,
            key_input=key_input,
            value_input=value_input,
            past_kv_cache_entry=past_kv_cache_entry,
            attention_mask=attention_mask,
        )
    q, k, v = attn.calculate_qkv_matrices(query_input, key_input, value_input)
    offset = 0
    if past_kv_cache_entry is not None:
        offset = past_kv_cache_entry.past_keys.size(1)
        k, v = past_kv_cache_entry.append(k, v)
    scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / attn.attn_scale  # [b, h, q, k]
    n_query, n_key = scores.shape[-2:]
    if n_query + offset != n_key:
        raise ValueError(
            f"{n_query} query positions after a cache of {offset} need {n_query + offset} "
            f"keys, got {n_key}"
        )
    mask = attn._make_causal_mask(n_query, n_key, offset, scores.device)  # [1, 1, q, k]
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :].to(scores.device).bool()
    scores = torch.where(mask, scores, attn.IGNORE.to(scores.device))
    if scores.requires_grad:
        e = (scores - scores.amax(-1, keepdim=True)).exp()
        pattern = torch.nan_to_num(e / e.sum(-1, keepdim=True), nan=0.0)
    else:  # in place: no autograd graph needs the intermediate values
        e = scores.sub_(scores.amax(-1, keepdim=True)).exp_()
        pattern = e.div_(e.sum(-1, keepdim=True)).nan_to_num_(nan=0.0)
    z = attn.hook_z((pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3))  # [b, q, h, d_head]
    w = attn.W_O.permute(2, 0, 1).reshape(attn.W_O.shape[-1], -1)  # [d_model, head * d_head]
    return F.linear(z.reshape(*z.shape[:2], -1), w, attn.b_O)


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
    attn = attention(
        block.attn,
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
