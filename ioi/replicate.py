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

from rich.console import Console
from transformer_lens import HookedTransformer

from ioi.circuit import DEFAULT_THRESHOLDS
from ioi.models import load_model
from ioi.report import Settings, build_report, write_report


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
    png: bool = True,
) -> dict:
    """Run every section of the report on ``model`` and write it to ``out``.

    Args:
        model: a loaded model, or a name for `ioi.models.load_model` (then ``model_name``
            defaults to it).
        n: IOI prompts (mixed BABA/ABBA) for every step but the activation-patching sweeps.
        seed: dataset seed.
        out: output folder (created if needed).
        console: where the progress bars go; None is silent.
        model_name: the name the report uses (``"gpt2-small"`` turns on the published figures).
        patch_prompts: prompts for the activation-patching sweeps (at most ``n``).
        thresholds: circuit-discovery thresholds to sweep.
        sweeps: activation-patching sweeps to run (`ioi.report.analysis.SWEEP_TITLES`).
        png: export the figures as PNG for ``report.md`` (needs kaleido and a Chrome).

    Returns:
        The content of ``results.json``.

    Raises:
        ValueError: a bad setting, or a model that cannot be loaded.
    """
    console = console or Console(quiet=True)
    if isinstance(model, str):
        model_name = model_name or model
        model = load_model(model)
    model_name = str(model_name or model.cfg.model_name)
    settings = Settings(
        n=n,
        seed=seed,
        patch_prompts=min(patch_prompts, n),
        thresholds=tuple(thresholds),
        sweeps=tuple(sweeps),
    )
    report = build_report(model, model_name, settings, console)
    paths = write_report(report, Path(out), png=png)
    results = report.results()
    results["files"] = {name: str(path) for name, path in paths.items()}
    return results
