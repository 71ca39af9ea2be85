"""Planning forward passes: which sites share a pass, and how many fit in memory.

Every site at layer ``L`` leaves layers ``< L`` untouched, and (causal attention) leaves every
position before the first one it changes untouched. So a pass for a group of sites starts at
block ``L`` from the cached residual, and only at the group's first changed position. Sites are
grouped by layer; within a layer, sorted by their first changed position and cut into passes by
a small dynamic programme that trades per-pass overhead against positions recomputed.
"""

from __future__ import annotations

import math
import numbers
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformer_lens import HookedTransformerConfig

GIB = 1024**3

# Fixed cost of one extra pass, in token rows it could have computed instead. Kernel launches
# and Python dominate on GPUs; on CPUs a pass costs little beyond its arithmetic.
_PASS_OVERHEAD_TOKENS = {"cuda": 4096, "mps": 2048, "cpu": 32}

# On a CPU, stacking more copies stops paying once a pass's activations fall out of cache: the
# elementwise work (GELU, norms, residual adds) turns memory-bound. On 2 EPYC cores, six
# GPT-2-shaped blocks cost least per token at 450-600 token rows per pass (0.70 ms) and 20-50%
# more at 2400-4800 rows. So by default a CPU pass holds about 512 rows of GPT-2's widest
# activation (the MLP's 3072), i.e. this many numbers; narrower models fit more rows.
CPU_PASS_ACTIVATION = 512 * 3072


@dataclass(frozen=True)
class Pass:
    """One forward pass: start at ``layer`` and ``start_pos``; copy ``i`` patches ``site_ids[i]``."""

    layer: int
    start_pos: int
    site_ids: tuple[int, ...]


def bytes_per_copy(cfg: HookedTransformerConfig, batch: int, n_pos: int) -> int:
    """Rough peak memory of one patched copy of the batch in a pass.

    Counts the logits twice (the pass output and the assembled full logits the metric reads, or
    the metric's own temporaries) plus one block's worth of live activations.
    """
    d_mlp = cfg.d_mlp or 0
    per_token = 2 * cfg.d_vocab + 12 * cfg.d_model + 3 * d_mlp + 4 * cfg.n_heads * n_pos
    itemsize = torch.empty((), dtype=cfg.dtype).element_size()
    return batch * n_pos * per_token * itemsize


def free_memory(device: torch.device) -> int | None:
    """Bytes free for new tensors on ``device``: free GPU memory, or available RAM (Linux's
    ``MemAvailable``, which counts reclaimable cache; free pages elsewhere). None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_budget(device: torch.device) -> int:
    """Bytes a sweep may use: half the free GPU memory, or a quarter of free RAM (at most 2 GiB)."""
    free = free_memory(device)
    if free is None:
        return 2 * GIB
    if device.type == "cuda":
        return int(free * 0.5)
    return int(min(2 * GIB, free // 4))


MEMORY_BUDGET_CHOICES = (
    "None (the default: half the free GPU memory, or a quarter of free RAM up to 2 GiB) "
    "or a positive int of bytes, e.g. 2**30"
)


def check_memory_budget(memory_budget: object) -> None:
    """Refuse a ``memory_budget`` that is neither None nor a positive int (bytes).

    Raises:
        TypeError: not None and not an int (a bool, a float, a string).
        ValueError: an int <= 0.
    """
    if memory_budget is None:
        return
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, numbers.Integral):
        raise TypeError(
            f"memory_budget must be {MEMORY_BUDGET_CHOICES}; got {type(memory_budget).__name__} "
            f"{memory_budget!r}"
        )
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be {MEMORY_BUDGET_CHOICES}; got {memory_budget}")


def copies_that_fit(
    cfg: HookedTransformerConfig,
    copy_bytes: int,
    copy_rows: int,
    device: torch.device,
    memory_budget: int | None,
    max_copies: int | None,
) -> int:
    """How many copies one stacked pass may hold (at least 1): the policy both engines share.

    Args:
        cfg: the model's config (its widest activation sets the CPU bound).
        copy_bytes: rough peak memory of one copy in a pass.
        copy_rows: token rows one copy runs through whole blocks (attention included); 0 for
            copies that only go through MLPs (path patching to the logits), which the CPU bound
            leaves alone: on 2 EPYC threads, GPT-2-wide MLP-only passes of 5 x 100 rows cost
            58 CPU-s for 144 heads against 43 s for 12 x 100 rows.
        device: where the pass runs.
        memory_budget: bytes a pass may use (`check_memory_budget`); None: `default_memory_budget`.
        max_copies: the caller's own limit (>= 1), or None.

    The memory budget bounds every case; on a CPU, unless ``max_copies`` is given, so does
    `CPU_PASS_ACTIVATION` (a cache-sized pass beats a large one there).
    """
    check_memory_budget(memory_budget)
    budget = default_memory_budget(device) if memory_budget is None else int(memory_budget)
    capacity = max(1, budget // max(copy_bytes, 1))
    if max_copies is not None:
        capacity = min(capacity, max_copies)
    elif device.type == "cpu" and copy_rows > 0:
        widest = max(cfg.d_mlp or 0, 4 * cfg.d_model)
        capacity = min(capacity, max(1, CPU_PASS_ACTIVATION // (widest * copy_rows)))
    return capacity


def copies_per_pass(
    cfg: HookedTransformerConfig,
    batch: int,
    n_pos: int,
    device: torch.device,
    memory_budget: int | None,
    max_sites_per_pass: int | None,
) -> int:
    """How many patched copies of the batch one activation-patching pass may stack (at least 1).

    `copies_that_fit` for copies of `bytes_per_copy` bytes and ``batch * n_pos`` rows.
    """
    if max_sites_per_pass is not None and (
        isinstance(max_sites_per_pass, bool)
        or not isinstance(max_sites_per_pass, numbers.Integral)
        or max_sites_per_pass < 1
    ):
        raise ValueError(
            f"max_sites_per_pass must be None (as many as fit) or an int >= 1, got "
            f"{max_sites_per_pass!r}"
        )
    copy_bytes = bytes_per_copy(cfg, batch, n_pos)
    return copies_that_fit(
        cfg, copy_bytes, batch * n_pos, device, memory_budget, max_sites_per_pass
    )


def plan_passes(
    layers: Sequence[int],
    starts: Sequence[int | None],
    n_pos: int,
    batch: int,
    capacity: int,
    device: torch.device,
) -> list[Pass]:
    """Cut sites into passes.

    Args:
        layers: each site's layer.
        starts: each site's first changed position; ``None`` for a site whose patch changes
            nothing (it needs no pass).
        n_pos: sequence length.
        batch: prompts per copy.
        capacity: most copies per pass.
        device: where passes run (sets the per-pass overhead of the cost model).

    Returns:
        Passes covering every site whose start is not ``None``, each site exactly once.
    """
    overhead = _PASS_OVERHEAD_TOKENS.get(device.type, 32) / batch  # in copy-positions
    by_layer: dict[int, list[int]] = defaultdict(list)
    for site_id, (layer, start) in enumerate(zip(layers, starts, strict=True)):
        if start is not None:
            by_layer[layer].append(site_id)
    passes: list[Pass] = []
    for layer in sorted(by_layer):
        ids = sorted(by_layer[layer], key=lambda i: starts[i])
        for chunk in _cut_layer(ids, [starts[i] for i in ids], n_pos, capacity, overhead):
            passes.extend(_split(layer, chunk, starts, capacity))
    return passes


def _cut_layer(
    ids: list[int], starts: list[int], n_pos: int, capacity: int, overhead: float
) -> list[list[int]]:
    """Merge runs of equal start position into chunks, minimising overhead + positions run."""
    groups: list[tuple[int, list[int]]] = []
    for site_id, start in zip(ids, starts, strict=True):
        if groups and groups[-1][0] == start:
            groups[-1][1].append(site_id)
        else:
            groups.append((start, [site_id]))
    best = [0.0] + [math.inf] * len(groups)  # best[g]: cost of the first g groups
    cut = [0] * (len(groups) + 1)
    for end in range(1, len(groups) + 1):
        n_sites = 0
        for begin in range(end - 1, -1, -1):
            n_sites += len(groups[begin][1])
            n_passes = math.ceil(n_sites / capacity)
            cost = best[begin] + n_passes * overhead + n_sites * (n_pos - groups[begin][0])
            if cost < best[end]:
                best[end], cut[end] = cost, begin
    chunks: list[list[int]] = []
    end = len(groups)
    while end > 0:
        begin = cut[end]
        chunks.append([i for _, members in groups[begin:end] for i in members])
        end = begin
    return chunks[::-1]


def _split(layer: int, chunk: list[int], starts: Sequence[int | None], capacity: int) -> list[Pass]:
    passes = []
    for offset in range(0, len(chunk), capacity):
        ids = tuple(chunk[offset : offset + capacity])
        passes.append(Pass(layer, min(starts[i] for i in ids), ids))
    return passes
