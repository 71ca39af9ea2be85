"""Step 5 of path patching to heads: receivers' inputs, then a clean run that uses them.

A receiver's q/k/v is computed from the patched residual at its layer (frozen attention below
it), exactly as the attention block would: ``LN1(resid_pre) @ W_Q[h] + b_Q[h]``. Those values
are then written into the receiver's ``hook_q``/``hook_k``/``hook_v`` in a normal run of the
clean input, one stacked copy per sender, from the lowest receiver layer upwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.utilities import get_act_name

from ioi.patching.blocks import block_forward, norm
from ioi.patching.tail import last_block_at_rows, last_block_shortcut_applies
from ioi.path_patching.nodes import Receiver


def receiver_value(
    model: HookedTransformer, receiver: Receiver, resid_pre: Float[Tensor, "sender row d_model"]
) -> Float[Tensor, "sender row d_head"]:
    """The receiver's q, k or v, computed from its layer's (patched) residual input."""
    attn = model.blocks[receiver.layer].attn
    weight = {"q": attn.W_Q, "k": attn.W_K, "v": attn.W_V}[receiver.input][receiver.head]
    bias = {"q": attn.b_Q, "k": attn.b_K, "v": attn.b_V}[receiver.input][receiver.head]
    normed = norm(model.blocks[receiver.layer].ln1, resid_pre)
    return einops.einsum(normed, weight, "s r d_model, d_model d_head -> s r d_head") + bias


def run_with_receivers(
    model: HookedTransformer,
    resid_pre: Float[Tensor, "batch pos d_model"],
    start_layer: int,
    values: dict[Receiver, Tensor],
    batch_idx: Int[Tensor, " row"],
    pos_idx: Int[Tensor, " row"],
    n_senders: int,
    read: tuple[Int[Tensor, " read"], Int[Tensor, " read"]] | None = None,
) -> Float[Tensor, "sender batch pos d_model"] | Float[Tensor, "sender read d_model"]:
    """Run layers ``start_layer..`` on ``n_senders`` stacked copies of the clean residual,
    with each receiver's input overwritten at the rows by its [sender, row, d_head] values
    (only the entries ``read`` of each copy, as in `run_with_writes`).

    The hooks live only inside this call (``model.hooks`` removes them, also on errors).
    """
    batch = resid_pre.shape[0]
    device = resid_pre.device
    copy = torch.arange(n_senders, device=device)[:, None] * batch  # [sender, 1] batch offset
    flat_b = (copy + batch_idx.to(device)[None, :]).flatten()  # [sender * row] stacked batch index
    flat_p = pos_idx.to(device).repeat(n_senders)  # [sender * row]
    writes = [Write(r, flat_b, flat_p, v.reshape(-1, v.shape[-1])) for r, v in values.items()]
    return run_with_writes(model, resid_pre, start_layer, writes, n_senders, read=read)


@dataclass(frozen=True)
class Write:
    """Values for one receiver at entries (``flat_b``: copy * batch + prompt, ``flat_p``)."""

    receiver: Receiver
    flat_b: Int[Tensor, " entry"]
    flat_p: Int[Tensor, " entry"]
    values: Float[Tensor, "entry d_head"]


def windows_supported(model: HookedTransformer) -> bool:
    """Whether `run_with_writes` may run a window of positions after a clean prefix: causal
    attention whose cached keys and values are exactly ``hook_k`` and ``hook_v`` (no
    query/key norm or clamp after the hooks, no position-dependent query scaling)."""
    cfg = model.cfg
    return (
        cfg.attention_dir == "causal"
        and cfg.positional_embedding_type in ("standard", "rotary")
        and not getattr(cfg, "use_qk_norm", False)
        and getattr(cfg, "clip_qkv", None) is None
        and not getattr(cfg, "use_logn_attn", False)
    )


def clean_keys_values(
    model: HookedTransformer, toks: Int[Tensor, "batch pos"]
) -> list[tuple[Tensor, Tensor]]:
    """Per layer, the clean run's ``hook_k`` and ``hook_v`` ([batch, pos, kv_head, d_head]
    each): the keys and values that a window of later positions reads before it."""
    names = {get_act_name(part, layer) for layer in range(model.cfg.n_layers) for part in "kv"}
    _, cache = model.run_with_cache(
        toks.to(model.cfg.device),
        names_filter=lambda name: name in names,
        return_type=None,
    )
    return [
        (cache[get_act_name("k", layer)], cache[get_act_name("v", layer)])
        for layer in range(model.cfg.n_layers)
    ]


def run_with_writes(
    model: HookedTransformer,
    resid_pre: Float[Tensor, "batch pos d_model"],
    start_layer: int,
    writes: Sequence[Write],
    n_copies: int,
    prefix: Sequence[tuple[Tensor, Tensor]] | None = None,
    attention_mask: Int[Tensor, "batch key"] | None = None,
    read: tuple[Int[Tensor, " read"], Int[Tensor, " read"]] | None = None,
) -> Float[Tensor, "copy batch pos d_model"] | Float[Tensor, "copy read d_model"]:
    """Run layers ``start_layer..`` on ``n_copies`` stacked copies of the clean residual,
    each `Write` overwriting its receiver's input at its entries of the stacked batch.

    The blocks run through `ioi.patching.blocks` (fused norms, activation and softmax, every
    hook point still called). With ``prefix`` (per layer [batch, prefix, kv_head, d_head] clean
    keys and values, only where `windows_supported`), ``resid_pre`` and the writes' positions
    are a window of positions after a clean prefix: attention there reads the prefix's clean
    keys and values, as TransformerLens's key-value cache does when it generates text. Nothing
    before the first written position changes in a causal model, so the window gives the same
    values as the whole sequence. ``attention_mask`` ([batch, prefix + window], 0 for an empty
    prefix slot) lets each prompt's prefix have its own length.

    With ``read`` (``(batch_idx, pos_idx)``, [row] each: the entries a metric reads), only
    those entries of each copy come back, [copy, read, d_model]; where each prompt has at most
    one of them and `ioi.patching.tail.last_block_shortcut_applies` (no write into the last
    layer), the last block runs on those rows alone.

    The hooks live only inside this call (``model.hooks`` removes them, also on errors).
    """
    batch, n_pos, d_model = resid_pre.shape
    by_hook: dict[str, list[Write]] = {}
    for w in writes:
        by_hook.setdefault(get_act_name(w.receiver.input, w.receiver.layer), []).append(w)

    def make_hook(group: Sequence[Write]):
        def overwrite(act: Tensor, hook) -> Tensor:  # act: [copy * batch, pos, head, d_head]
            for w in group:
                act[w.flat_b, w.flat_p, w.receiver.head] = w.values.to(act.dtype)
            return act

        return overwrite

    def entry(layer: int) -> TransformerLensKeyValueCacheEntry | None:
        return None if prefix is None else _frozen_entry(prefix[layer], n_copies)

    x = resid_pre.repeat(n_copies, 1, 1)  # [copy * batch, pos, d_model]
    mask = None if attention_mask is None else attention_mask.to(x.device).repeat(n_copies, 1)
    hooks = [(name, make_hook(group)) for name, group in by_hook.items()]
    last = model.cfg.n_layers - 1
    with model.hooks(fwd_hooks=hooks):
        shortcut = (
            read is not None
            and start_layer <= last
            and len(read[0].unique()) == len(read[0])
            and last_block_shortcut_applies(model)
        )
        for layer in range(start_layer, last if shortcut else last + 1):
            x = block_forward(model, layer, x, entry(layer), mask)
        if shortcut:
            read_b, read_p = (t.to(x.device) for t in read)
            slots = torch.zeros(batch, dtype=torch.long, device=x.device)
            slots[read_b] = read_p  # prompts the metric does not read: any row, unused
            x = last_block_at_rows(model, x, slots.repeat(n_copies), entry(last), mask)
            return x.reshape(n_copies, batch, d_model)[:, read_b]
    x = x.reshape(n_copies, batch, n_pos, d_model)
    if read is None:
        return x
    return x[:, read[0].to(x.device), read[1].to(x.device)]


def _frozen_entry(
    keys_values: tuple[Tensor, Tensor], n_copies: int
) -> TransformerLensKeyValueCacheEntry:
    """A read-only key-value cache entry holding the clean prefix, once per stacked copy."""
    k, v = (t.repeat(n_copies, 1, 1, 1) for t in keys_values)  # [copy * batch, first, ...]
    return TransformerLensKeyValueCacheEntry(k, v, frozen=True)
