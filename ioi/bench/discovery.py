"""Circuit discovery against all activation-patching sweeps, as `ioi replicate` runs them.

    python -m ioi.bench discovery [--device auto] [--n 8] [--d-model 96] [--seed 0] [--repeats 1]

A randomly initialised GPT-2 (12 layers x 12 heads, vocabulary 50257, ``--d-model`` wide;
`ioi.testing.random_gpt2_dir`) is saved and loaded as ``ioi replicate --model DIR`` loads it.
On ``--n`` IOI prompts and their ABC version, the table gives the wall time of

* all activation-patching sweeps of the report (`ioi.report.analysis`: every position and head
  sweep, the head sweep through attribution patching's exact comparison), and
* circuit discovery as the report runs it (a fresh `PathPatchingOracle`, then the threshold
  sweep of `ioi.report.analysis.discover` with the report's default settings, whose head
  budget ``Settings.max_heads`` bounds the search), and the same without the budget,

and their ratios. With ``--repeats K`` the two alternate K times and the best time of each
counts (as in ``python -m ioi.bench patching``), so a change in machine load mid-run hits both
alike. The circuits found are printed too, so that a change that alters them shows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ioi.bench.workload import sync
from ioi.device import resolve_device
from ioi.models import load_model
from ioi.report import analysis as A
from ioi.report.sections import Settings
from ioi.testing import random_gpt2_dir


def time_sweeps(setup: A.Setup, sweeps: tuple[str, ...]) -> float:
    """Seconds for the report's activation-patching sweeps on ``setup``."""
    device = setup.model.cfg.device
    sync(torch.device(device))
    start = time.perf_counter()
    for component in sweeps:
        if component == "z":
            A.attribution_vs_exact(setup)
        else:
            A.activation_patching_sweep(setup, component)
    sync(torch.device(device))
    return time.perf_counter() - start


def time_discovery(setup: A.Setup, settings: Settings, max_heads: int | None) -> tuple[float, list]:
    """Seconds for discovery as the report runs it (with head budget ``max_heads``), and the
    sweep points it computed."""
    ablation = A.mean_ablation(setup)  # the criteria's, built before the clock starts
    device = torch.device(setup.model.cfg.device)
    sync(device)
    start = time.perf_counter()
    oracle = A.path_patching_oracle(setup)
    _, points = A.discover(
        oracle,
        ablation,
        settings.thresholds,
        settings.min_faithfulness,
        settings.extra_thresholds,
        max_heads,
    )
    sync(device)
    return time.perf_counter() - start, points


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``discovery`` benchmark's options."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--n", type=int, default=8, help="IOI prompts (default 8)")
    parser.add_argument("--d-model", type=int, default=96, help="model width (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="weights' seed")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument(
        "--repeats", type=int, default=1, help="timed runs of each side, alternating; best counts"
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the ``discovery`` benchmark and print its table; returns the exit code."""
    if args.n < 1 or args.threads < 1 or args.repeats < 1 or args.d_model < 12 or args.d_model % 12:
        raise ValueError(
            "--n, --threads and --repeats must be >= 1, --d-model a positive multiple of 12"
        )
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = random_gpt2_dir(Path(tmp) / "gpt2", n_embd=args.d_model, seed=args.seed)
        model = load_model(str(path), device=device)
    settings = Settings(n=args.n)
    setup = A.prepare(model, settings.n, settings.seed)
    patch_setup = A.prepare(model, min(settings.patch_prompts, settings.n), settings.seed)
    budgets = {f"budget {settings.max_heads} heads (report default)": settings.max_heads}
    budgets["no budget"] = None
    sweeps = float("inf")
    best = dict.fromkeys(budgets, float("inf"))
    points: dict[str, list] = {}
    for _ in range(args.repeats):  # a fresh oracle each time: nothing memoised carries over
        sweeps = min(sweeps, time_sweeps(patch_setup, settings.sweeps))
        for label, budget in budgets.items():
            seconds, points[label] = time_discovery(setup, settings, budget)
            best[label] = min(best[label], seconds)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    table = Table(
        title=f"ioi replicate's discovery vs its sweeps; random GPT-2, 12L x 12H, d_model "
        f"{args.d_model}, N={args.n}; device {where}, {torch.get_num_threads()} threads; "
        f"best of {args.repeats}"
    )
    for col in ("step", "time (s)", "vs sweeps"):
        table.add_column(col, justify="left" if col == "step" else "right")
    table.add_row(f"all sweeps ({len(settings.sweeps)})", f"{sweeps:.2f}", "1.0x")
    for label, seconds in best.items():
        table.add_row(
            f"discovery, {label} ({len(points[label])} thresholds)",
            f"{seconds:.2f}",
            f"{seconds / sweeps:.2f}x",
        )
    console.print(table)
    for label, found in points.items():
        console.print(f"discovery, {label}:", markup=False)
        for p in found:
            heads = [str(h) for h in sorted(p.discovered.heads())]
            left = f" ({p.discovered.left_out} left out)" if p.discovered.budget_full else ""
            console.print(
                f"  threshold {p.threshold:g}: {p.n_heads} heads{left}, F(C)/F(M) "
                f"{p.faithfulness:.4f}: " + " ".join(heads),
                markup=False,
            )
    return 0
