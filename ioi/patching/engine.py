"""The patching engine: many sites per forward pass, each pass starting where its sites are.

`patch_sites` runs the receiver once, then for each planned pass stacks ``k`` copies of the
batch (copy ``i`` gets site ``i`` patched), starts the model at the sites' layer from the cached
residual stream, reuses cached keys/values for positions before the first changed one, and
applies the metric to each copy's own [batch, pos, d_vocab] logits. Sites whose patch changes
nothing (source equal to receiver on every patched entry) cost no pass at all.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.inputs import check_baseline_finite, check_metric_finite, check_model_tokens
from ioi.patching.plan import Pass, copies_per_pass, plan_passes
from ioi.patching.readout import Metric, NaNLogits, detect_readout
from ioi.patching.receiver import ReceiverRun, run_receiver
from ioi.patching.sites import Site, check_site, n_heads_at
from ioi.patching.sources import Source
from ioi.patching.tail import (
    block_after_z,
    block_after_z_applies,
    logits_at_rows,
    logits_from_layer,
)


def metric_value(metric: Metric, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
    """Apply a user metric and insist on a single number; raises `ValueError` otherwise."""
    return _as_scalar(metric(logits), logits)


def _as_scalar(value: object, logits: Tensor) -> Tensor:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return torch.tensor(float(value), device=logits.device)
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"the patching metric must return a scalar (one number) for logits of shape "
            f"{tuple(logits.shape)}, got {shape}; average over the batch, e.g. `.mean()`"
        )
    return value.reshape(())


def metric_output(
    metric: Metric, logits: Float[Tensor, "batch pos d_vocab"]
) -> Float[Tensor, "*batch"]:
    """Apply a user metric that returns a scalar or one value per prompt ([batch]).

    A [batch] result (even for a batch of one) is kept per prompt; any other one-element
    result is a scalar, as in `metric_value`. Raises `ValueError` for any other shape.
    """
    value = metric(logits)
    batch = logits.shape[0]
    if isinstance(value, Tensor) and value.shape == (batch,):
        return value
    if isinstance(value, Tensor) and value.numel() != 1:
        raise ValueError(
            f"the patching metric must return a scalar or one value per prompt (shape "
            f"[{batch}]) for logits of shape {tuple(logits.shape)}, got {tuple(value.shape)}"
        )
    return _as_scalar(value, logits)


def declared_rows(
    metric: Metric, batch: int, n_pos: int, start: int, copies: int, device: torch.device
) -> Tensor | None:
    """Positions the metric says it reads (``metric.logit_positions``), relative to ``start``.

    A metric may carry ``logit_positions``: ``"last"`` or a [batch] tensor of positions (the
    factories in `ioi.metrics` set it). Then only those logits are computed, one row per copy
    and prompt. None (compute every logit) when the metric declares nothing, or when a declared
    position lies in the prefix this pass does not recompute.
    """
    declared = getattr(metric, "logit_positions", None)
    if declared is None:
        return None
    if isinstance(declared, str):
        if declared != "last":
            raise ValueError(
                f"metric.logit_positions must be 'last' or a [batch] tensor, got {declared!r}"
            )
        positions = torch.full((batch,), n_pos - 1, dtype=torch.long)
    else:
        positions = torch.as_tensor(declared, dtype=torch.long).cpu()
        if positions.shape != (batch,) or positions.min() < 0 or positions.max() >= n_pos:
            raise ValueError(
                f"metric.logit_positions must hold {batch} positions in [0, {n_pos}), "
                f"got shape {tuple(positions.shape)}"
            )
    if positions.min() < start:
        return None
    return (positions - start).repeat(copies).to(device)  # copy-major, like the stacked batch


def declared_tokens(metric: Metric, d_vocab: int, device: torch.device) -> Tensor | None:
    """Vocabulary ids the metric says it reads (``metric.logit_tokens``), or None (all of them).

    Declared together with ``logit_positions``, only these columns of the declared rows are
    unembedded (two per prompt for a logit difference, instead of the whole vocabulary); every
    other logit the metric is given is NaN.
    """
    declared = getattr(metric, "logit_tokens", None)
    if declared is None:
        return None
    tokens = torch.as_tensor(declared).cpu()
    if (
        tokens.ndim != 1
        or tokens.numel() == 0
        or tokens.dtype.is_floating_point
        or tokens.dtype == torch.bool
        or tokens.min() < 0
        or tokens.max() >= d_vocab
    ):
        raise ValueError(
            f"metric.logit_tokens must be a non-empty 1-D tensor of token ids in [0, {d_vocab}), "
            f"got {tokens.dtype} of shape {tuple(tokens.shape)}"
        )
    return tokens.to(device=device, dtype=torch.long)


def patch_sites(
    model: HookedTransformer,
    tokens: Int[Tensor, "batch pos"],
    sites: Sequence[Site],
    metric: Metric,
    source: Source,
    *,
    max_sites_per_pass: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
    allow_per_prompt: bool = True,
) -> Float[Tensor, " site *batch"]:
    """Metric of the run on ``tokens`` with each site patched from ``source``, one value per site.

    A metric that returns one value per prompt ([batch]) gives [site, batch] values instead:
    the per-prompt effects, whose mean over prompts is what the mean metric would give.

    Args:
        model: any `HookedTransformer`.
        tokens: input of the run being patched (the "corrupted" run when denoising).
        sites: where to patch.
        metric: ``logits [batch, pos, d_vocab] -> scalar`` (or ``-> [batch]``), applied to each
            site's logits.
        source: `RunSource`, `ZeroSource` or `MeanSource`.
        max_sites_per_pass: at most this many sites (copies of the batch) per forward pass.
        memory_budget: bytes a pass may use; default half the free GPU memory, or up to 2 GiB
            of RAM. Passes that still run out of memory are halved and retried.
        progress: show a progress bar.
        allow_per_prompt: False refuses a per-prompt metric with a `ValueError` (the drop-ins,
            whose TransformerLens originals return one number per site).

    Returns:
        [site] metric values (or [site, batch] for a per-prompt metric), on the model's device.
    """
    check_model_tokens(model, tokens)
    if not sites:
        raise ValueError("no sites to patch")
    batch, n_pos = tokens.shape
    for site in sites:
        check_site(site, model.cfg, batch, n_pos)
    device = torch.device(model.cfg.device or "cpu")
    with torch.inference_mode():
        receiver = run_receiver(model, tokens, {site.hook_name for site in sites})
        measure = metric_output if allow_per_prompt else metric_value
        baseline = measure(metric, receiver.logits)
        check_baseline_finite(baseline)
        declared_tokens(metric, model.cfg.d_vocab, device)  # a bad declaration fails here
        starts = first_changes(model, sites, receiver, source)
        capacity = copies_per_pass(
            model.cfg, batch, n_pos, device, memory_budget, max_sites_per_pass
        )
        passes = plan_passes([s.layer for s in sites], starts, n_pos, batch, capacity, device)
        fast = with_detected_readout(metric, receiver.logits)
        with _progress_bar(progress, len(sites)) as advance:
            advance(sum(start is None for start in starts))
            flat = _sweep(model, receiver, sites, starts, passes, source, fast, baseline, advance)
            if fast is not metric and not bool(flat.isfinite().all()):
                # Detection was fooled (the metric reads other logits once a patch changes
                # them): compute every logit instead.
                flat = _sweep(model, receiver, sites, starts, passes, source, metric, baseline)
        check_metric_finite(flat, lambda i: sites[i].describe(), baseline)
        flat = flat.tolist()
    dtype = torch.float64 if model.cfg.dtype == torch.float64 else torch.float32
    return torch.tensor(flat, dtype=dtype, device=device)


def _sweep(
    model: HookedTransformer,
    receiver: ReceiverRun,
    sites: Sequence[Site],
    starts: Sequence[int | None],
    passes: list[Pass],
    source: Source,
    metric: Metric,
    baseline: Tensor,
    advance: Callable[[int], None] = lambda n: None,
) -> Float[Tensor, " site *batch"]:
    """Every planned pass; sites that change nothing keep the baseline."""
    values = [baseline] * len(sites)
    buffer = NaNLogits()
    for p, pass_values in _run_all(model, receiver, sites, starts, passes, source, metric, buffer):
        for site_id, value in zip(p.site_ids, pass_values, strict=True):
            if value.shape != baseline.shape:
                raise ValueError(
                    f"the metric returned shape {tuple(value.shape)} when patching "
                    f"{sites[site_id].describe()} but {tuple(baseline.shape)} on the unpatched "
                    "run; it must return the same shape (a scalar or [batch]) every time"
                )
            values[site_id] = value
        advance(len(p.site_ids))
    return torch.stack(values)


class DetectedReadout:
    """A metric that declares nothing, with the logits detection found it reads declared for it.

    `ioi.patching.readout.detect_readout` finds them (gradient candidates, confirmed bitwise
    with NaN and with unrelated values elsewhere); when they are one position per prompt, the
    engine serves this metric as fast as one built by the `ioi.metrics` factories.
    """

    def __init__(self, metric: Metric, positions: Tensor, tokens: Tensor | None) -> None:
        self.metric = metric
        self.logit_positions = positions
        self.logit_tokens = tokens

    def __call__(self, logits: Tensor) -> Tensor | float:
        return self.metric(logits)


def with_detected_readout(metric: Metric, logits: Float[Tensor, "batch pos d_vocab"]) -> Metric:
    """``metric`` itself if it declares its logits or reads more than one position per prompt;
    else a `DetectedReadout` declaring what it was found to read on ``logits``."""
    if getattr(metric, "logit_positions", None) is not None:
        return metric
    with torch.inference_mode(False):
        plain = logits.clone()  # a normal tensor, so the detection can take a gradient
        try:
            readout = detect_readout(metric, plain)
        except Exception:  # noqa: BLE001 - e.g. a metric that refuses NaN: serve it every logit
            return metric
    batch = logits.shape[0]
    if readout.is_full or not torch.equal(readout.batch_idx, torch.arange(batch)):
        return metric
    return DetectedReadout(metric, readout.pos_idx.clone(), readout.vocab_idx)


def first_changes(
    model: HookedTransformer, sites: Sequence[Site], receiver: ReceiverRun, source: Source
) -> list[int | None]:
    """Per site, the first (destination) position its patch changes; None if it changes nothing.

    Without prefix reuse every changing site starts at 0.
    """
    by_hook: dict[str, list[int]] = defaultdict(list)
    for site_id, site in enumerate(sites):
        by_hook[site.hook_name].append(site_id)
    starts: list[int | None] = [None] * len(sites)
    for name, site_ids in by_hook.items():
        recv = receiver.acts[name]
        differs = _differs(recv, source.value(name, recv), sites[site_ids[0]])
        for site_id in site_ids:
            site = sites[site_id]
            n_heads = n_heads_at(site.component, model.cfg)
            changed = site.mask(receiver.batch, receiver.n_pos, n_heads) & differs
            by_pos = changed.movedim(site.pos_axis, 0).flatten(1).any(1)  # [pos]
            if by_pos.any():
                starts[site_id] = int(by_pos.nonzero()[0, 0]) if receiver.reuse_prefix else 0
    return starts


def _differs(recv: Tensor, src: Tensor, site: Site) -> Bool[Tensor, "batch ..."]:
    """Where patching would change the activation, over the site's selectable dims, on CPU."""
    differs = (recv != src).expand_as(recv)
    if site.component != "pattern":
        differs = differs.any(dim=-1)  # drop the d_model / d_head feature dim
    return differs.cpu()


def _run_all(
    model: HookedTransformer,
    receiver: ReceiverRun,
    sites: Sequence[Site],
    starts: Sequence[int | None],
    passes: list[Pass],
    source: Source,
    metric: Metric,
    buffer: NaNLogits,
) -> Iterator[tuple[Pass, list[Tensor]]]:
    """Run every pass; a pass that runs out of memory is split in half and retried."""
    queue = deque(passes)
    capacity = max((len(p.site_ids) for p in passes), default=1)
    while queue:
        p = queue.popleft()
        if len(p.site_ids) > capacity:
            queue.extendleft(reversed(_halve(p, starts)))
            continue
        try:
            pass_values = run_pass(model, receiver, sites, p, source, metric, buffer)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not _is_oom(err) or len(p.site_ids) == 1:
                raise
            _release_memory(model)
            capacity = max(1, len(p.site_ids) // 2)
            queue.extendleft(reversed(_halve(p, starts)))
            continue
        yield p, pass_values


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err)


def _release_memory(model: HookedTransformer) -> None:
    if torch.cuda.is_available() and str(model.cfg.device).startswith("cuda"):
        torch.cuda.empty_cache()


def _halve(p: Pass, starts: Sequence[int | None]) -> list[Pass]:
    half = len(p.site_ids) // 2
    parts = (p.site_ids[:half], p.site_ids[half:])
    return [Pass(p.layer, min(starts[i] for i in ids), ids) for ids in parts]


def run_pass(
    model: HookedTransformer,
    receiver: ReceiverRun,
    sites: Sequence[Site],
    p: Pass,
    source: Source,
    metric: Metric,
    buffer: NaNLogits | None = None,
) -> list[Tensor]:
    """One forward pass with ``len(p.site_ids)`` stacked copies; returns one metric per copy.

    ``buffer`` lends the NaN-filled logits a declared-position metric reads; pass the same one
    to every pass of a sweep so it is filled once.
    """
    copies, start, layer = len(p.site_ids), p.start_pos, p.layer
    pass_sites = [sites[i] for i in p.site_ids]
    fired: set[str] = set()
    resid = receiver.residual(layer, start, copies)
    if _starts_after_attention(model, pass_sites, layer):
        # Only the heads' outputs change: skip this layer's attention, start at the next block.
        z = _patched_z(model, receiver, pass_sites, start, source)
        resid, layer, hooks = block_after_z(model, layer, resid, z), layer + 1, []
    else:
        hooks = _patch_hooks(model, receiver, pass_sites, start, source, fired)
    kwargs = receiver.extras(start, copies)
    if start > 0:
        kwargs["past_kv_cache"] = receiver.prefix_cache(model, layer, start, copies)
    rows = declared_rows(metric, receiver.batch, receiver.n_pos, start, copies, resid.device)
    vocab = None if rows is None else declared_tokens(metric, model.cfg.d_vocab, resid.device)
    with model.hooks(fwd_hooks=hooks):
        picked = None
        if rows is not None:
            picked = logits_at_rows(model, resid, layer, rows, vocab, **kwargs)
        if picked is None:
            logits = logits_from_layer(model, resid, layer, **kwargs)
    assert fired == {name for name, _ in hooks}, "a patch hook never ran"
    if picked is not None:
        logits = (buffer or NaNLogits()).get(
            receiver.batch, receiver.n_pos, model.cfg.d_vocab, picked
        )
        positions = rows[: receiver.batch] + start
        return metric_on_rows(logits, metric, picked, positions, vocab, copies)
    per_copy = _full_logits(receiver, logits, copies, start)
    return [metric_output(metric, per_copy[i]) for i in range(copies)]


def metric_on_rows(
    logits: Float[Tensor, "batch pos d_vocab"],
    metric: Metric,
    picked: Float[Tensor, "copy_batch vocab"],
    positions: Int[Tensor, " batch"],
    vocab: Int[Tensor, " vocab"] | None,
    copies: int,
) -> list[Tensor]:
    """The metric on each copy's logits, given only the entries it declared (all others NaN).

    ``picked`` holds each declared row's logits, over the whole vocabulary or over the declared
    tokens ``vocab``. ``logits`` (from `NaNLogits`) serves every copy: each copy's entries are
    written into the same places before its metric runs, so no full logits tensor is built per
    copy.
    """
    batch = logits.shape[0]
    index = torch.arange(batch, device=picked.device)
    where = (index, positions) if vocab is None else (index[:, None], positions[:, None], vocab)
    per_copy = picked.view(copies, batch, -1)  # the stacked batch is copy-major
    values = []
    for i in range(copies):
        logits[where] = per_copy[i]
        values.append(metric_output(metric, logits).clone())  # never a view into the buffer
    return values


def _full_logits(
    receiver: ReceiverRun, logits: Tensor, copies: int, start: int
) -> Float[Tensor, "copy batch pos d_vocab"]:
    """Each copy's logits over all positions: the receiver's before ``start``, the pass's after."""
    batch, n_pos = receiver.batch, receiver.n_pos
    if start == 0:
        return logits.view(copies, batch, n_pos, -1)
    full = logits.new_empty(copies, batch, n_pos, logits.shape[-1])
    full[:, :, :start] = receiver.logits[:, :start]  # broadcast over copies
    full[:, :, start:] = logits.view(copies, batch, n_pos - start, -1)
    return full


def _patch_hooks(
    model: HookedTransformer,
    receiver: ReceiverRun,
    pass_sites: list[Site],
    start: int,
    source: Source,
    fired: set[str],
) -> list[tuple[str, Callable]]:
    """One hook per hook point in the pass; copy ``i`` of each activation gets site ``i``."""
    by_hook: dict[str, list[int]] = defaultdict(list)
    for copy, site in enumerate(pass_sites):
        by_hook[site.hook_name].append(copy)
    hooks = []
    for name, copies in by_hook.items():
        mask = _copies_mask(model, receiver, pass_sites, copies, start)
        src = _sliced_source(receiver, pass_sites[copies[0]], source, start)
        hooks.append((name, _make_hook(mask, src, len(pass_sites), fired)))
    return hooks


def _copies_mask(
    model: HookedTransformer,
    receiver: ReceiverRun,
    pass_sites: list[Site],
    copies: list[int],
    start: int,
) -> Bool[Tensor, "copy batch ..."]:
    """[copy, batch, *selectable dims(, 1)] mask, trimmed to positions from ``start``."""
    first = pass_sites[copies[0]]
    n_heads = n_heads_at(first.component, model.cfg)
    shape = first.mask(receiver.batch, receiver.n_pos, n_heads).shape
    mask = torch.zeros(len(pass_sites), *shape, dtype=torch.bool)
    for copy in copies:
        mask[copy] = pass_sites[copy].mask(receiver.batch, receiver.n_pos, n_heads)
    mask = mask.narrow(first.pos_axis + 1, start, receiver.n_pos - start)
    if first.component != "pattern":
        mask = mask.unsqueeze(-1)  # broadcast over the feature dim
    return mask.to(receiver.tokens.device)


def _sliced_source(receiver: ReceiverRun, site: Site, source: Source, start: int) -> Tensor:
    src = source.value(site.hook_name, receiver.acts[site.hook_name])
    if src.ndim == 0:
        return src
    return src.narrow(site.pos_axis, start, receiver.n_pos - start)


def _make_hook(mask: Tensor, src: Tensor, copies: int, fired: set[str]) -> Callable:
    def patch(act: Tensor, hook) -> Tensor:
        fired.add(hook.name)
        return _patched(act, mask, src, copies)

    return patch


def _patched(act: Tensor, mask: Tensor, src: Tensor, copies: int) -> Tensor:
    """``act`` [copy * batch, ...] with copy ``i``'s masked entries taken from ``src``."""
    stacked = act.reshape(copies, -1, *act.shape[1:])  # [copy, batch, ...]
    return torch.where(mask, src, stacked).reshape(act.shape)


def _starts_after_attention(model: HookedTransformer, pass_sites: list[Site], layer: int) -> bool:
    """Whether every site of the pass patches heads' ``z`` at ``layer`` and `block_after_z`
    can finish that block (then its attention need not run)."""
    z_hook = get_act_name("z", layer)
    return all(site.hook_name == z_hook for site in pass_sites) and block_after_z_applies(
        model, layer
    )


def _patched_z(
    model: HookedTransformer,
    receiver: ReceiverRun,
    pass_sites: list[Site],
    start: int,
    source: Source,
) -> Float[Tensor, "copy_batch pos head d_head"]:
    """The pass's ``z`` from ``start`` on: the receiver's, copy ``i`` patched at site ``i``."""
    copies = len(pass_sites)
    name = pass_sites[0].hook_name
    mask = _copies_mask(model, receiver, pass_sites, list(range(copies)), start)
    src = _sliced_source(receiver, pass_sites[0], source, start)
    recv = receiver.acts[name][:, start:].repeat(copies, 1, 1, 1)  # [copy * batch, pos, ...]
    return _patched(recv, mask, src, copies)


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task("patching sites", total=total)
        yield lambda n: bar.update(task, advance=n)
