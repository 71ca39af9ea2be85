"""Benchmark: batched path patching against one sender per forward pass, in one run.

    python -m ioi.bench_path [--device auto] [--n 100] [--quick] [--plain-senders K]

Every head of a GPT-2-small-shaped model (12 layers x 12 heads, d_model 768, d_mlp 3072,
vocab 50257; random weights from a seeded generator) is path patched to the final residual
stream on N prompts of 15 tokens. Three implementations, same metric, same inputs:

* plain: `plain_path_patch_head_to_final_resid_post`, one hooked forward pass per head;
* batched, all logits: the frozen-attention engine with ``readout="all"``;
* batched, auto readout: the same engine unembedding only the logits the metric reads.

The table gives wall time, speed-up over plain, and the largest difference from plain.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Int
from rich.console import Console
from rich.table import Table
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ioi.device import resolve_device
from ioi.metrics import make_logit_diff_metric
from ioi.path_patching import (
    Sender,
    get_path_patch_head_to_final_resid_post,
    plain_path_patch,
    plain_path_patch_head_to_final_resid_post,
)

FULL_SHAPE = dict(n_layers=12, n_heads=12, d_model=768, d_head=64, d_mlp=3072)
QUICK_SHAPE = dict(n_layers=6, n_heads=8, d_model=256, d_head=32, d_mlp=1024)
D_VOCAB = 50257
SEQ_LEN = 15


@dataclass(frozen=True)
class Workload:
    """A random model and two aligned batches of token ids, differing at three 'name' slots."""

    model: HookedTransformer
    orig: Int[Tensor, "batch pos"]
    new: Int[Tensor, "batch pos"]
    answers: Int[Tensor, "batch 2"]
    end: Int[Tensor, " batch"]


def random_model(shape: dict, device: torch.device, seed: int) -> HookedTransformer:
    """A GPT-2-shaped model with N(0, 0.02) weights from a local generator (no global RNG)."""
    cfg = HookedTransformerConfig(
        **shape,
        n_ctx=64,
        d_vocab=D_VOCAB,
        act_fn="gelu_new",
        normalization_type="LN",
        device=str(device),
        init_weights=False,
        seed=None,
    )
    with warnings.catch_warnings():  # TransformerLens 3 flags HookedTransformer as deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        model = HookedTransformer(cfg, move_to_device=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".w"):  # LayerNorm gains
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    model.to(device, print_details=False)
    model.eval()
    return model


def make_workload(quick: bool, n: int, device: torch.device, seed: int) -> Workload:
    """The benchmark's model and prompts (all random, all seeded)."""
    model = random_model(QUICK_SHAPE if quick else FULL_SHAPE, device, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    orig = torch.randint(0, D_VOCAB, (n, SEQ_LEN), generator=gen)
    new = orig.clone()
    slots = torch.tensor([2, 4, 9])  # like the three name slots of an IOI prompt
    new[:, slots] = torch.randint(0, D_VOCAB, (n, len(slots)), generator=gen)
    answers = torch.randint(0, D_VOCAB, (n, 2), generator=gen)
    end = torch.full((n,), SEQ_LEN - 1)
    return Workload(model, orig, new, answers, end)


def _timed(fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


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
    (new_cache, orig_cache), cache_seconds = _timed(
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
            model, metric, work.new, work.orig, sender, new_cache=new_cache, orig_cache=orig_cache
        )
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    per_sender = (time.perf_counter() - start) / len(picked)
    return grid, cache_seconds + per_sender * total, picked


def run(
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
        plain, plain_seconds = _timed(
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
        out, seconds = _timed(
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


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print the table. Returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
    console = Console()
    try:
        device = resolve_device(args.device)
        n = args.n if args.n is not None else (20 if args.quick else 100)
        if n < 1 or args.threads < 1 or (args.plain_senders is not None and args.plain_senders < 1):
            raise ValueError("--n, --threads and --plain-senders must be >= 1")
    except ValueError as err:
        console.print(f"error: {err}")
        return 2
    torch.set_num_threads(args.threads)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    senders = shape["n_layers"] * shape["n_heads"]
    impls = ("plain", "auto") if args.skip_all_readout else IMPLEMENTATIONS
    rows = run(args.quick, n, device, args.seed, args.plain_senders, impls)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    title = (
        f"path patching, {senders} heads -> logits; {shape['n_layers']}L x {shape['n_heads']}H, "
        f"d_model {shape['d_model']}, N={n}, {SEQ_LEN} tokens; device {where}, "
        f"{torch.get_num_threads()} threads"
    )
    console.print(render(rows, title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
