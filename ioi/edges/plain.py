"""Plain edge patching, the reference: one edge per ``run_with_hooks`` call.

Written independently of the batched engine (`ioi.edges.exact`), for its tests and its
benchmark (``python -m ioi.bench edges``): the sender's output comes from TransformerLens's own
caches (``hook_embed + hook_pos_embed``, per-head ``hook_result``, ``hook_mlp_out``), and the
change is added at the receiver's TransformerLens hook (``hook_q_input`` / ``hook_k_input`` /
``hook_v_input`` with split inputs, ``hook_mlp_in``, the last ``hook_resid_post``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.edges.graph import Edge
from ioi.patching.readout import Metric


def sender_output(cache, sender) -> Tensor:
    """The sender's output in the residual stream [batch, pos, d_model], from a TL cache."""
    if sender.kind == "embed":
        out = cache["hook_embed"]
        return out + cache["hook_pos_embed"] if "hook_pos_embed" in cache else out
    if sender.kind == "mlp":
        return cache[get_act_name("mlp_out", sender.layer)]
    return cache[get_act_name("result", sender.layer)][:, :, sender.head]


def plain_edge_effects(
    model: HookedTransformer,
    edges: Sequence[Edge],
    clean: Int[Tensor, "batch pos"],
    corrupted: Int[Tensor, "batch pos"],
    metric: Metric,
    positions: Mapping[str, Tensor] | None = None,
    scale: float = 1.0,
    run_hooks: Sequence = (),
) -> Float[Tensor, " edge *batch"]:
    """``M(clean with scale * change at the receiver) - M(clean)`` for each edge, one per pass
    ([edge], or [edge, batch] for a metric that returns one value per prompt).

    ``positions``: the graph's label -> [batch] positions, for edges with a ``pos``.
    ``scale``: multiplies each sender's change (``+-eps`` gives central finite differences).
    ``run_hooks``: extra forward hooks on the evaluated runs (not on the runs that give the
    senders' changes), e.g. one that moves the input embeddings.
    """
    cfg = model.cfg
    old = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.use_attn_result)
    try:
        with torch.inference_mode():
            cfg.use_attn_result = True  # per-head outputs, for the caches only
            _, clean_cache = model.run_with_cache(clean)
            _, corrupted_cache = model.run_with_cache(corrupted)
            cfg.use_attn_result = cfg.use_split_qkv_input = cfg.use_hook_mlp_in = False
            value = metric(model.run_with_hooks(clean, fwd_hooks=list(run_hooks)))
            base = torch.as_tensor(value, dtype=torch.float64).cpu()
            out = []
            for edge in edges:
                s, r = edge.sender, edge.receiver
                delta = sender_output(corrupted_cache, s) - sender_output(clean_cache, s)
                if edge.pos is not None:
                    keep = torch.zeros(delta.shape[:2], device=delta.device)
                    keep[torch.arange(delta.shape[0]), positions[edge.pos]] = 1.0
                    delta = delta * keep[..., None]
                delta = scale * delta
                # each receiver's hook exists only with its flag (split q/k/v inputs cost time)
                cfg.use_split_qkv_input = r.kind in ("q", "k", "v")
                cfg.use_hook_mlp_in = r.kind == "mlp"
                if r.kind == "logits":
                    name = get_act_name("resid_post", cfg.n_layers - 1)
                elif r.kind == "mlp":
                    name = get_act_name("mlp_in", r.layer)
                else:
                    name = get_act_name(f"{r.kind}_input", r.layer)

                def add(act, hook, delta=delta, head=r.head):
                    if head is None:
                        return act + delta
                    act = act.clone()
                    act[:, :, head] += delta
                    return act

                logits = model.run_with_hooks(clean, fwd_hooks=[*run_hooks, (name, add)])
                out.append(torch.as_tensor(metric(logits), dtype=torch.float64).cpu() - base)
    finally:
        cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.use_attn_result = old
    return torch.stack(out) if out else torch.empty(0, *base.shape, dtype=torch.float64)
