"""Edge scores: EAP and EAP-IG on every edge, exact patching of the top edges, plain per edge.

    python -m ioi.bench edges [--device auto] [--n 100] [--quick] [--top 500] [--plain-edges K]

On `ioi.bench.workload`'s GPT-2-small-shaped model (random weights, seeded; 32,491 edges) with
N prompts of 15 tokens whose two versions differ at three 'name' slots, one run times:

* EAP on every edge (one forward and backward pass) and EAP-IG (``--steps`` passes);
* exact edge patching (`ioi.edges.exact_edge_patching`, batched) of the ``--top`` edges by
  ``|EAP|``;
* plain edge patching (`ioi.edges.plain_edge_effects`, one edge per pass) of ``--plain-edges``
  of those edges, its time extrapolated to all ``--top``, and the largest difference from the
  batched values on them.

A second table gives the agreement of EAP and EAP-IG with exact patching on the top edges
(Pearson, Spearman, top-k overlap). ``--quick`` uses the d256 geometry (6 layers x 8 heads),
N=8 and the top 100 edges.
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from ioi.bench import workload as wl
from ioi.device import resolve_device
from ioi.edges import (
    EdgeGraph,
    compare_edges,
    edge_attribution,
    exact_edge_patching,
    plain_edge_effects,
)
from ioi.metrics import make_logit_diff_metric

NAME_SLOTS = (2, 4, 9)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``edges`` benchmark's options."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--n", type=int, default=None, help="prompts (default 100, quick 8)")
    parser.add_argument("--quick", action="store_true", help="d256 model, N=8, top 100 (CPU)")
    parser.add_argument("--top", type=int, default=None, help="edges patched exactly (500)")
    parser.add_argument("--steps", type=int, default=5, help="EAP-IG points")
    parser.add_argument("--plain-edges", type=int, default=20, help="edges run one per pass")
    parser.add_argument("--edges-per-pass", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")


def run(args: argparse.Namespace, console: Console) -> int:
    """Run the ``edges`` benchmark and print its tables; returns the exit code."""
    device = resolve_device(args.device)
    n = args.n if args.n is not None else (8 if args.quick else 100)
    top = args.top if args.top is not None else (100 if args.quick else 500)
    if min(n, top, args.steps, args.plain_edges, args.threads, args.edges_per_pass) < 1:
        raise ValueError(
            "--n, --top, --steps, --plain-edges, --edges-per-pass, --threads must be >= 1"
        )
    torch.set_num_threads(args.threads)
    shape = wl.D256_SHAPE if args.quick else wl.GPT2_SMALL_SHAPE
    model = wl.gpt2_shaped_model(device, args.seed, shape)
    clean, corrupted, answers = wl.random_prompts(n, wl.D_VOCAB, args.seed + 1, changed=NAME_SLOTS)
    clean, corrupted = clean.to(device), corrupted.to(device)
    metric = make_logit_diff_metric(answers.to(device), torch.full((n,), wl.N_POS - 1).to(device))
    graph = EdgeGraph.from_model(model)
    if top > len(graph):
        raise ValueError(f"--top must be at most the number of edges, {len(graph)}")
    # Warm-up on two prompts, so one-off costs (kernels, allocator) are not timed.
    small = make_logit_diff_metric(
        answers[:2].to(device), torch.full((2,), wl.N_POS - 1).to(device)
    )
    edge_attribution(model, graph, clean[:2], corrupted[:2], small)

    eap_s, eap = wl.timed(lambda: edge_attribution(model, graph, clean, corrupted, metric), device)
    ig_s, ig = wl.timed(
        lambda: edge_attribution(
            model, graph, clean, corrupted, metric, method="eap-ig", steps=args.steps
        ),
        device,
    )
    chosen = graph.subset(eap.top(top))
    exact_s, exact = wl.timed(
        lambda: exact_edge_patching(
            model, chosen, clean, corrupted, metric, edges_per_pass=args.edges_per_pass
        ),
        device,
    )
    sample = chosen.edges[:: max(1, top // args.plain_edges)][: args.plain_edges]
    wl.sync(device)
    start = time.perf_counter()
    plain = plain_edge_effects(model, sample, clean, corrupted, metric)
    wl.sync(device)
    plain_s = (time.perf_counter() - start) / len(sample) * top
    idx = [chosen.index(e) for e in sample]
    diff = float((plain - exact.scores[idx]).abs().max())

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    title = (
        f"edge scores; {shape['n_layers']}L x {shape['n_heads']}H, d_model {shape['d_model']}, "
        f"{len(graph)} edges, N={n}, {wl.N_POS} tokens; device {where}, "
        f"{torch.get_num_threads()} threads"
    )
    table = Table(title=title)
    for col in ("what", "edges", "time (s)", "speed-up vs plain", "max |diff| vs plain"):
        table.add_column(col, justify="left" if col == "what" else "right")
    table.add_row("EAP, every edge", str(len(graph)), f"{eap_s:.2f}", "", "")
    table.add_row(
        f"EAP-IG ({args.steps} steps), every edge", str(len(graph)), f"{ig_s:.2f}", "", ""
    )
    table.add_row(
        f"plain exact, {len(sample)} edges timed, extrapolated", str(top), f"{plain_s:.2f}",
        "1.0x", "0",
    )  # fmt: skip
    table.add_row(
        f"batched exact, {args.edges_per_pass} edges per pass", str(top), f"{exact_s:.2f}",
        f"{plain_s / exact_s:.1f}x", f"{diff:.2e}",
    )  # fmt: skip
    console.print(table)
    console.print(_agreement_table(graph, chosen, eap, ig, exact, top))
    return 0


def _agreement_table(graph, chosen, eap, ig, exact, top) -> Table:
    table = Table(title=f"agreement with exact patching on the top {top} edges by |EAP|")
    for col in ("estimate", "Pearson", "Spearman", "top-k", "top-k overlap", "max |error|"):
        table.add_column(col, justify="left" if col == "estimate" else "right")
    k = max(1, top // 10)
    for name, full in (("EAP", eap), (f"EAP-IG ({ig.steps} steps)", ig)):
        a = compare_edges(full.subset(chosen), exact, top_k=k)
        table.add_row(
            name, f"{a.pearson:.3f}", f"{a.spearman:.3f}", str(k), f"{a.top_k_overlap:.2f}",
            f"{a.max_abs_error:.2e}",
        )  # fmt: skip
    return table
