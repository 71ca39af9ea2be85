"""Run every section, then write ``report.html``, ``report.md`` and ``results.json``."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from transformer_lens import HookedTransformer

import ioi
from ioi.report.document import Section, jsonable
from ioi.report.html import render_html
from ioi.report.images import export_pngs
from ioi.report.markdown import render_markdown
from ioi.report.progress import Tracker
from ioi.report.sections import SECTIONS, ReportContext, Settings, reference_rows

FILES = ("report.html", "report.md", "results.json")


@dataclass
class Report:
    """The computed sections and what they were computed on."""

    model_name: str
    device: str
    settings: Settings
    sections: list[Section]
    seconds: float
    performance: dict = field(default_factory=dict)
    reference: list[dict] | None = None

    @property
    def title(self) -> str:
        return f"IOI replication report: {self.model_name}"

    def meta(self) -> list[str]:
        """One line each: what ran, where, how long."""
        s = self.settings
        return [
            f"ioi {ioi.__version__}, torch {torch.__version__}, Python "
            f"{platform.python_version()}; model {self.model_name} on {self.device}.",
            f"{s.n} IOI prompts (seed {s.seed}), {min(s.patch_prompts, s.n)} for activation "
            f"patching; discovery thresholds {', '.join(f'{t:g}' for t in s.thresholds)}.",
            f"Computed in {self.seconds:.1f} s.",
        ]

    def results(self) -> dict:
        """Everything for ``results.json``: settings, performance, every section's numbers."""
        out = {
            "model": self.model_name,
            "device": self.device,
            "ioi_version": ioi.__version__,
            "dataset": {
                "N": self.settings.n,
                "seed": self.settings.seed,
                "prompt_type": "mixed",
                "abc_flip": "ABB->XYZ, BAB->XYZ",
            },
            "settings": asdict(self.settings),
            "seconds": round(self.seconds, 2),
            "performance": self.performance,
            "sections": {s.key: s.to_json() for s in self.sections},
        }
        if self.reference is not None:
            out["reference"] = self.reference
        return jsonable(out)


def build_report(
    model: HookedTransformer,
    model_name: str,
    settings: Settings,
    console: Console,
) -> Report:
    """Compute every section of `SECTIONS` on ``model``, with progress bars on ``console``."""
    start = time.perf_counter()
    with Tracker(console) as tracker:
        tracker.sections(len(SECTIONS) + 1)
        tracker.section("IOI and ABC prompts")
        ctx = ReportContext(model, model_name, settings, tracker)
        tracker.section_done()
        sections = []
        for _, label, builder in SECTIONS:
            tracker.section(label)
            t0 = time.perf_counter()
            section = builder(ctx)
            section.seconds = time.perf_counter() - t0
            sections.append(section)
            tracker.section_done()
    return Report(
        model_name=model_name,
        device=str(model.cfg.device),
        settings=settings,
        sections=sections,
        seconds=time.perf_counter() - start,
        performance=ctx.setup.performance,
        reference=reference_rows(ctx) if ctx.is_gpt2 else None,
    )


def write_report(report: Report, out: Path, png: bool = True) -> dict[str, Path]:
    """Write the three files (and ``figures/*.png`` when kaleido can) to ``out``.

    Args:
        png: try PNG export for the markdown report; if False, or if it cannot run, figures
            in ``report.md`` link to their interactive versions in ``report.html``.

    Returns:
        File name -> path written.
    """
    out.mkdir(parents=True, exist_ok=True)
    figures = [f for s in report.sections for f in s.figures]
    if png:
        export = export_pngs(figures, out / "figures")
        note = "" if export.paths else f"No PNG figures: {export.reason}."
    else:
        export, note = None, "PNG export was turned off; figures link to report.html."
    pngs = export.paths if export else {}
    paths = {name: out / name for name in FILES}
    paths["report.html"].write_text(
        render_html(report.title, report.meta(), report.sections), encoding="utf-8"
    )
    paths["report.md"].write_text(
        render_markdown(report.title, report.meta(), report.sections, pngs, out, note),
        encoding="utf-8",
    )
    results = report.results()
    results["figures"] = {"png": sorted(pngs), "png_note": note}
    paths["results.json"].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return paths
