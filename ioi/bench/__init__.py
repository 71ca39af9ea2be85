"""Benchmarks, run as scripts: ``python -m ioi.bench patching|path|discovery|edges [options]``.

Each prints, in one run, our time beside the reference's, the ratio and the largest difference
between the two results; none of them is a test.

* ``patching`` (`ioi.bench.patching`): TransformerLens's ``get_act_patch_*`` against ours.
* ``path`` (`ioi.bench.path`): batched path patching against one sender per forward pass.
* ``discovery`` (`ioi.bench.discovery`): ``ioi replicate``'s circuit discovery against its
  activation-patching sweeps, on a random GPT-2.
* ``edges`` (`ioi.bench.edges`): EAP / EAP-IG on every edge, batched exact edge patching of
  the top edges against one edge per forward pass, and their agreement.

The first two run on `ioi.bench.workload`'s GPT-2-small-shaped model with random weights. A user error
(a bad flag value, an unknown device) prints one line and exits with status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from rich.console import Console

from ioi.bench import discovery, edges, patching, path

EXIT_USAGE = 2
BENCHES = {"patching": patching, "path": path, "discovery": discovery, "edges": edges}


def build_parser() -> argparse.ArgumentParser:
    """``python -m ioi.bench`` with one sub-command per benchmark."""
    parser = argparse.ArgumentParser(
        prog="python -m ioi.bench", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="benchmark", required=True)
    for name, module in BENCHES.items():
        summary = module.__doc__.splitlines()[0]
        module.add_arguments(sub.add_parser(name, help=summary, description=summary))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen benchmark, print its table. Returns the exit code."""
    console = Console(width=max(120, Console().width))
    args = build_parser().parse_args(argv)
    run: Callable[[argparse.Namespace, Console], int] = BENCHES[args.benchmark].run
    try:
        return run(args, console)
    except ValueError as err:
        console.print(f"error: {err}", style="red", markup=False)
        return EXIT_USAGE
