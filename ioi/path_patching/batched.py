"""Many path-patching questions to heads in few passes: one stacked copy per question.

`path_patch` stacks the senders of *one* question (one receiver set, one pair of positions).
Circuit discovery asks many such questions at once (the senders into every group's q, k and
v, each sender's effect at six positions): here each question is a `PathQuery` (one sender,
its receivers, its positions), and questions with senders of one kind and layer share one
frozen propagation, while the runs of the clean input with the receivers patched in are stacked
over all of them, as many copies per pass as the memory budget allows. Each pass reruns only
the positions it can change, from the first row its senders change to the last row the metric
reads in each prompt, reading the clean keys and values before them as a key-value cache
(`ioi.path_patching.receivers.run_with_writes`). The numbers are those of
`path_patch`, one query at a time, up to float rounding (tests check both against
`ioi.path_patching.plain`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.inputs import check_metric_finite
from ioi.patching.readout import Metric, Readout, project_to_logits
from ioi.path_patching.activations import RunActivations
from ioi.path_patching.engine import (
    _activations_and_readout,
    _Rows,
    _validate,
    senders_per_pass,
)
from ioi.path_patching.frozen import entry_residual, propagate_frozen, rows_of
from ioi.path_patching.nodes import (
    Receiver,
    Sender,
)
from ioi.path_patching.positions import (
    DatasetLike,
    PositionSpec,
    dataset_tokens,
    position_mask,
    resolve_positions,
)
from ioi.path_patching.receivers import (
    Write,
    clean_keys_values,
    receiver_value,
    run_with_writes,
    windows_supported,
)

Track = Callable[[Iterable, str], Iterable]
"""Wraps an iterable of passes with a progress display, e.g. `ioi.report.progress.Tracker.steps`."""


@dataclass(frozen=True, eq=False)
class PathQuery:
    """One path-patching question: a sender's effect via its receivers' inputs.

    Positions are as in `path_patch`: None (everywhere), a [batch] int tensor (one position
    per prompt, any task) or, with an `IOIDataset`, a ``word_idx`` key such as ``"end"``.
    """

    sender: Sender
    receivers: tuple[Receiver, ...]
    sender_positions: PositionSpec = None
    receiver_positions: PositionSpec = None


def _spec_key(spec: PositionSpec) -> object:
    """A hashable stand-in for a position spec: equal specs (also equal tensors) share it."""
    if isinstance(spec, Tensor):
        return ("tensor", tuple(spec.shape), tuple(spec.flatten().tolist()))
    return spec


def _start_layer(query: PathQuery) -> int:
    """The lowest layer where the query's receivers see its sender's change."""
    return min(r.layer for r in query.receivers if r.layer > query.sender.layer)


def _masks(
    specs: Sequence[PositionSpec], clean_dataset: DatasetLike, rows: _Rows, what: str
) -> Bool[Tensor, "query row"]:
    """Each query's positions as a mask over the rows (every (prompt, position))."""
    batch, n_pos = dataset_tokens(clean_dataset, "clean_dataset").shape
    by_spec: dict = {}
    for spec in specs:
        if _spec_key(spec) not in by_spec:
            pos = resolve_positions(spec, clean_dataset, what)
            mask = position_mask(pos, batch, n_pos)[rows.batch_idx, rows.pos_idx]
            by_spec[_spec_key(spec)] = mask
    return torch.stack([by_spec[_spec_key(spec)] for spec in specs])


def _deltas(
    model: HookedTransformer,
    senders: Sequence[Sender],
    clean: RunActivations,
    corrupted: RunActivations,
    rows: _Rows,
    keep: Bool[Tensor, "copy row"],
) -> Float[Tensor, "copy row d_model"]:
    """What each sender (all of one kind and layer) changes at the rows it is patched at."""
    kind, layer = senders[0].kind, senders[0].layer
    device = clean.resid_pre[0].device
    mask = keep.to(device)[:, :, None]
    if kind == "head":
        idx = torch.tensor([s.head for s in senders], device=device)
        clean_z = rows_of(clean.z[layer], rows.batch_idx, rows.pos_idx)[:, idx]  # [row, copy, d]
        corrupted_z = rows_of(corrupted.z[layer], rows.batch_idx, rows.pos_idx)[:, idx]
        dz = (corrupted_z - clean_z).transpose(0, 1) * mask  # [copy, row, d_head]
        return torch.einsum("crh,chd->crd", dz, model.W_O[layer][idx])
    clean_m = rows_of(clean.mlp_out[layer], rows.batch_idx, rows.pos_idx)
    corrupted_m = rows_of(corrupted.mlp_out[layer], rows.batch_idx, rows.pos_idx)
    return (corrupted_m - clean_m)[None] * mask


def _writes(
    model: HookedTransformer,
    queries: Sequence[PathQuery],
    copies: Sequence[int],
    clean: RunActivations,
    corrupted: RunActivations,
    rows: _Rows,
    send: Bool[Tensor, "copy row"],
) -> list[Write]:
    """Frozen propagation for queries whose senders share a kind and layer, and the receivers'
    patched inputs at the rows as writes into the stacked clean runs (copy ``copies[j]`` for
    query ``j``). Queries with one sender and sender positions (e.g. its paths into q, k and
    v) share one propagation: it does not depend on the receivers."""
    kind, layer = queries[0].sender.kind, queries[0].sender.layer
    unique: dict[tuple, int] = {}  # (sender, sender positions) -> its propagated copy
    of_query = [
        unique.setdefault((q.sender, _spec_key(q.sender_positions)), len(unique)) for q in queries
    ]
    first: dict[int, int] = {}  # propagated copy -> its first query (copies in that order)
    for j, u in enumerate(of_query):
        first.setdefault(u, j)
    picks = list(first.values())
    deltas = _deltas(model, [queries[j].sender for j in picks], clean, corrupted, rows, send[picks])
    x = entry_residual(model, clean, kind, layer, rows.batch_idx, rows.pos_idx)[None] + deltas
    reached: dict[Receiver, list[int]] = {}  # receiver -> queries (indices here) it is in
    for j, q in enumerate(queries):
        for r in q.receivers:
            if r.layer > layer:  # receivers at or below the sender see no change
                reached.setdefault(r, []).append(j)
    layers = sorted({r.layer for r in reached})
    _, resid_pre = propagate_frozen(model, x, layer, kind, rows.attn_out, layers[-1], layers)
    batch = clean.resid_pre[0].shape[0]
    device = x.device
    batch_idx, pos_idx = rows.batch_idx.to(device), rows.pos_idx.to(device)
    writes = []
    for r, members in reached.items():
        idx = torch.tensor([of_query[j] for j in members], device=device)
        value = receiver_value(model, r, resid_pre[r.layer][idx])  # [member, row, d_head]
        copy = torch.tensor([copies[j] for j in members], device=device)[:, None] * batch
        flat_b = (copy + batch_idx[None]).flatten()  # [member * row] stacked batch index
        flat_p = pos_idx.repeat(len(members))
        writes.append(Write(r, flat_b, flat_p, value.reshape(-1, value.shape[-1])))
    return writes


@dataclass(frozen=True)
class _Window:
    """The positions a pass reruns: for prompt ``b``, ``first[b]..last[b]``, laid out from
    slot 0 of a [batch, width] window; the clean keys and values before ``first[b]`` fill
    the ``prefix`` slots before it, right-aligned (``mask`` 0 marks the empty slots)."""

    first: Int[Tensor, " batch"]
    last: Int[Tensor, " batch"]
    prefix: list[tuple[Tensor, Tensor]] | None = None  # per layer [batch, prefix, kv_head, d_head]
    mask: Int[Tensor, "batch key"] | None = None  # prefix and window slots; None: all 1

    @property
    def width(self) -> int:
        return int((self.last - self.first).max()) + 1

    def positions(self) -> Int[Tensor, "batch slot"]:
        """The prompt position in each window slot (slots after ``last[b]`` repeat a position)."""
        slots = self.first[:, None] + torch.arange(self.width)[None]
        return torch.minimum(slots, self.last[:, None])


def _window(
    first: Int[Tensor, " batch"],
    last: Int[Tensor, " batch"],
    keys_values: list[tuple[Tensor, Tensor]] | None,
) -> _Window:
    """A `_Window` with the clean keys and values (all positions, `clean_keys_values`) that
    come before it, gathered into right-aligned prefix slots."""
    n_prefix = int(first.max())
    if not n_prefix or keys_values is None:
        return _Window(first, last)
    slot = torch.arange(n_prefix)[None] - (n_prefix - first[:, None])  # [batch, prefix] position
    mask = torch.cat(
        [slot >= 0, torch.ones(len(first), int((last - first).max()) + 1, dtype=torch.bool)], 1
    )
    device = keys_values[0][0].device
    idx = slot.clamp(min=0).to(device)
    batch_idx = torch.arange(len(first), device=device)[:, None]
    prefix = [(k[batch_idx, idx], v[batch_idx, idx]) for k, v in keys_values]
    return _Window(first, last, prefix, None if bool(mask.all()) else mask.long())


def _first_changed(
    query: PathQuery,
    clean_dataset: DatasetLike,
    differs: Bool[Tensor, "batch pos"],
) -> Int[Tensor, " batch"]:
    """Per prompt, the first position whose receivers can see the query's sender change: where
    it is patched, its receivers read, and the two runs differ (a causal model's activations
    are equal up to the first differing token); ``n_pos`` where there is none."""
    batch, n_pos = differs.shape
    masks = [
        position_mask(resolve_positions(spec, clean_dataset, what), batch, n_pos)
        for spec, what in (
            (query.sender_positions, "sender_positions"),
            (query.receiver_positions, "receiver_positions"),
        )
    ]
    changed = masks[0] & masks[1] & differs
    first = changed.long().argmax(dim=1)  # the first True, or 0 where there is none
    return torch.where(changed.any(dim=1), first, n_pos)


def _pass(
    model: HookedTransformer,
    queries: Sequence[PathQuery],
    clean: RunActivations,
    corrupted: RunActivations,
    rows: _Rows,
    send: Bool[Tensor, "copy row"],
    readout: Readout,
    window: _Window,
) -> Float[Tensor, "copy readout col"]:
    """One stacked pass: every query's receivers patched into its own copy of the clean run,
    on the window of positions where the pass can change anything the readout reads."""
    groups: dict[tuple[str, int], list[int]] = {}
    for j, q in enumerate(queries):
        groups.setdefault((q.sender.kind, q.sender.layer), []).append(j)
    writes: list[Write] = []
    for members in groups.values():
        sub = [queries[j] for j in members]
        writes += _writes(model, sub, members, clean, corrupted, rows, send[members])
    start = min(w.receiver.layer for w in writes)
    device = clean.resid_pre[start].device
    batch = clean.resid_pre[start].shape[0]
    first = window.first.to(device)
    # Each entry's window slot: its position less its prompt's window start.
    writes = [
        Write(w.receiver, w.flat_b, w.flat_p - first[w.flat_b % batch], w.values) for w in writes
    ]
    batch_idx = torch.arange(batch, device=device)[:, None]
    resid = clean.resid_pre[start][batch_idx, window.positions().to(device)]  # [batch, slot, d]
    rows_b = readout.batch_idx.to(device)
    at_slot = readout.pos_idx.to(device) - first[rows_b]  # readout positions inside the window
    at_readout = run_with_writes(
        model, resid, start, writes, len(queries), window.prefix, window.mask, (rows_b, at_slot)
    )  # [copy, readout row, d_model]
    return project_to_logits(model, at_readout, readout)


def _readout_span(
    out: Readout, batch: int, n_pos: int
) -> tuple[Int[Tensor, " batch"], Int[Tensor, " batch"]]:
    """Each prompt's first and last readout position (0 and 0 for a prompt the metric does
    not read): every window holds them."""
    idx, pos = out.batch_idx.cpu(), out.pos_idx.cpu()
    last = torch.zeros(batch, dtype=torch.long).scatter_reduce(
        0, idx, pos, "amax", include_self=False
    )
    low = torch.full((batch,), n_pos - 1).scatter_reduce(0, idx, pos, "amin", include_self=False)
    return low.minimum(last), last


def _plan_passes(
    model: HookedTransformer,
    queries: Sequence[PathQuery],
    clean: RunActivations,
    out: Readout,
    clean_dataset: DatasetLike,
    corrupted_toks: Tensor,
    clean_toks: Tensor,
    memory_budget: int | None,
    batch_size: int | None,
) -> list[tuple[Bool[Tensor, "batch pos"], _Window, list[int]]]:
    """The stacked passes: (receiver rows, window, queries) each.

    Passes hold queries with one receiver position (whose rows the frozen propagation
    rebuilds) and one start layer (a lower start costs whole layers for every copy); within
    those, queries whose windows start late share passes, each starting at its earliest.

    A causal model's positions after a prompt's last readout row never reach it, and those
    before the first row a query's sender changes there stay clean: a pass reruns only the
    window between, per prompt (one window for all prompts where the blocks depend on
    positions; the whole prompt where the attention cannot take a clean prefix).
    """
    batch, n_pos = clean_toks.shape
    low, last = _readout_span(out, batch, n_pos)
    windows = windows_supported(model)
    ragged = windows and model.cfg.positional_embedding_type == "standard"
    read = out.batch_idx.unique().cpu()  # the prompts the metric reads
    if not ragged:
        last = last.max().expand(batch)
    # [batch, pos] True from each prompt's first differing token on (earlier ones are equal)
    differs = (corrupted_toks.cpu() != clean_toks.cpu()).cummax(dim=1).values
    known: dict[tuple, Tensor] = {}  # (sender positions, receiver positions) -> first changed
    firsts = []
    for q in queries:
        key = (_spec_key(q.sender_positions), _spec_key(q.receiver_positions))
        if key not in known:
            known[key] = (
                _first_changed(q, clean_dataset, differs) if windows else torch.zeros_like(low)
            )
        firsts.append(known[key])
    prefix = clean_keys_values(model, clean_toks) if windows else None
    groups: dict[tuple, list[int]] = {}
    for i, q in enumerate(queries):
        groups.setdefault((_spec_key(q.receiver_positions), _start_layer(q)), []).append(i)
    passes = []
    for members in groups.values():
        where = queries[members[0]].receiver_positions
        pos = resolve_positions(where, clean_dataset, "receiver_positions")
        grid = position_mask(pos, batch, n_pos)
        rows = _Rows.build(clean, *grid.nonzero(as_tuple=True), None)
        size = senders_per_pass(model, rows, out, True, memory_budget, batch_size)
        members.sort(
            key=lambda i: (tuple(-firsts[i]), queries[i].sender.kind, queries[i].sender.layer)
        )
        for chunk in (members[i : i + size] for i in range(0, len(members), size)):
            first = torch.minimum(torch.stack([firsts[i] for i in chunk]).amin(0), low)
            if not ragged:  # one start for all prompts, from those the metric reads
                first = first[read].min().expand(batch)
            passes.append((grid, _window(first, last, prefix), chunk))
    return passes


@torch.no_grad()
def path_patch_queries(
    model: HookedTransformer,
    patching_metric: Metric,
    corrupted_dataset: DatasetLike,
    clean_dataset: DatasetLike,
    queries: Sequence[PathQuery],
    *,
    corrupted_cache=None,
    clean_cache=None,
    readout: str | Readout = "auto",
    batch_size: int | None = None,
    memory_budget: int | None = None,
    track: Track | None = None,
) -> Float[Tensor, " query *metric"]:
    """Path patching for many `PathQuery`s to heads, stacked into few passes.

    Each query's value is what ``path_patch(..., [query.sender], list(query.receivers),
    sender_positions=..., receiver_positions=...)`` returns for it.

    Args:
        corrupted_dataset, clean_dataset, corrupted_cache, clean_cache: the two runs, as in
            `ioi.path_patching.path_patch`.
        queries: the questions; each needs a receiver above its sender's layer.
        batch_size: at most this many queries per stacked pass (None: no limit but the budget).
        memory_budget: bytes a pass may use, as in `ioi.path_patching.path_patch` (None: the
            policy of `ioi.patching.plan.default_memory_budget`).
        track: wraps the passes, e.g. to show a progress bar.

    Returns:
        [query, *metric_shape] metric values on the CPU, in the order of ``queries``.
    """
    if not queries:
        raise ValueError("no queries given; e.g. [PathQuery(Sender('head', 0, 1), receivers)]")
    corrupted_toks = dataset_tokens(corrupted_dataset, "corrupted_dataset")
    clean_toks = dataset_tokens(clean_dataset, "clean_dataset")
    for receivers in {q.receivers for q in queries}:
        senders = list({q.sender for q in queries if q.receivers == receivers})
        _validate(
            model, senders, list(receivers), corrupted_toks, clean_toks, batch_size, memory_budget
        )
    clean, corrupted, out, metric_view = _activations_and_readout(
        model,
        patching_metric,
        [q.sender for q in queries],
        corrupted_toks,
        clean_toks,
        corrupted_cache,
        clean_cache,
        readout,
    )
    passes = _plan_passes(
        model, queries, clean, out, clean_dataset, corrupted_toks, clean_toks,
        memory_budget, batch_size,
    )  # fmt: skip
    results: list[Tensor | None] = [None] * len(queries)
    n_pos = clean_toks.shape[1]
    for grid, window, chunk in track(passes, "path-patching passes") if track else passes:
        at = torch.arange(n_pos)[None]
        in_window = grid & (at >= window.first[:, None]) & (at <= window.last[:, None])
        rows = _Rows.build(clean, *in_window.nonzero(as_tuple=True), None)
        sub = [queries[i] for i in chunk]
        send = _masks([q.sender_positions for q in sub], clean_dataset, rows, "sender_positions")
        logits = _pass(model, sub, clean, corrupted, rows, send, out, window)
        for i, values in zip(chunk, logits, strict=True):
            results[i] = metric_view(values)
    values = torch.stack(results)
    check_metric_finite(values, lambda i: f"query {queries[i]}")
    return values
