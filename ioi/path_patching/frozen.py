"""Steps 3 and 4 of path patching: a sender's change, carried forward with attention frozen.

With every head's output frozen to the clean run, a layer's attention output is the clean
one whatever the residual stream holds, so nothing mixes information across positions: the
residual at a position depends only on that position's clean values plus the sender's change
there. A patched residual is therefore rebuilt *per position*, for just
the rows that are read later (the metric's positions, or the receivers' positions):

    resid_mid[L]  = clean resid_mid[L] + delta          (head sender at layer L)
    resid_post[l] = resid_mid[l] + MLP_l(LN2_l(resid_mid[l]))
    resid_mid[l+1] = resid_post[l] + clean attn_out[l+1]

Only MLPs and LayerNorms are recomputed, on stacked copies (one per sender), fused where
`ioi.patching.blocks` can (equal to TransformerLens's modules up to float rounding).

In a parallel block (GPT-J, GPT-NeoX: ``cfg.parallel_attn_mlp``) the MLP reads the block's input,
not the sum after attention, so a head's change cannot reach the MLP of its own layer:

    resid_post[L]  = clean resid_post[L] + delta         (head sender at layer L)
    resid_post[l]  = resid_pre[l] + clean attn_out[l] + MLP_l(LN2_l(resid_pre[l]))
"""

from __future__ import annotations

from collections.abc import Sequence

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.patching.blocks import mlp_out, norm
from ioi.path_patching.activations import RunActivations


def rows_of(acts: Tensor, batch_idx: Int[Tensor, " row"], pos_idx: Int[Tensor, " row"]) -> Tensor:
    """[row, ...] entries of a [batch, pos, ...] activation."""
    device = acts.device
    return acts[batch_idx.to(device), pos_idx.to(device)]


def head_deltas(
    model: HookedTransformer,
    layer: int,
    heads: Sequence[int],
    clean_z: Float[Tensor, "row head d_head"],
    corrupted_z: Float[Tensor, "row head d_head"],
    keep: Bool[Tensor, " row"],
) -> Float[Tensor, "sender row d_model"]:
    """What each head's corrupted output adds to the residual stream, where it is patched.

    ``(z_corrupted - z_clean) @ W_O`` for each head in ``heads``; zero at rows outside the
    sender positions (``keep`` False).
    """
    idx = torch.tensor(list(heads), device=clean_z.device)
    dz = (corrupted_z - clean_z)[:, idx] * keep.to(clean_z.device)[:, None, None]
    return einops.einsum(
        dz, model.W_O[layer][idx], "row sender d_head, sender d_head d_model -> sender row d_model"
    )


def mlp_delta(
    clean_mlp: Float[Tensor, "row d_model"],
    corrupted_mlp: Float[Tensor, "row d_model"],
    keep: Bool[Tensor, " row"],
) -> Float[Tensor, "sender row d_model"]:
    """An MLP sender's change to the residual stream (one sender)."""
    return ((corrupted_mlp - clean_mlp) * keep.to(clean_mlp.device)[:, None])[None]


def enters_before_mlp(model: HookedTransformer, kind: str) -> bool:
    """Whether a sender's change reaches the MLP of its own layer: a head's, in a sequential block."""
    return kind == "head" and not model.cfg.parallel_attn_mlp


def entry_residual(
    model: HookedTransformer,
    clean: RunActivations,
    kind: str,
    layer: int,
    batch_idx: Int[Tensor, " row"],
    pos_idx: Int[Tensor, " row"],
) -> Float[Tensor, "row d_model"]:
    """The clean residual where a sender's change enters: after attention (a head in a
    sequential block) or after the whole block (an MLP, or a head in a parallel block)."""
    before = enters_before_mlp(model, kind)
    resid = clean.resid_mid(layer) if before else clean.resid_post(layer)
    return rows_of(resid, batch_idx, pos_idx)


def finish_mlp(
    model: HookedTransformer, layer: int, resid_mid: Float[Tensor, "sender row d_model"]
) -> Float[Tensor, "sender row d_model"]:
    """Add the layer's MLP output, computed on the (patched) residual, as the block does."""
    if model.cfg.attn_only:
        return resid_mid
    block = model.blocks[layer]
    return resid_mid + mlp_out(block, norm(block.ln2, resid_mid))


def finish_block(
    model: HookedTransformer,
    layer: int,
    resid_pre: Float[Tensor, "sender row d_model"],
    attn_out: Float[Tensor, "row d_model"],
) -> Float[Tensor, "sender row d_model"]:
    """A block with its attention output frozen: the MLP reads the sum after attention, or (in
    a parallel block) the block's input."""
    if not model.cfg.parallel_attn_mlp or model.cfg.attn_only:
        return finish_mlp(model, layer, resid_pre + attn_out)
    block = model.blocks[layer]
    return resid_pre + attn_out + mlp_out(block, norm(block.ln2, resid_pre))


def propagate_frozen(
    model: HookedTransformer,
    x: Float[Tensor, "sender row d_model"],
    layer: int,
    kind: str,
    attn_out_rows: Sequence[Tensor],
    stop_layer: int,
    capture: Sequence[int] = (),
) -> tuple[Float[Tensor, "sender row d_model"], dict[int, Tensor]]:
    """Carry a patched residual from a sender at ``layer`` up to ``stop_layer``, attention frozen.

    Args:
        x: the patched residual where the sender writes (`entry_residual`): after the
            attention of ``layer`` (a head in a sequential block) or after the whole block.
        attn_out_rows: per layer, the clean attention output at the same rows, [row, d_model].
        stop_layer: the residual returned is the input of this layer (``n_layers``: the final
            residual stream).
        capture: layers (> ``layer``) whose residual input is also returned.

    Returns:
        The residual at the input of ``stop_layer`` and ``{layer: residual input}`` for ``capture``.
    """
    captured: dict[int, Tensor] = {}
    if enters_before_mlp(model, kind):
        x = finish_mlp(model, layer, x)
    for lay in range(layer + 1, stop_layer):
        if lay in capture:
            captured[lay] = x
        x = finish_block(model, lay, x, attn_out_rows[lay])
    if stop_layer in capture:
        captured[stop_layer] = x
    return x, captured
