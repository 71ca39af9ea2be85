"""What every edge score needs: checked inputs, the two runs' activations, senders' changes.

A sender's change ``a_u(corrupted) - a_u(clean)`` is taken in the residual stream: the
embeddings' is the change of ``blocks.0.hook_resid_pre``, a head's is ``(z' - z) @ W_O[h]``
(``b_O`` belongs to no head, so it never changes), an MLP's the change of ``hook_mlp_out``.
With split positions an edge's change is kept only at its label's position of each prompt.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.edges.graph import Edge, EdgeGraph, EdgeReceiver, EdgeSender, check_edge
from ioi.inputs import check_token_pair
from ioi.path_patching.nodes import check_supported

CACHED = ("resid_pre", "resid_mid", "mlp_out", "resid_post", "z")


def check_inputs(
    model: HookedTransformer,
    graph: EdgeGraph,
    clean_tokens: object,
    corrupted_tokens: object,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """The two token batches, after checking the model's layout, every edge and the positions."""
    if not isinstance(graph, EdgeGraph):
        raise TypeError(f"graph must be an EdgeGraph (EdgeGraph.from_model), got {type(graph)}")
    check_supported(model)
    clean, corrupted = check_token_pair(model, clean_tokens, corrupted_tokens)
    if not graph.edges:
        raise ValueError("the graph has no edges; build one with EdgeGraph.from_model(model)")
    for edge in dict.fromkeys((e.sender, e.receiver) for e in graph.edges):
        check_edge(model, Edge(*edge))
    batch, n_pos = clean.shape
    for label, pos in (graph.positions or {}).items():
        if pos.shape[0] != batch:
            raise ValueError(
                f"the graph's positions {label!r} are for a batch of {pos.shape[0]} prompts, the "
                f"tokens have {batch}; build the graph with this batch's positions"
            )
        if bool(((pos < 0) | (pos >= n_pos)).any()):
            raise ValueError(f"positions {label!r} must lie in 0..{n_pos - 1}, got {pos.tolist()}")
    labels = set(graph.positions or {})
    for edge in graph.edges:
        if (edge.pos is None) != (graph.positions is None) or (
            edge.pos is not None and edge.pos not in labels
        ):
            raise ValueError(
                f"edge {edge}: its position {edge.pos!r} is not one of the graph's "
                f"{sorted(labels) if labels else [None]}"
            )
    return clean.to(model.cfg.device), corrupted.to(model.cfg.device)


def run_cache(model: HookedTransformer, tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits and the residual-stream activations exact edge patching reads, no grad."""
    wanted = {get_act_name(part, layer) for part in CACHED for layer in range(model.cfg.n_layers)}
    with torch.inference_mode():
        logits, cache = model.run_with_cache(tokens, names_filter=lambda name: name in wanted)
    return logits, dict(cache.items())


def sender_delta(
    model: HookedTransformer, sender: EdgeSender, clean: dict, corrupted: dict
) -> Float[Tensor, "batch pos d_model"]:
    """``a_u(corrupted) - a_u(clean)`` in the residual stream, every position."""
    if sender.kind == "embed":
        name = get_act_name("resid_pre", 0)
        return corrupted[name] - clean[name]
    if sender.kind == "mlp":
        name = get_act_name("mlp_out", sender.layer)
        return corrupted[name] - clean[name]
    return head_deltas(model, sender.layer, clean, corrupted)[:, :, sender.head]


def head_deltas(
    model: HookedTransformer, layer: int, clean: dict, corrupted: dict
) -> Float[Tensor, "batch pos head d_model"]:
    """Each head of ``layer``'s change of output: ``(z' - z) @ W_O[h]``."""
    name = get_act_name("z", layer)
    dz = corrupted[name] - clean[name]
    return einops.einsum(dz, model.blocks[layer].attn.W_O, "b p h dh, h dh d -> b p h d")


def position_mask(
    graph: EdgeGraph, pos: str | None, like: Float[Tensor, "batch pos *rest"]
) -> Float[Tensor, "batch pos"]:
    """1 where an edge at label ``pos`` reads and writes, 0 elsewhere (all ones for None),
    on ``like``'s device and dtype."""
    batch, n_pos, device = like.shape[0], like.shape[1], like.device
    mask = torch.ones(batch, n_pos, device=device, dtype=like.dtype)
    if pos is None:
        return mask
    mask.zero_()
    mask[torch.arange(batch, device=device), graph.positions[pos].to(device)] = 1.0
    return mask


def receiver_hook(model: HookedTransformer, receiver: EdgeReceiver) -> str:
    """The hook whose activation is the receiver's input (with split q/k/v inputs and mlp_in)."""
    if receiver.kind == "logits":
        return get_act_name("resid_post", model.cfg.n_layers - 1)
    if receiver.kind == "mlp":
        return get_act_name("mlp_in", receiver.layer)
    return get_act_name(f"{receiver.kind}_input", receiver.layer)


@contextmanager
def split_inputs(model: HookedTransformer) -> Iterator[None]:
    """Turn on ``hook_q/k/v_input`` and ``hook_mlp_in`` for the call, restore the flags after."""
    cfg = model.cfg
    old = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in)
    try:
        model.set_use_split_qkv_input(True)
        if not cfg.attn_only:
            model.set_use_hook_mlp_in(True)
        yield
    finally:
        cfg.use_split_qkv_input, cfg.use_hook_mlp_in = old
