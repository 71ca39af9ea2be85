"""Run every section, then write ``report.html``, ``report.md`` and ``results.json``."""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
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

FILES = ("results.json", "report.md", "report.html")  # in the order they are moved into place


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
        reference=reference_rows(ctx) if ctx.compares_with_paper else None,
    )


def check_out_dir(out: Path | str) -> Path:
    """Refuse an output folder the report cannot be written to, before any work is done.

    ``out`` may exist (a folder: the report's files in it are replaced, nothing else is
    touched) or not (it is created, with its parents). The check writes and removes a probe
    folder beside ``out`` and, when ``out`` exists, inside it, so a read-only folder, a path
    under ``/proc`` or a full disk fails here, in well under a second.

    Raises:
        ValueError: ``out`` is a file, lies under a file, or cannot be written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; choose a folder for the report")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out} lies under {parent}, which is a file, not a folder")
    for where in (parent, out) if out.is_dir() else (parent,):
        try:
            os.rmdir(tempfile.mkdtemp(prefix=f".{out.name or 'report'}.probe-", dir=where))
        except OSError as err:
            raise ValueError(
                f"cannot write the report to {out}: {where} is not writable "
                f"({err.strerror or err}); choose another --out"
            ) from None
    return out


def write_report(report: Report, out: Path, png: bool = True) -> dict[str, Path]:
    """Write the three files (and ``figures/*.png`` when kaleido can) to ``out``, all or none.

    The files are written into a temporary folder beside ``out`` and moved into place only
    when all of them are complete, so a run that fails leaves a previous report in ``out``
    as it was (and no half-written one). Other files in ``out`` are never touched.

    Args:
        png: try PNG export for the markdown report; if False, or if it cannot run, figures
            in ``report.md`` link to their interactive versions in ``report.html``.

    Returns:
        File name -> path written.

    Raises:
        ValueError: ``out`` cannot hold the report (see `check_out_dir`).
    """
    out = check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name or 'report'}.partial-", dir=out.parent))
    try:
        _write_files(report, staging, png)
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {name: out / name for name in FILES}


def _write_files(report: Report, folder: Path, png: bool) -> None:
    figures = [f for s in report.sections for f in s.figures]
    if png:
        export = export_pngs(figures, folder / "figures")
        note = "" if export.paths else f"No PNG figures: {export.reason}."
    else:
        export, note = None, "PNG export was turned off; figures link to report.html."
    pngs = export.paths if export else {}
    paths = {name: folder / name for name in FILES}
    paths["report.html"].write_text(
        render_html(report.title, report.meta(), report.sections), encoding="utf-8"
    )
    paths["report.md"].write_text(
        render_markdown(report.title, report.meta(), report.sections, pngs, folder, note),
        encoding="utf-8",
    )
    results = report.results()
    results["figures"] = {"png": sorted(pngs), "png_note": note}
    paths["results.json"].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _move_into_place(staging: Path, out: Path) -> None:
    """Move a complete report from ``staging`` into ``out`` (created, or updated in place)."""
    if not out.exists():
        staging.rename(out)
        return
    old = staging / ".previous-figures"
    if (out / "figures").is_dir():  # figures of an earlier report: never mix them with these
        (out / "figures").rename(old)
    if (staging / "figures").is_dir():
        (staging / "figures").rename(out / "figures")
    for name in FILES:  # each replace is atomic; the html, the page people open, goes last
        os.replace(staging / name, out / name)
