"""Activation patching: TransformerLens's get_act_patch_* and ours, side by side.

    python -m ioi.bench patching [options]

``patching`` times TransformerLens's ``get_act_patch_*`` and ours side by side on a
GPT-2-small-shaped model (or ``--geometry d256``: 6 layers, d_model 256, GPT-2's vocabulary;
random, seeded weights) and prints wall time, speed-up and the largest difference between the
two results. Both run under ``torch.inference_mode``. ``--metric`` (repeatable) picks the metric:
one that declares the logits it reads, a plain lambda, or ARENA's ``ioi_metric`` shape
(`bench_metric`); several are timed one after the other in the same run.

TransformerLens runs one full forward pass per site, so its cost is linear in the number of
sites; on slow devices ``--tl-sites K`` times it on ``K`` sampled sites and extrapolates (the
table says so), and the difference column then covers those sites only.

``--quick`` (for CPUs) uses 4 prompts, a 12-site TransformerLens sample, and only the two headline
sweeps (``attn_head_out_all_pos`` and ``resid_pre``) unless ``--only`` names others.
``--profile`` runs ours once more per row under cProfile and prints where its time goes.

Examples:
    python -m ioi.bench patching                      # N=100, every function, full TL timing
    python -m ioi.bench patching --quick              # a few minutes on a laptop CPU
    python -m ioi.bench patching --device cpu --n 20 --threads 1 --tl-sites 24
    python -m ioi.bench patching --geometry d256 --n 16 --threads 2 --only attn_head_out_all_pos \
        --metric declared --metric plain --metric arena --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import pstats
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import transformer_lens.patching as tl_patching
from jaxtyping import Float, Int
from rich.console import Console
from rich.table import Table
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

import ioi.patching as ours
from ioi.bench.workload import GEOMETRIES, N_POS, gpt2_shaped_model, random_prompts, timed
from ioi.device import resolve_device
from ioi.metrics import make_logit_diff_metric


@dataclass(frozen=True)
class TLPart:
    """One TransformerLens sweep inside a benchmarked function (the ``*_every`` ones have five)."""

    activation: str
    setter: Callable
    axes: tuple[str, ...]


_HEAD_ALL = ("layer", "head")
BENCHMARKS: dict[str, list[TLPart]] = {
    "attn_head_out_all_pos": [TLPart("z", tl_patching.layer_head_vector_patch_setter, _HEAD_ALL)],
    "resid_pre": [TLPart("resid_pre", tl_patching.layer_pos_patch_setter, ("layer", "pos"))],
    "attn_head_all_pos_every": [
        TLPart(name, tl_patching.layer_head_vector_patch_setter, _HEAD_ALL)
        for name in ("z", "q", "k", "v")
    ]
    + [TLPart("pattern", tl_patching.layer_head_pattern_patch_setter, ("layer", "head_index"))],
    "attn_head_out_by_pos": [
        TLPart("z", tl_patching.layer_pos_head_vector_patch_setter, ("layer", "pos", "head"))
    ],
}


METRIC_KINDS = ("declared", "plain", "arena")


def bench_metric(
    kind: str, answers: Int[Tensor, "batch 2"], baselines: tuple[float, float] = (0.0, 1.0)
) -> Callable[[Tensor], Tensor]:
    """The benchmark's metric: the mean logit difference at the last position, in three guises.

    * ``declared``: `ioi.metrics.make_logit_diff_metric`, which declares the position and the
      answer tokens it reads, so our engine unembeds only those logits.
    * ``plain``: a lambda that declares nothing,
      ``(logits[range(N), -1, io] - logits[range(N), -1, s]).mean()``; the engine must detect
      what it reads (`ioi.patching.engine.with_detected_readout`).
    * ``arena``: ARENA's ``ioi_metric`` shape, a plain function that gathers the answers at
      ``[:, -1]`` and normalises by the ``(corrupted, clean)`` logit differences ``baselines``.

    TransformerLens cannot know what any of them reads and unembeds everything.
    """
    if kind not in METRIC_KINDS:
        raise ValueError(f"unknown metric {kind!r}; choose one of {', '.join(METRIC_KINDS)}")
    if kind == "declared":
        return make_logit_diff_metric(answers)
    rows = range(answers.shape[0])
    io, s = answers[:, 0], answers[:, 1]
    if kind == "plain":
        return lambda logits: (logits[rows, -1, io] - logits[rows, -1, s]).mean()
    corrupted, clean = baselines

    def ioi_metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        picked = logits[:, -1, :].gather(-1, answers.to(logits.device))
        logit_diff = (picked[:, 0] - picked[:, 1]).mean()
        return (logit_diff - corrupted) / (clean - corrupted)

    return ioi_metric


def timed_inference(fn: Callable[[], Tensor], device: torch.device) -> tuple[float, Tensor]:
    """`timed` under ``torch.inference_mode``, as both sides of this benchmark run."""
    with torch.inference_mode():
        return timed(fn, device)


@dataclass(frozen=True)
class Row:
    name: str
    metric: str
    sites: int
    tl_seconds: float
    ours_seconds: float
    max_abs_diff: float
    max_abs_value: float
    tl_note: str


def bench_one(
    name: str,
    model: HookedTransformer,
    corrupted: Tensor,
    cache: ActivationCache,
    metric: Callable,
    device: torch.device,
    repeats: int,
    tl_sites: int | None,
    seed: int,
    metric_kind: str = "declared",
    profile: bool = False,
) -> Row:
    """Time ours on the whole sweep and TransformerLens on all or a sample of its sites.

    The two alternate, ``repeats`` times each, and the best time of each counts, so a change in
    machine load mid-run hits both sides alike. ``profile`` prints a cProfile of one more run
    of ours.
    """
    ours_fn = getattr(ours, f"get_act_patch_{name}")
    ours_best = tl_best = math.inf
    for _ in range(repeats):
        seconds, ours_result = timed_inference(
            lambda: ours_fn(model, corrupted, cache, metric), device
        )
        ours_best = min(ours_best, seconds)
        args = (model, corrupted, cache, metric, device, ours_result)
        seconds, diff, scale, note = _time_transformer_lens(name, *args, tl_sites, seed)
        tl_best = min(tl_best, seconds)
    total = ours_result.numel()
    if profile:
        _print_profile(lambda: ours_fn(model, corrupted, cache, metric), f"{name}, {metric_kind}")
    return Row(name, metric_kind, total, tl_best, ours_best, diff, scale, note)


def _print_profile(fn: Callable[[], Tensor], what: str, top: int = 15) -> None:
    """One more (untimed) run of ours under cProfile; prints the functions with most own time."""
    profiler = cProfile.Profile()
    with torch.inference_mode():
        profiler.runcall(fn)
    print(f"cProfile of ours ({what}), by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(top)


def _time_transformer_lens(
    name: str,
    model: HookedTransformer,
    corrupted: Tensor,
    cache: ActivationCache,
    metric: Callable,
    device: torch.device,
    ours_result: Tensor,
    tl_sites: int | None,
    seed: int,
) -> tuple[float, float, float, str]:
    """TransformerLens's (extrapolated) time, max |ours - TL|, max |TL| and a timing note."""
    parts = BENCHMARKS[name]
    ours_parts = [ours_result] if len(parts) == 1 else list(ours_result)
    total = ours_result.numel()
    quiet = contextlib.redirect_stderr(io.StringIO())  # TransformerLens's tqdm bars
    if tl_sites is None or tl_sites >= total:
        tl_fn = getattr(tl_patching, f"get_act_patch_{name}")
        with quiet:
            seconds, tl_result = timed_inference(
                lambda: tl_fn(model, corrupted, cache, metric), device
            )
        diff = (tl_result.to(ours_result.device) - ours_result).abs().max().item()
        return seconds, diff, tl_result.abs().max().item(), "full"
    seconds, diff, scale, sampled = 0.0, 0.0, 0.0, 0
    per_part = max(1, tl_sites // len(parts))
    for part, ours_part in zip(parts, ours_parts, strict=True):
        index_df = _sample_sites(part, ours_part.shape, per_part, seed)
        with quiet:
            part_seconds, values = timed_inference(
                lambda part=part, index_df=index_df: tl_patching.generic_activation_patch(
                    model, corrupted, cache, metric, part.setter, part.activation, index_df=index_df
                ),
                device,
            )
        ours_values = ours_part[tuple(torch.tensor(index_df[c].to_numpy()) for c in index_df)]
        diff = max(diff, (values.to(ours_values.device) - ours_values).abs().max().item())
        scale = max(scale, values.abs().max().item())
        seconds += part_seconds / len(index_df) * ours_part.numel()
        sampled += len(index_df)
    return seconds, diff, scale, f"{sampled}/{total} sites, extrapolated"


def _sample_sites(part: TLPart, shape: torch.Size, k: int, seed: int) -> pd.DataFrame:
    """``k`` random index rows (layer first) of a sweep of this shape, as TransformerLens wants."""
    n = math.prod(shape)
    generator = torch.Generator().manual_seed(seed)
    flat = torch.randperm(n, generator=generator)[: min(k, n)].sort().values
    index = torch.unravel_index(flat, tuple(shape))
    # TransformerLens reads the patch index from each row in column order: layer, pos/head, ...
    return pd.DataFrame({axis: idx.tolist() for axis, idx in zip(part.axes, index, strict=True)})


def print_table(rows: list[Row], header: str, console: Console) -> None:
    table = Table(title=header)
    numbers = ("sites", "TransformerLens (s)", "ours (s)", "speed-up", "max |diff|", "max |metric|")
    table.add_column("function")
    table.add_column("metric")
    for column in numbers:
        table.add_column(column, justify="right")
    table.add_column("TransformerLens timing")
    for row in rows:
        table.add_row(
            row.name,
            row.metric,
            str(row.sites),
            f"{row.tl_seconds:.2f}",
            f"{row.ours_seconds:.2f}",
            f"{row.tl_seconds / row.ours_seconds:.1f}x",
            f"{row.max_abs_diff:.1e}",
            f"{row.max_abs_value:.1e}",
            row.tl_note,
        )
    console.print(table)


def add_arguments(patching: argparse.ArgumentParser) -> None:
    """The ``patching`` benchmark's options."""
    patching.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    patching.add_argument(
        "--n", type=int, default=None, help="prompts per batch (default 100; 4 with --quick)"
    )
    patching.add_argument(
        "--repeats", type=int, default=1, help="timed runs per function; the best counts"
    )
    patching.add_argument(
        "--quick",
        action="store_true",
        help="4 prompts, a 12-site TransformerLens sample, the two headline sweeps",
    )
    patching.add_argument(
        "--only",
        action="append",
        choices=list(BENCHMARKS),
        help="run only this function (repeatable)",
    )
    patching.add_argument(
        "--tl-sites",
        type=int,
        default=None,
        help="time TransformerLens on this many sampled sites and extrapolate",
    )
    patching.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    patching.add_argument("--seed", type=int, default=0)
    patching.add_argument(
        "--metric",
        action="append",
        choices=METRIC_KINDS,
        help="the metric (repeatable, timed side by side; default declared): declared by "
        "ioi.metrics, a plain lambda, or ARENA's ioi_metric shape (see bench_metric)",
    )
    patching.add_argument(
        "--profile",
        action="store_true",
        help="after timing, run ours once more under cProfile and print where the time goes",
    )
    patching.add_argument(
        "--geometry",
        choices=list(GEOMETRIES),
        default="gpt2-small",
        help="model shape, random weights, vocabulary 50257 (default gpt2-small; d256: 6 layers, "
        "d_model 256)",
    )


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the ``patching`` benchmark and print its table; returns the exit code."""
    device = resolve_device(args.device)
    n = args.n if args.n is not None else (4 if args.quick else 100)
    tl_sites = args.tl_sites if args.tl_sites is not None else (12 if args.quick else None)
    if n < 1 or args.repeats < 1 or (tl_sites is not None and tl_sites < 1):
        raise ValueError("--n, --repeats and --tl-sites must be positive")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model = gpt2_shaped_model(device, args.seed, GEOMETRIES[args.geometry])
    clean, corrupted, answers = random_prompts(n, model.cfg.d_vocab, args.seed)
    clean, corrupted = clean.to(device), corrupted.to(device)
    components = ("resid_pre", "z", "q", "k", "v", "pattern")
    needed = {get_act_name(c, layer) for c in components for layer in range(model.cfg.n_layers)}
    with torch.inference_mode():
        clean_logits, cache = model.run_with_cache(clean, names_filter=lambda name: name in needed)
        corrupted_logits = model(corrupted)  # also the warm-up: kernels, allocator
    plain_diff = make_logit_diff_metric(answers.to(device))
    baselines = (float(plain_diff(corrupted_logits)), float(plain_diff(clean_logits)))
    kinds = args.metric or ["declared"]
    metrics = {kind: bench_metric(kind, answers.to(device), baselines) for kind in kinds}
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    header = f"activation patching, {args.geometry} shape, N={n} x {N_POS} tokens, device: {where}"
    rows = []
    default = ["attn_head_out_all_pos", "resid_pre"] if args.quick else list(BENCHMARKS)
    for name in args.only or default:
        for kind, metric in metrics.items():
            rows.append(
                bench_one(
                    name,
                    model,
                    corrupted,
                    cache,
                    metric,
                    device,
                    args.repeats,
                    tl_sites,
                    args.seed,
                    metric_kind=kind,
                    profile=args.profile,
                )
            )
            console.print(f"done: {name}, {kind} metric", style="dim")
    print_table(rows, header, console)
    return 0
