"""Step 5 of path patching to heads: receivers' inputs, then a clean run that uses them.

A receiver's q/k/v is computed from the patched residual at its layer (frozen attention below
it), exactly as the attention block would: ``LN1(resid_pre) @ W_Q[h] + b_Q[h]``. Those values
are then written into the receiver's ``hook_q``/``hook_k``/``hook_v`` in a normal run of the
original input, one stacked copy per sender, from the lowest receiver layer upwards.
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.path_patching.nodes import Receiver


def receiver_value(
    model: HookedTransformer, receiver: Receiver, resid_pre: Float[Tensor, "sender row d_model"]
) -> Float[Tensor, "sender row d_head"]:
    """The receiver's q, k or v, computed from its layer's (patched) residual input."""
    attn = model.blocks[receiver.layer].attn
    weight = {"q": attn.W_Q, "k": attn.W_K, "v": attn.W_V}[receiver.input][receiver.head]
    bias = {"q": attn.b_Q, "k": attn.b_K, "v": attn.b_V}[receiver.input][receiver.head]
    normed = model.blocks[receiver.layer].ln1(resid_pre)
    return einops.einsum(normed, weight, "s r d_model, d_model d_head -> s r d_head") + bias


def run_with_receivers(
    model: HookedTransformer,
    resid_pre: Float[Tensor, "batch pos d_model"],
    start_layer: int,
    values: dict[Receiver, Tensor],
    batch_idx: Int[Tensor, " row"],
    pos_idx: Int[Tensor, " row"],
    n_senders: int,
) -> Float[Tensor, "sender batch pos d_model"]:
    """Run layers ``start_layer..`` on ``n_senders`` stacked copies of the original residual,
    with each receiver's input overwritten at the rows by its [sender, row, d_head] values.

    The hooks live only inside this call (``model.hooks`` removes them, also on errors).
    """
    batch, n_pos, d_model = resid_pre.shape
    device = resid_pre.device
    copy = torch.arange(n_senders, device=device)[:, None] * batch  # [sender, 1] batch offset
    flat_b = (copy + batch_idx.to(device)[None, :]).flatten()  # [sender * row] stacked batch index
    flat_p = pos_idx.to(device).repeat(n_senders)  # [sender * row]
    by_hook: dict[str, list[Receiver]] = {}
    for receiver in values:
        by_hook.setdefault(get_act_name(receiver.input, receiver.layer), []).append(receiver)

    def make_hook(receivers: Sequence[Receiver]):
        def overwrite(act: Tensor, hook) -> Tensor:  # act: [sender * batch, pos, head, d_head]
            for r in receivers:
                act[flat_b, flat_p, r.head] = values[r].reshape(-1, act.shape[-1]).to(act.dtype)
            return act

        return overwrite

    x = resid_pre.repeat(n_senders, 1, 1)  # [sender * batch, pos, d_model]
    hooks = [(name, make_hook(rs)) for name, rs in by_hook.items()]
    with model.hooks(fwd_hooks=hooks):
        for layer in range(start_layer, model.cfg.n_layers):
            x = model.blocks[layer](x)
    return x.reshape(n_senders, batch, n_pos, d_model)
