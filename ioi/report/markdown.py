"""``report.md``: the report as markdown, figures as PNGs or as links into ``report.html``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ioi.report.document import Figure, Section, Table, format_cell


def table_markdown(table: Table) -> str:
    """A pipe table with a bold title line."""

    def cells(values) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [f"**{table.title}**", "", cells(table.columns), cells("---" for _ in table.columns)]
    lines += [cells(format_cell(v) for v in row) for row in table.rows]
    return "\n".join(lines)


def figure_markdown(figure: Figure, png: Path | None, base: Path) -> str:
    """The PNG if there is one, else a link to the interactive figure in ``report.html``."""
    title = figure.fig.layout.title.text or figure.key
    caption = f" {figure.caption}" if figure.caption else ""
    if png is not None:
        return f"![{title}]({png.relative_to(base).as_posix()})\n\n*{title}.*{caption}"
    return (
        f"*Figure: [{title}](report.html#fig-{figure.key}) (interactive, in report.html).*{caption}"
    )


def render_markdown(
    title: str,
    meta: Sequence[str],
    sections: Sequence[Section],
    pngs: Mapping[str, Path],
    base: Path,
    png_note: str = "",
) -> str:
    """The whole report; ``pngs`` maps figure keys to PNG files under ``base``."""
    out = [f"# {title}", "", *[f"{line}  " for line in meta], ""]
    if png_note:
        out += [f"*{png_note}*", ""]
    out += ["## Contents", ""]
    out += [f"{i}. [{s.title}](#{s.key})" for i, s in enumerate(sections, start=1)]
    for section in sections:
        out += ["", f'<a id="{section.key}"></a>', "", f"## {section.title}", ""]
        if section.status != "filled":
            label = "Not available" if section.status == "unavailable" else "Not applicable"
            out += [f"> **{label}:** {section.reason}", ""]
        for paragraph in section.text:
            out += [paragraph, ""]
        for table in section.tables:
            out += [table_markdown(table), ""]
        for figure in section.figures:
            out += [figure_markdown(figure, pngs.get(figure.key), base), ""]
    return "\n".join(out).rstrip() + "\n"
