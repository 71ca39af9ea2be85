"""PNG copies of the report's figures, through kaleido and a locally installed Chrome/Chromium.

Kaleido 1.x drives a Chrome it finds on the machine (``BROWSER_PATH``, then the usual names on
``PATH``, then the one ``kaleido_get_chrome`` downloads); it never downloads one itself here.
The browser is started through a small wrapper that adds flags keeping it off the network, and
MathJax (which kaleido would fetch from a CDN) is turned off. When kaleido or a browser is
missing, or rendering fails, no PNG is written and the reason is returned, so the markdown
report can link to the interactive HTML figures instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ioi.report.document import Figure

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
QUIET_FLAGS = ("--disable-background-networking", "--disable-quic")
WIDTH, HEIGHT = 960, 540


@dataclass(frozen=True)
class PngExport:
    """Where each figure's PNG went (by key), or why there are none."""

    paths: dict[str, Path] = field(default_factory=dict)
    reason: str = ""


def find_browser() -> str | None:
    """A Chrome or Chromium executable on this machine, or None."""
    explicit = os.environ.get("BROWSER_PATH")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return found
    try:  # kaleido's own download (`kaleido_get_chrome`), if the user fetched one
        from choreographer.browsers.chromium import Chromium

        return Chromium.find_browser(skip_local=False, skip_typical=False)
    except Exception:  # noqa: BLE001 - any failure here just means "no browser"
        return None


def _quiet_wrapper(browser: str, folder: Path) -> str:
    """A shell script that starts ``browser`` with `QUIET_FLAGS` (POSIX only)."""
    if os.name == "nt":
        return browser
    script = folder / "chromium-quiet"
    flags = " ".join(QUIET_FLAGS)
    script.write_text(f'#!/bin/sh\nexec "{browser}" {flags} "$@"\n')
    script.chmod(0o755)
    return str(script)


def export_pngs(figures: Sequence[Figure], folder: Path) -> PngExport:
    """Write ``folder/<key>.png`` for every figure in one browser session.

    Returns:
        The paths written, or none and the reason (kaleido missing, no browser, a failure).
    """
    try:
        import kaleido
    except ImportError:
        return PngExport(reason="kaleido is not installed (pip install kaleido)")
    browser = find_browser()
    if browser is None:
        return PngExport(
            reason="kaleido found no Chrome or Chromium (install one, e.g. apt-get install "
            "chromium, or set BROWSER_PATH)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    paths = {fig.key: folder / f"{fig.key}.png" for fig in figures}
    jobs = [
        {
            "fig": fig.fig,
            "path": paths[fig.key],
            "opts": {"format": "png", "width": WIDTH, "height": HEIGHT},
        }
        for fig in figures
    ]
    with tempfile.TemporaryDirectory(prefix="ioi-kaleido-") as tmp:
        kopts = {"path": _quiet_wrapper(browser, Path(tmp)), "mathjax": False}
        try:
            kaleido.write_fig_from_object_sync(jobs, kopts=kopts)
        except Exception as err:  # noqa: BLE001 - PNGs are optional; say why and go on
            return PngExport(reason=f"kaleido could not render with {browser}: {err}")
    missing = [key for key, path in paths.items() if not path.is_file()]
    if missing:
        return PngExport(reason=f"kaleido wrote no PNG for {missing}")
    return PngExport(paths=paths)
