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

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.components import Unembed
from transformer_lens.utilities import apply_softcap


def logits_from_layer(
    model: HookedTransformer, resid: Float[Tensor, "batch pos d_model"], layer: int, **kwargs
) -> Float[Tensor, "batch pos d_vocab"]:
    """``model(resid, start_at_layer=layer, **kwargs)``, without copying ``W_U`` per call."""
    if type(model.unembed) is not Unembed:
        return model(resid, start_at_layer=layer, **kwargs)
    final = model(resid, start_at_layer=layer, stop_at_layer=model.cfg.n_layers, **kwargs)
    if model.cfg.normalization_type is not None:
        final = model.ln_final(final)
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
    **kwargs,
) -> Float[Tensor, "batch d_vocab"] | None:
    """Like `logits_from_layer`, but only the logits at position ``rows[b]`` of each sequence ``b``.

    The blocks still run on every position (later positions attend to earlier ones); only the
    final norm and the unembedding, a large share of a pass's cost for a GPT-2-sized vocabulary,
    are restricted. The caller places these rows in a NaN-filled logits tensor, so a metric that
    reads a position it did not declare gets NaN, never a silently wrong number. Returns None
    where this shortcut does not apply (a non-standard unembed, or soft-capped logits), and the
    caller falls back to full logits.
    """
    if type(model.unembed) is not Unembed or model.cfg.output_logits_soft_cap > 0:
        return None
    final = model(resid, start_at_layer=layer, stop_at_layer=model.cfg.n_layers, **kwargs)
    index = torch.arange(final.shape[0], device=final.device)
    picked = final[index, rows].unsqueeze(1)  # [batch, 1, d_model]: the norm works per position
    if model.cfg.normalization_type is not None:
        picked = model.ln_final(picked)
    unembed = model.unembed
    return torch.addmm(unembed.b_U, picked.squeeze(1), unembed.W_U)
