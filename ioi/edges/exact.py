"""Exact edge patching: each edge's true effect, many edges per stacked pass.

For an edge ``u -> v`` the receiver's input becomes ``input_v(clean) + (a_u(corrupted) -
a_u(clean))`` (at the edge's positions), everything else is the clean run, and ``v``'s output
then propagates normally through every later layer; the score is ``M(patched) - M(clean)``.

One pass stacks copies of the clean run that differ only by the change added at one receiver,
and starts at the receivers' layer (everything below is the clean run, from the cache):

* q, k, v receivers: the receiver's new q/k/v is computed from the changed residual as the
  path-patching engine does (`ioi.path_patching.receivers.receiver_value`) and written in with
  its `run_with_writes`, which runs the blocks from the receiver's layer on the stacked copies.
* MLP receivers: the MLP runs on its changed input; the change of its output is added to the
  block's output and the later blocks run on the copies.
* the logits: the change is added to the final residual.

The logits are then read only where the metric reads them (`ioi.patching.readout`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.edges.attribution import EdgeScores
from ioi.edges.graph import Edge, EdgeGraph
from ioi.edges.runs import check_inputs, position_mask, run_cache, sender_delta
from ioi.inputs import check_metric_finite
from ioi.patching.blocks import run_blocks
from ioi.patching.engine import metric_output
from ioi.patching.readout import Metric, MetricOnEntries, Readout, choose_readout, project_to_logits
from ioi.path_patching.nodes import Receiver
from ioi.path_patching.receivers import Write, receiver_value, run_with_writes


def exact_edge_patching(
    model: HookedTransformer,
    graph: EdgeGraph,
    clean_tokens: Int[Tensor, "batch pos"],
    corrupted_tokens: Int[Tensor, "batch pos"],
    metric: Metric,
    *,
    edges_per_pass: int = 32,
) -> EdgeScores:
    """The exact effect of patching each edge of ``graph`` alone (see the module docstring).

    Steps:
        1. Check the inputs; run clean and corrupted with caches; the metric's readout.
        2. Group the edges by where their receiver reads (a layer's heads, an MLP, the logits).
        3. For each group, passes of up to ``edges_per_pass`` stacked copies, one per edge.

    Args:
        metric: logits -> one number, or one value per prompt ([batch]): then each prompt's
            own effect is kept (``per_prompt``, [edge, batch]) and ``scores`` is their mean.
        edges_per_pass: copies stacked in one pass (memory grows linearly with it).

    Raises:
        ValueError: as `ioi.edges.edge_attribution`, or a bad ``edges_per_pass``.
    """
    if (
        isinstance(edges_per_pass, bool)
        or not isinstance(edges_per_pass, int)
        or edges_per_pass < 1
    ):
        raise ValueError(f"edges_per_pass must be an int >= 1, got {edges_per_pass!r}")
    clean, corrupted = check_inputs(model, graph, clean_tokens, corrupted_tokens)
    clean_logits, clean_acts = run_cache(model, clean)
    _, corrupted_acts = run_cache(model, corrupted)
    base = metric_output(metric, clean_logits).double().cpu()  # [] or [batch]
    readout, buffer = choose_readout("auto", metric, clean_logits, tuple(clean_logits.shape))
    read = MetricOnEntries(metric, readout, clean_logits.device, clean_logits.dtype, buffer)
    groups: dict[tuple[str, int], list[int]] = {}
    for i, edge in enumerate(graph.edges):
        r = edge.receiver
        key = ("heads", r.layer) if r.kind in ("q", "k", "v") else (r.kind, r.layer)
        groups.setdefault(key, []).append(i)
    values = torch.empty(len(graph.edges), *base.shape, dtype=torch.float64)
    with torch.inference_mode():
        for key, indices in groups.items():
            for start in range(0, len(indices), edges_per_pass):
                chunk = indices[start : start + edges_per_pass]
                edges = [graph.edges[i] for i in chunk]
                deltas = _deltas(model, graph, edges, clean_acts, corrupted_acts)
                rows = _readout_residual(model, key, edges, deltas, clean_acts, readout)
                metrics = _read(model, rows, readout, read)
                values[chunk] = metrics.double().reshape(len(chunk), *base.shape) - base
    check_metric_finite(values, lambda i: f"edge {graph.edges[i]}", float(base.mean()))
    if base.ndim == 0:
        return EdgeScores(graph, values, "exact", 0, float(base))
    return EdgeScores(graph, values.mean(1), "exact", 0, float(base.mean()), values)


def _deltas(
    model: HookedTransformer,
    graph: EdgeGraph,
    edges: Sequence[Edge],
    clean_acts: dict,
    corrupted_acts: dict,
) -> Float[Tensor, "copy batch pos d_model"]:
    """Each edge's sender change, kept only at the edge's positions."""
    out = []
    for edge in edges:
        delta = sender_delta(model, edge.sender, clean_acts, corrupted_acts)
        mask = position_mask(graph, edge.pos, delta)
        out.append(delta * mask[..., None])
    return torch.stack(out)


def _readout_residual(
    model: HookedTransformer,
    key: tuple[str, int],
    edges: Sequence[Edge],
    deltas: Tensor,
    clean_acts: dict,
    readout: Readout,
) -> Float[Tensor, "copy row d_model"]:
    """The final residual of each copy at the readout's entries, with its edge's change at its
    receiver (the blocks after it through `ioi.patching.blocks`)."""
    kind, layer = key
    n_copies, batch, n_pos, d_model = deltas.shape
    last = model.cfg.n_layers - 1
    device = deltas.device
    read_b, read_p = readout.batch_idx.to(device), readout.pos_idx.to(device)
    if kind == "logits":
        final = clean_acts[get_act_name("resid_post", last)][None] + deltas
        return final[:, read_b, read_p]
    if kind == "mlp":
        block = model.blocks[layer]
        mlp_in = "resid_pre" if model.cfg.parallel_attn_mlp else "resid_mid"
        x = clean_acts[get_act_name(mlp_in, layer)][None] + deltas
        out = block.mlp(block.ln2(x.reshape(-1, n_pos, d_model)))  # [copy * batch, pos, d_model]
        change = out.reshape(deltas.shape) - clean_acts[get_act_name("mlp_out", layer)][None]
        x = (clean_acts[get_act_name("resid_post", layer)][None] + change).reshape(
            -1, n_pos, d_model
        )
        x = run_blocks(model, x, layer + 1, model.cfg.n_layers)
        return x.reshape(deltas.shape)[:, read_b, read_p]
    resid_pre = clean_acts[get_act_name("resid_pre", layer)]
    rows_b = torch.arange(batch, device=deltas.device).repeat_interleave(n_pos)  # [batch * pos]
    rows_p = torch.arange(n_pos, device=deltas.device).repeat(batch)  # [batch * pos]
    x = (resid_pre[None] + deltas).reshape(n_copies, batch * n_pos, d_model)
    by_receiver: dict[Receiver, list[int]] = {}
    for c, edge in enumerate(edges):
        r = edge.receiver
        by_receiver.setdefault(Receiver(r.layer, r.head, r.kind), []).append(c)
    writes = []
    for receiver, copies in by_receiver.items():
        value = receiver_value(model, receiver, x[copies])  # [copy, batch * pos, d_head]
        idx = torch.tensor(copies, device=deltas.device)[:, None]
        flat_b = (idx * batch + rows_b[None]).flatten()  # [copy * batch * pos] stacked prompt
        flat_p = rows_p.repeat(len(copies))
        writes.append(Write(receiver, flat_b, flat_p, value.reshape(-1, value.shape[-1])))
    return run_with_writes(model, resid_pre, layer, writes, n_copies, read=(read_b, read_p))


def _read(
    model: HookedTransformer, rows: Tensor, readout: Readout, read: MetricOnEntries
) -> Float[Tensor, " copy *batch"]:
    """The metric of each copy from its final residual at the readout's entries ([copy, row,
    d_model]), computing only the logits it reads, one copy at a time (a metric read on every
    logit needs [batch, pos, d_vocab] per copy, not per pass)."""
    values = []
    for c in range(rows.shape[0]):
        logits = project_to_logits(model, rows[c : c + 1], readout)  # [1, row, col]
        values.append(read(logits[0]))  # [] or [batch]
    return torch.stack(values)
