"""Path patching: the batched engine and one sender per forward pass, side by side.

    python -m ioi.bench path [--device auto] [--n 100] [--quick] [--plain-senders K]

Every head of a GPT-2-small-shaped model (12 layers x 12 heads, d_model 768, d_mlp 3072,
vocab 50257; random weights from a seeded generator, `ioi.bench.workload`) is path patched to
the final residual stream on N prompts of 15 tokens whose two versions differ at three 'name'
slots. Three implementations, same metric, same inputs:

* plain: `plain_path_patch_head_to_final_resid_post`, one hooked forward pass per head;
* batched, all logits: the frozen-attention engine with ``readout="all"``;
* batched, auto readout: the same engine unembedding only the logits the metric reads.

The table gives wall time, speed-up over plain, and the largest difference from plain.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch
from jaxtyping import Int
from rich.console import Console
from rich.table import Table
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.bench.workload import (
    D256_SHAPE,
    D_VOCAB,
    GPT2_SMALL_SHAPE,
    N_POS,
    gpt2_shaped_model,
    random_prompts,
    sync,
    timed,
)
from ioi.device import resolve_device
from ioi.metrics import make_logit_diff_metric
from ioi.path_patching import (
    Sender,
    get_path_patch_head_to_final_resid_post,
    plain_path_patch,
    plain_path_patch_head_to_final_resid_post,
)

QUICK_SHAPE = D256_SHAPE
NAME_SLOTS = (2, 4, 9)  # like the three name slots of an IOI prompt


@dataclass(frozen=True)
class Workload:
    """A random model and two aligned batches of token ids, differing at three 'name' slots."""

    model: HookedTransformer
    orig: Int[Tensor, "batch pos"]
    new: Int[Tensor, "batch pos"]
    answers: Int[Tensor, "batch 2"]
    end: Int[Tensor, " batch"]


def make_workload(quick: bool, n: int, device: torch.device, seed: int) -> Workload:
    """The benchmark's model and prompts (all random, all seeded)."""
    model = gpt2_shaped_model(device, seed, QUICK_SHAPE if quick else None)
    orig, new, answers = random_prompts(n, D_VOCAB, seed + 1, changed=NAME_SLOTS)
    end = torch.full((n,), N_POS - 1)
    return Workload(model, orig, new, answers, end)


IMPLEMENTATIONS = ("plain", "all", "auto")
LABELS = {
    "plain": "plain (one sender per pass)",
    "all": "batched, readout='all'",
    "auto": "batched, readout='auto'",
}


def _plain_on_subset(
    work: Workload, metric, device: torch.device, n_senders: int
) -> tuple[Tensor, float, list[int]]:
    """Plain path patching on ``n_senders`` evenly spread heads; time extrapolated to all heads.

    Returns the [layer * head] grid (NaN where not run), the extrapolated seconds, and the
    flat indices that were run.
    """
    model = work.model
    total = model.cfg.n_layers * model.cfg.n_heads
    picked = sorted(set(torch.linspace(0, total - 1, n_senders).round().long().tolist()))
    cache_seconds, (new_cache, orig_cache) = timed(
        lambda: (
            model.run_with_cache(work.new.to(device))[1],
            model.run_with_cache(work.orig.to(device))[1],
        ),
        device,
    )
    grid = torch.full((total,), float("nan"))
    start = time.perf_counter()
    for i in picked:
        sender = Sender("head", i // model.cfg.n_heads, i % model.cfg.n_heads)
        grid[i] = plain_path_patch(
            model,
            metric,
            work.new,
            work.orig,
            sender,
            corrupted_cache=new_cache,
            clean_cache=orig_cache,
        )
    sync(device)
    per_sender = (time.perf_counter() - start) / len(picked)
    return grid, cache_seconds + per_sender * total, picked


def time_implementations(
    quick: bool,
    n: int,
    device: torch.device,
    seed: int,
    plain_senders: int | None = None,
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
) -> list[tuple[str, float, float]]:
    """Time the implementations; returns (label, seconds, max |diff| vs plain) rows, plain first.

    With ``plain_senders`` the plain version runs on that many heads only and its time is
    extrapolated to all heads; the differences then cover those heads.
    """
    work = make_workload(quick, n, device, seed)
    metric = make_logit_diff_metric(work.answers.to(device), work.end.to(device))
    model = work.model
    total = model.cfg.n_layers * model.cfg.n_heads
    # Warm-up on two prompts, so one-off costs (kernels, allocator) are not timed.
    small = make_logit_diff_metric(work.answers[:2].to(device), work.end[:2].to(device))
    get_path_patch_head_to_final_resid_post(model, small, work.new[:2], work.orig[:2])
    if plain_senders is None or plain_senders >= total:
        plain_seconds, plain = timed(
            lambda: plain_path_patch_head_to_final_resid_post(model, metric, work.new, work.orig),
            device,
        )
        plain, picked, label = plain.flatten(), list(range(total)), LABELS["plain"]
    else:
        plain, plain_seconds, picked = _plain_on_subset(work, metric, device, plain_senders)
        label = f"{LABELS['plain']}, {len(picked)} heads timed, extrapolated"
    rows = [(label, plain_seconds, 0.0)]
    for impl in implementations:
        if impl == "plain":
            continue
        seconds, out = timed(
            lambda impl=impl: get_path_patch_head_to_final_resid_post(
                model, metric, work.new, work.orig, readout=impl
            ),
            device,
        )
        diff = float((out.flatten()[picked] - plain[picked]).abs().max())
        rows.append((LABELS[impl], seconds, diff))
    return rows


def render(rows: list[tuple[str, float, float]], title: str) -> Table:
    """A rich table: implementation, seconds, speed-up over plain, max |diff| vs plain."""
    table = Table(title=title)
    for col in ("implementation", "time (s)", "speed-up vs plain", "max |diff| vs plain"):
        table.add_column(col, justify="left" if col == "implementation" else "right")
    plain = rows[0][1]
    for name, seconds, diff in rows:
        table.add_row(name, f"{seconds:.2f}", f"{plain / seconds:.1f}x", f"{diff:.2e}")
    return table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``path`` benchmark's options."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--n", type=int, default=None, help="prompts (default 100, quick 20)")
    parser.add_argument("--quick", action="store_true", help="smaller model and N (~1 min, CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--plain-senders",
        type=int,
        default=None,
        help="time the plain version on this many heads and extrapolate (slow devices)",
    )
    parser.add_argument(
        "--skip-all-readout",
        action="store_true",
        help="leave out the batched readout='all' row (slow on CPU at full size)",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the ``path`` benchmark and print its table; returns the exit code."""
    device = resolve_device(args.device)
    n = args.n if args.n is not None else (20 if args.quick else 100)
    if n < 1 or args.threads < 1 or (args.plain_senders is not None and args.plain_senders < 1):
        raise ValueError("--n, --threads and --plain-senders must be >= 1")
    torch.set_num_threads(args.threads)
    shape = QUICK_SHAPE if args.quick else GPT2_SMALL_SHAPE
    senders = shape["n_layers"] * shape["n_heads"]
    impls = ("plain", "auto") if args.skip_all_readout else IMPLEMENTATIONS
    rows = time_implementations(args.quick, n, device, args.seed, args.plain_senders, impls)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    title = (
        f"path patching, {senders} heads -> logits; {shape['n_layers']}L x {shape['n_heads']}H, "
        f"d_model {shape['d_model']}, N={n}, {N_POS} tokens; device {where}, "
        f"{torch.get_num_threads()} threads"
    )
    console.print(render(rows, title))
    return 0
