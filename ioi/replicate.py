"""``ioi replicate``: run the whole IOI analysis on one model and write the report.

The analysis is the report's sections (`ioi.report.sections`): prompts, logit difference,
direct logit attribution, activation patching, path patching, circuit discovery, and the
faithfulness, completeness and minimality of the circuit found (and, on GPT-2 small, of the
published one, beside the published figures). It writes ``report.html``, ``report.md`` and
``results.json`` to ``out``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from rich.console import Console
from transformer_lens import HookedTransformer

from ioi.circuit import DEFAULT_THRESHOLDS
from ioi.dataset import IOIDataset
from ioi.models import load_model
from ioi.patching.plan import bytes_per_copy, free_memory
from ioi.report import Settings, build_report, check_out_dir, write_report


def replicate(
    model: HookedTransformer | str,
    n: int = 200,
    seed: int = 1,
    out: Path | str = "ioi_report",
    console: Console | None = None,
    model_name: str | None = None,
    *,
    patch_prompts: int = 32,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    sweeps: Sequence[str] = Settings.sweeps,
    max_heads: int | None = Settings.max_heads,
    png: bool = True,
) -> dict:
    """Run every section of the report on ``model`` and write it to ``out``.

    Args:
        model: a loaded model, or a name for `ioi.models.load_model` (then ``model_name``
            defaults to it).
        n: IOI prompts (mixed BABA/ABBA) for every step but the activation-patching sweeps.
        seed: dataset seed.
        out: output folder (created if needed). The report is written beside it and moved in
            only when complete: a failed run leaves an earlier report there untouched.
        console: where the progress bars go; None is silent.
        model_name: the name the report uses (``"gpt2-small"`` turns on the published figures).
        patch_prompts: prompts for the activation-patching sweeps (at most ``n``).
        thresholds: circuit-discovery thresholds to sweep.
        sweeps: activation-patching sweeps to run (`ioi.report.analysis.SWEEP_TITLES`).
        max_heads: discovery's head budget per threshold (`ioi.report.sections.Settings`).
        png: export the figures as PNG for ``report.md`` (needs kaleido and a Chrome).

    Returns:
        The content of ``results.json``.

    Raises:
        ValueError: a bad setting, an ``out`` that cannot be written, a model that cannot
            be loaded, or ``n`` prompts that would not fit in memory (`check_fits`).
    """
    out = check_out_dir(out)  # a folder that cannot be written fails now, not after the work
    console = console or Console(quiet=True)
    if isinstance(model, str):
        model_name = model_name or model
        model = load_model(model)
    model_name = str(model_name or model.cfg.model_name)
    check_fits(model, n, seed)
    settings = Settings(
        n=n,
        seed=seed,
        patch_prompts=min(patch_prompts, n),
        thresholds=tuple(thresholds),
        sweeps=tuple(sweeps),
        max_heads=max_heads,
    )
    report = build_report(model, model_name, settings, console)
    paths = write_report(report, Path(out), png=png)
    results = report.results()
    results["files"] = {name: str(path) for name, path in paths.items()}
    return results


GB = 1e9
FIXED_BYTES = 1 << 30
"""What a run needs whatever ``n`` is (Python, torch, the figures), besides the weights."""


def memory_needed(model: HookedTransformer, n: int, n_pos: int) -> int:
    """Peak memory of `replicate` with ``n`` prompts of ``n_pos`` tokens, in bytes (an estimate).

    The steps that run the model on all ``n`` prompts at once hold their logits over the whole
    vocabulary and one block's activations: `ioi.patching.plan.bytes_per_copy` for a batch of
    ``n``, the same estimate the patching engine sizes its passes by. Measured on the bundled
    model (21 tokens): peak RSS 1.52 GB at ``--n 100`` and 4.01 GB at ``--n 400``, 8.3 MB per
    prompt, against 8.6 MB per prompt estimated here.
    """
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return FIXED_BYTES + 2 * weights + bytes_per_copy(model.cfg, n, n_pos)


def check_fits(model: HookedTransformer, n: int, seed: int = 1) -> None:
    """Refuse ``n`` prompts whose run would not fit in the free memory of the model's device.

    Raises:
        ValueError: saying how much the run needs, how much is free and how many prompts fit.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    sample = IOIDataset(N=min(n, 256), prompt_type="mixed", seed=seed, tokenizer=model)
    n_pos = sample.toks.shape[1] + 2  # longer prompts may turn up among more of them
    device = model.cfg.device if model.cfg.device is not None else "cpu"
    free = free_memory(torch.device(device))
    need = memory_needed(model, n, n_pos)
    if free is None or need <= free:
        return
    per_prompt = bytes_per_copy(model.cfg, 1, n_pos)
    fits = max(0, (free - memory_needed(model, 0, n_pos)) // per_prompt)
    raise ValueError(
        f"--n {n} would need about {need / GB:.1f} GB on {device} ({per_prompt / 1e6:.1f} MB per "
        f"prompt: the logits over the whole vocabulary and one block's activations), but "
        f"{free / GB:.1f} GB are free; at most about {fits} prompts fit"
    )
