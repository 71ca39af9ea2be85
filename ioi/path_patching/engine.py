"""Path patching (Wang et al. 2022, section 3.1; Goldowsky-Dill et al. 2023), batched over senders.

Path patching asks how much of a sender's effect travels along one path. The sender's output
takes its value from the *corrupted* run (e.g. the ABC dataset); every other head's output stays
frozen at the *clean* run (e.g. the IOI dataset); MLPs are recomputed. The effect is read either
at the final residual stream (the logits) or at a receiver head's q/k/v input, which is then
patched into an otherwise unchanged clean run.

ARENA's path-patching exercises call the clean run ``orig`` and the corrupted one ``new``: the
ARENA-named wrappers (`get_path_patch_head_to_final_resid_post` and the others) keep its argument
names ``new_dataset, orig_dataset, new_cache, orig_cache``, and their errors quote them; below
that boundary everything says clean and corrupted.

Returned numbers are the patching metric of the patched logits. With the project's normalised
metric ``make_ioi_metric(clean_ld, corrupted_ld, ...)`` that is **1.0 for "no effect" (the clean
run) and 0.0 for "as bad as the corrupted run"**: an important name mover scores well below
1. ``make_logit_diff_metric`` gives the raw logit difference instead.

The engine is exact, not approximate: with attention frozen the patched residual is rebuilt
position by position through the MLPs only (see `ioi.path_patching.frozen`), on stacked copies,
one per sender; tests check it against `ioi.path_patching.plain`, one sender per forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.head import HeadLike
from ioi.inputs import check_metric_finite, check_token_pair
from ioi.patching.plan import check_memory_budget, copies_that_fit
from ioi.patching.readout import (
    Metric,
    MetricOnEntries,
    Readout,
    choose_readout,
    project_to_logits,
)
from ioi.path_patching.activations import ALL_PARTS, RunActivations, collect_activations
from ioi.path_patching.frozen import (
    entry_residual,
    head_deltas,
    mlp_delta,
    propagate_frozen,
    rows_of,
)
from ioi.path_patching.nodes import (
    Receiver,
    Sender,
    all_head_senders,
    all_mlp_senders,
    check_sender,
    check_supported,
    make_receivers,
)
from ioi.path_patching.positions import (
    DatasetLike,
    PositionSpec,
    dataset_tokens,
    position_mask,
    resolve_positions,
)
from ioi.path_patching.receivers import receiver_value, run_with_receivers
from ioi.wrappers import body_from


@dataclass(frozen=True)
class ArgNames:
    """What error messages call the arguments that carry the two runs."""

    corrupted_dataset: str = "corrupted_dataset"
    clean_dataset: str = "clean_dataset"
    corrupted_cache: str = "corrupted_cache"
    clean_cache: str = "clean_cache"


OWN_NAMES = ArgNames()
ARENA_NAMES = ArgNames("new_dataset", "orig_dataset", "new_cache", "orig_cache")
"""The ARENA-named wrappers' arguments: ``new`` is the corrupted run, ``orig`` the clean one."""


@dataclass(frozen=True)
class _Rows:
    """A set of (batch, pos) rows, the clean run's attention outputs there, and sender masks."""

    batch_idx: Tensor
    pos_idx: Tensor
    attn_out: list[Tensor]  # per layer [row, d_model]
    keep: Tensor  # [row] True where the sender is patched (sender positions)

    @classmethod
    def build(cls, clean: RunActivations, batch_idx, pos_idx, sender_pos) -> _Rows:
        batch, n_pos = clean.resid_pre[0].shape[:2]
        keep = position_mask(sender_pos, batch, n_pos)[batch_idx, pos_idx]
        attn = [rows_of(a, batch_idx, pos_idx) for a in clean.attn_out]
        return cls(batch_idx, pos_idx, attn, keep)


def _validate(
    model: HookedTransformer,
    senders: Sequence[Sender],
    receivers: Sequence[Receiver] | None,
    corrupted_toks: Tensor,
    clean_toks: Tensor,
    batch_size: int | None,
    memory_budget: int | None,
    names: ArgNames = OWN_NAMES,
) -> None:
    check_supported(model)
    if isinstance(senders, Sender):
        raise TypeError(f"senders is a list of Sender values; got one, {senders!r}: pass [it]")
    if not senders:
        raise ValueError("no senders given; e.g. all_head_senders(model) or [Sender('head', 0, 1)]")
    for sender in senders:
        check_sender(model, sender)
    if receivers is not None:
        if not receivers:
            raise ValueError("receivers is an empty list; pass None to patch to the logits")
        for receiver in receivers:
            receiver.check(model)
        top = max(r.layer for r in receivers)
        late = [s for s in senders if s.layer >= top]
        if late:
            raise ValueError(
                f"senders {late} are at or above the highest receiver layer {top}: a sender "
                f"can only reach receivers in later layers; valid sender layers are 0..{top - 1}"
            )
    check_token_pair(
        model, corrupted_toks, clean_toks, (names.corrupted_dataset, names.clean_dataset)
    )
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be None (automatic) or an int >= 1, got {batch_size!r}")
    check_memory_budget(memory_budget)


def _chunks(senders: Sequence[Sender], size: int) -> list[list[int]]:
    """Indices of senders grouped by (kind, layer), split into stacked passes of ``size``."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, s in enumerate(senders):
        groups.setdefault((s.kind, s.layer), []).append(i)
    return [idx[i : i + size] for idx in groups.values() for i in range(0, len(idx), size)]


def _sender_deltas(
    model: HookedTransformer,
    senders: Sequence[Sender],
    clean: RunActivations,
    corrupted: RunActivations,
    rows: _Rows,
) -> Float[Tensor, "sender row d_model"]:
    """Step 3: what each sender (all of one kind and layer) changes at the rows."""
    kind, layer = senders[0].kind, senders[0].layer
    if kind == "head":
        clean_z = rows_of(clean.z[layer], rows.batch_idx, rows.pos_idx)
        corrupted_z = rows_of(corrupted.z[layer], rows.batch_idx, rows.pos_idx)
        heads = [s.head for s in senders]
        return head_deltas(model, layer, heads, clean_z, corrupted_z, rows.keep)
    clean_m = rows_of(clean.mlp_out[layer], rows.batch_idx, rows.pos_idx)
    corrupted_m = rows_of(corrupted.mlp_out[layer], rows.batch_idx, rows.pos_idx)
    return mlp_delta(clean_m, corrupted_m, rows.keep).expand(len(senders), -1, -1)


def _patched_logits_at_final(
    model: HookedTransformer,
    senders: Sequence[Sender],
    clean: RunActivations,
    deltas: Tensor,
    rows: _Rows,
    readout: Readout,
) -> Float[Tensor, "sender row col"]:
    """Step 4 (to the logits): frozen propagation of each sender's change, then unembedding."""
    kind, layer = senders[0].kind, senders[0].layer
    x = entry_residual(model, clean, kind, layer, rows.batch_idx, rows.pos_idx)[None] + deltas
    x, _ = propagate_frozen(model, x, layer, kind, rows.attn_out, model.cfg.n_layers)
    return project_to_logits(model, x, readout)


def _patched_logits_via_receivers(
    model: HookedTransformer,
    senders: Sequence[Sender],
    clean: RunActivations,
    deltas: Tensor,
    rows: _Rows,
    receivers: Sequence[Receiver],
    readout: Readout,
) -> Float[Tensor, "sender row col"]:
    """Steps 4-5 (to heads): frozen propagation to each receiver layer, receivers' inputs,
    then a run of the clean input with those inputs patched in."""
    kind, layer = senders[0].kind, senders[0].layer
    reached = [r for r in receivers if r.layer > layer]  # receivers at or below see no change
    layers = sorted({r.layer for r in reached})
    x = entry_residual(model, clean, kind, layer, rows.batch_idx, rows.pos_idx)[None] + deltas
    _, resid_pre = propagate_frozen(model, x, layer, kind, rows.attn_out, layers[-1], layers)
    values = {r: receiver_value(model, r, resid_pre[r.layer]) for r in reached}
    at_readout = run_with_receivers(
        model,
        clean.resid_pre[layers[0]],
        layers[0],
        values,
        rows.batch_idx,
        rows.pos_idx,
        len(senders),
        read=(readout.batch_idx, readout.pos_idx),
    )  # [sender, readout row, d_model]
    return project_to_logits(model, at_readout, readout)


def senders_per_pass(
    model: HookedTransformer,
    rows: _Rows,
    readout: Readout,
    full_run: bool,
    memory_budget: int | None,
    batch_size: int | None,
) -> int:
    """How many senders one pass stacks: `ioi.patching.plan.copies_that_fit` (the policy
    activation patching uses), for one sender's rough bytes and the token rows it runs through
    whole blocks (none to the logits: only MLPs, which the CPU cache bound leaves alone)."""
    cfg = model.cfg
    width = (cfg.d_mlp or 0) + 4 * cfg.d_model
    n_cols = cfg.d_vocab if readout.vocab_idx is None else len(readout.vocab_idx)
    itemsize = torch.empty((), dtype=cfg.dtype).element_size()
    n_rows = max(len(rows.keep), readout.n_rows)
    per_row = n_rows * (width + n_cols)
    batch, n_pos = readout.shape[:2]
    # A run of the clean input over the whole batch (to heads): activations, scores, patterns.
    per_run = batch * n_pos * (width + 4 * cfg.n_heads * cfg.d_head + 2 * cfg.n_heads * n_pos)
    per_run = per_run if full_run else 0
    run_rows = batch * n_pos if full_run else 0
    device = torch.device(cfg.device or "cpu")
    copy_bytes = itemsize * (per_row + per_run)
    return copies_that_fit(cfg, copy_bytes, run_rows, device, memory_budget, batch_size)


def _activations_and_readout(
    model: HookedTransformer,
    metric: Metric,
    senders: Sequence[Sender],
    corrupted_toks: Tensor,
    clean_toks: Tensor,
    corrupted_cache,
    clean_cache,
    readout: str | Readout,
    names: ArgNames = OWN_NAMES,
) -> tuple[RunActivations, RunActivations, Readout, MetricOnEntries]:
    """Steps 1-2: both runs' activations (clean, corrupted), the readout, the metric wrapper."""
    sender_parts = tuple({"head": "z", "mlp": "mlp_out"}[s.kind] for s in senders)
    want_logits = isinstance(readout, str) and readout == "auto"
    clean, clean_logits = collect_activations(
        model, clean_toks, ALL_PARTS, clean_cache, want_logits, names.clean_cache
    )
    corrupted, _ = collect_activations(
        model, corrupted_toks, sender_parts, corrupted_cache, what=names.corrupted_cache
    )
    shape = (clean_toks.shape[0], clean_toks.shape[1], model.cfg.d_vocab)
    out, buffer = choose_readout(readout, metric, clean_logits, shape)
    device = clean.resid_pre[0].device
    return clean, corrupted, out, MetricOnEntries(metric, out, device, model.cfg.dtype, buffer)


def _rows_for(
    clean: RunActivations,
    readout: Readout,
    receivers: Sequence[Receiver] | None,
    sender_pos: Tensor | None,
    receiver_pos: Tensor | None,
) -> _Rows:
    """The rows rebuilt with attention frozen: the readout's (to the logits) or the
    receivers' positions (to heads)."""
    if receivers is None:
        return _Rows.build(clean, readout.batch_idx, readout.pos_idx, sender_pos)
    batch, n_pos = clean.resid_pre[0].shape[:2]
    grid = position_mask(receiver_pos, batch, n_pos).nonzero(as_tuple=True)
    return _Rows.build(clean, grid[0], grid[1], sender_pos)


@torch.no_grad()
def _path_patch(
    names: ArgNames,
    model: HookedTransformer,
    patching_metric: Metric,
    corrupted_dataset: DatasetLike,
    clean_dataset: DatasetLike,
    senders: Sequence[Sender],
    receivers: Sequence[Receiver] | None,
    *,
    corrupted_cache,
    clean_cache,
    sender_positions: PositionSpec,
    receiver_positions: PositionSpec = None,
    readout: str | Readout,
    batch_size: int | None,
    memory_budget: int | None,
) -> Float[Tensor, " sender *metric"]:
    """The body of `path_patch` (whose docstring numbers these steps) and of the ARENA-named
    wrappers: errors call the two runs' arguments what ``names`` says."""
    corrupted_toks = dataset_tokens(corrupted_dataset, names.corrupted_dataset)
    clean_toks = dataset_tokens(clean_dataset, names.clean_dataset)
    _validate(
        model, senders, receivers, corrupted_toks, clean_toks, batch_size, memory_budget, names
    )
    sender_pos = resolve_positions(sender_positions, clean_dataset, "sender_positions")
    receiver_pos = resolve_positions(receiver_positions, clean_dataset, "receiver_positions")
    clean, corrupted, out, metric_view = _activations_and_readout(  # 1. and 2.
        model,
        patching_metric,
        senders,
        corrupted_toks,
        clean_toks,
        corrupted_cache,
        clean_cache,
        readout,
        names,
    )
    rows = _rows_for(clean, out, receivers, sender_pos, receiver_pos)
    size = senders_per_pass(model, rows, out, receivers is not None, memory_budget, batch_size)
    results: list[Tensor | None] = [None] * len(senders)
    for chunk in _chunks(senders, size):
        group = [senders[i] for i in chunk]
        deltas = _sender_deltas(model, group, clean, corrupted, rows)  # 3.
        if receivers is None:  # 4.
            logits = _patched_logits_at_final(model, group, clean, deltas, rows, out)
        else:  # 4. and 5.
            logits = _patched_logits_via_receivers(
                model, group, clean, deltas, rows, receivers, out
            )
        for i, values in zip(chunk, logits, strict=True):  # 6.
            results[i] = metric_view(values)
    values = torch.stack(results)
    check_metric_finite(values, lambda i: f"sender {senders[i]}")
    return values


@body_from(_path_patch, OWN_NAMES)
def path_patch(
    model: HookedTransformer,
    patching_metric: Metric,
    corrupted_dataset: DatasetLike,
    clean_dataset: DatasetLike,
    senders: Sequence[Sender],
    receivers: Sequence[Receiver] | None = None,
    *,
    corrupted_cache=None,
    clean_cache=None,
    sender_positions: PositionSpec = None,
    receiver_positions: PositionSpec = None,
    readout: str | Readout = "auto",
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> Float[Tensor, " sender *metric"]:
    """Path patching from each sender to the logits, or to the receivers' inputs.

    Steps:
        1. Activations of the clean and the corrupted run (`collect_activations`).
        2. Readout: the logit entries the metric reads (`choose_readout`).
        3. Sender deltas: what each sender's corrupted output changes in the residual stream,
           one stacked copy per sender (`head_deltas`, `mlp_delta`).
        4. Frozen propagation: carry each change through the MLPs with all attention frozen,
           to the final residual or to each receiver layer (`propagate_frozen`).
        5. Receivers only: the receivers' q/k/v from the patched residual, written into a
           run of the clean input (`receiver_value`, `run_with_receivers`).
        6. Metric: unembed at the readout entries and apply the metric per sender
           (`project_to_logits`, `MetricOnEntries`).

    Args:
        model: a HookedTransformer with pre-norm GPT-2-style blocks.
        patching_metric: logits [batch, pos, d_vocab] -> scalar (or any fixed shape).
        corrupted_dataset, clean_dataset: aligned datasets (or token tensors), e.g. ABC and
            IOI (ARENA's ``new_dataset``, ``orig_dataset``, in this order).
        senders: `Sender`s to sweep over.
        receivers: `Receiver`s; None patches to the final residual stream (the logits).
        corrupted_cache, clean_cache: activation caches of the two runs, if already computed
            (e.g. `cache_for_path_patching`).
        sender_positions: where the sender is patched (None: everywhere, a word_idx key or a
            [batch] tensor); elsewhere it keeps its clean output.
        receiver_positions: where the receivers' inputs are patched (same forms).
        readout: ``"auto"`` computes only the logits the metric reads (see
            `ioi.patching.readout`), ``"all"`` computes every logit; a `Readout` from
            `detect_readout` is reused as it is (for many calls with one metric).
        batch_size: at most this many senders per stacked pass; None: as many as the memory
            budget allows (on a CPU also a cache-sized pass, as in activation patching).
        memory_budget: bytes a pass may use; None: half the free GPU memory, or a quarter of
            free RAM up to 2 GiB (`ioi.patching.plan.default_memory_budget`, the policy
            activation patching uses). Anything but None or an int > 0 raises.

    Returns:
        [sender, *metric_shape] metric values on the CPU, in the order of ``senders``. A
        per-prompt metric (``make_ioi_metric(..., reduce="none")``) gives [sender, batch]:
        their mean over prompts is the scalar metric's result, and
        ``ioi.statistics.bootstrap(values)`` their intervals over prompts.
    """
    ...


def _every_sender(
    kind: str,
    receivers: Sequence[Receiver] | None,
    model: HookedTransformer,
    patching_metric: Metric,
    new_dataset: DatasetLike,
    orig_dataset: DatasetLike,
    new_cache: Any,
    orig_cache: Any,
    **options: Any,
) -> Tensor:
    """The body of the ARENA-named wrappers: every head (``kind="head"``) or MLP as a sender,
    to the logits (``receivers`` None) or to the receivers; ARENA's ``new``/``orig`` arguments
    become the corrupted/clean run here.

    Returns:
        [layer, head] (heads) or [layer] (MLPs) metric values; NaN for senders at or above the
        highest receiver layer, from which no path leads to a receiver.
    """
    cfg = model.cfg
    shape = (cfg.n_layers, cfg.n_heads) if kind == "head" else (cfg.n_layers,)
    top = cfg.n_layers
    if receivers is not None:
        for receiver in receivers:
            receiver.check(model)
        top = max(r.layer for r in receivers)
        if top == 0 or (kind == "mlp" and cfg.attn_only):  # no sender below the receivers
            names = (ARENA_NAMES.corrupted_dataset, ARENA_NAMES.clean_dataset)
            runs = (dataset_tokens(new_dataset, names[0]), dataset_tokens(orig_dataset, names[1]))
            check_token_pair(model, *runs, names)  # an all-NaN grid, but only for good input
            return torch.full(shape, torch.nan)
    senders = (all_head_senders if kind == "head" else all_mlp_senders)(model, below_layer=top)
    values = _path_patch(
        ARENA_NAMES,
        model,
        patching_metric,
        new_dataset,
        orig_dataset,
        senders,
        receivers,
        corrupted_cache=new_cache,
        clean_cache=orig_cache,
        **options,
    )
    if values.ndim != 1:
        raise ValueError(
            f"the patching metric must return a scalar here, got shape {tuple(values.shape[1:])}; "
            "use path_patch() for metrics with a shape (e.g. per prompt)"
        )
    grid = torch.full(shape, torch.nan, dtype=values.dtype)
    grid[:top] = values.reshape(top, *shape[1:])
    return grid


def _to_heads(
    kind: str,
    receiver_heads: Sequence[HeadLike],
    receiver_input: str | Sequence[str],
    *rest: Any,
    **options: Any,
) -> Tensor:
    """The body of the ``*_to_heads`` wrappers, whose receivers come first (as in ARENA)."""
    return _every_sender(kind, make_receivers(receiver_heads, receiver_input), *rest, **options)


@body_from(_every_sender, "head", None)
def get_path_patch_head_to_final_resid_post(
    model: HookedTransformer,
    patching_metric: Metric,
    new_dataset: DatasetLike,
    orig_dataset: DatasetLike,
    new_cache=None,
    orig_cache=None,
    *,
    sender_positions: PositionSpec = None,
    readout: str | Readout = "auto",
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> Float[Tensor, "layer head"]:
    """Path patching from every head to the final residual stream (the head's direct path).

    Each head's output takes its value in the corrupted run ``new_dataset`` (at
    ``sender_positions``); every other head is frozen at the clean run ``orig_dataset`` and MLPs
    are recomputed; the metric reads the resulting logits.
    ``batch_size`` and ``memory_budget`` (bytes; None: the default policy) size the stacked
    passes as in `path_patch`.

    Returns:
        [layer, head] metric of the patched logits. With the normalised IOI metric (1 = clean,
        0 = corrupted run) a name mover scores well below 1 and a negative name mover above 1.

    Example:
        >>> metric = make_ioi_metric(ioi_ld, abc_ld, ioi.answer_tokens, ioi.word_idx["end"])
        >>> grid = get_path_patch_head_to_final_resid_post(model, metric, abc, ioi)
    """
    ...


@body_from(_every_sender, "mlp", None)
def get_path_patch_mlp_to_final_resid_post(
    model: HookedTransformer,
    patching_metric: Metric,
    new_dataset: DatasetLike,
    orig_dataset: DatasetLike,
    new_cache=None,
    orig_cache=None,
    *,
    sender_positions: PositionSpec = None,
    readout: str | Readout = "auto",
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> Float[Tensor, " layer"]:
    """Path patching from every MLP to the final residual stream: [layer] metric values.

    The MLP's output takes its value in the corrupted run (``new_dataset``); all heads are
    frozen at the clean run (``orig_dataset``) and the MLPs after it are recomputed.
    ``batch_size`` and ``memory_budget`` (bytes; None: the default policy) size the stacked
    passes as in `path_patch`.
    """
    ...


@body_from(_to_heads, "head")
def get_path_patch_head_to_heads(
    receiver_heads: Sequence[tuple[int, int]],
    receiver_input: str | Sequence[str],
    model: HookedTransformer,
    patching_metric: Metric,
    new_dataset: DatasetLike,
    orig_dataset: DatasetLike,
    new_cache=None,
    orig_cache=None,
    *,
    sender_positions: PositionSpec = None,
    receiver_positions: PositionSpec = None,
    readout: str | Readout = "auto",
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> Float[Tensor, "layer head"]:
    """Path patching from every earlier head to the receivers' ``q``, ``k`` and/or ``v``.

    For each sender: its output takes its value in the corrupted run (``new_dataset``) with all
    other heads frozen at the clean run (``orig_dataset``; MLPs recomputed); the receivers'
    inputs are recomputed from that residual stream and patched into an otherwise unchanged
    clean run (at ``receiver_positions``); the metric reads its logits.
    ``batch_size`` and ``memory_budget`` (bytes; None: the default policy) size the stacked
    passes as in `path_patch`.

    Returns:
        [layer, head] metric values. Only senders in layers below the highest receiver layer
        can reach a receiver; the rows for layers at or above it are NaN (no such path: not
        0.0, which for the normalised metric would read as "the whole effect"). Plots show
        NaN as blank; ``grid.nan_to_num()`` or ``grid[:top]`` if you need plain numbers.

    Raises:
        ValueError: unknown receiver input, receiver out of range, no receivers, a
            positions key that is not in the dataset's word_idx, or a memory_budget <= 0.
        TypeError: a memory_budget that is not None or an int.

    Example:
        >>> grid = get_path_patch_head_to_heads([(9, 9), (9, 6)], "q", model, metric, abc, ioi,
        ...                                     receiver_positions="end")
    """
    ...


@body_from(_to_heads, "mlp")
def get_path_patch_mlp_to_heads(
    receiver_heads: Sequence[tuple[int, int]],
    receiver_input: str | Sequence[str],
    model: HookedTransformer,
    patching_metric: Metric,
    new_dataset: DatasetLike,
    orig_dataset: DatasetLike,
    new_cache=None,
    orig_cache=None,
    *,
    sender_positions: PositionSpec = None,
    receiver_positions: PositionSpec = None,
    readout: str | Readout = "auto",
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> Float[Tensor, " layer"]:
    """Path patching from every earlier MLP to the receivers' inputs: [layer] metric values.

    Entries for MLPs at or above the highest receiver layer are NaN: no path leads from
    them to a receiver (see `get_path_patch_head_to_heads`).
    ``batch_size`` and ``memory_budget`` (bytes; None: the default policy) size the stacked
    passes as in `path_patch`.
    """
    ...
