"""``report.html``: one self-contained page with interactive plotly figures.

plotly.js is embedded once, in the page head; each figure is a ``<div>`` from
``fig.to_html(full_html=False, include_plotlyjs=False)``. The page needs no network.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from markdown_it import MarkdownIt
from plotly.offline import get_plotlyjs

from ioi.report.document import Figure, Section, Table, format_cell

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1a1a1a; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 2rem 4rem; }
nav ol { columns: 2; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { caption-side: top; font-weight: 600; text-align: left; padding: 0.3rem 0; }
figure { margin: 1rem 0 2rem; }
figcaption { color: #555; font-size: 0.9rem; }
.meta { color: #555; }
.status { background: #fff4e0; border-left: 4px solid #e0a030; padding: 0.5rem 1rem; }
"""


def table_html(table: Table) -> str:
    """A table as HTML, cells formatted by `format_cell`."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) + "</tr>"
        for row in table.rows
    )
    return (
        f"<table><caption>{html.escape(table.title)}</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def figure_html(figure: Figure) -> str:
    """A figure as a ``<figure id="fig-KEY">`` holding its plotly div."""
    div = figure.fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{figure.key}")
    caption = f"<figcaption>{html.escape(figure.caption)}</figcaption>" if figure.caption else ""
    return f'<figure id="fig-{figure.key}">{div}{caption}</figure>'


def section_html(section: Section, md: MarkdownIt) -> str:
    """One ``<section id="KEY">``: heading, status, text, tables, figures."""
    parts = [f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>']
    if section.status != "filled":
        label = "Not available" if section.status == "unavailable" else "Not applicable"
        parts.append(f'<p class="status">{label}: {html.escape(section.reason)}</p>')
    parts += [md.render(paragraph) for paragraph in section.text]
    parts += [table_html(t) for t in section.tables]
    parts += [figure_html(f) for f in section.figures]
    parts.append("</section>")
    return "\n".join(parts)


def render_html(title: str, meta: Sequence[str], sections: Sequence[Section]) -> str:
    """The whole page: title, metadata lines, contents, sections."""
    md = MarkdownIt("commonmark", {"html": False})
    toc = "".join(f'<li><a href="#{s.key}">{html.escape(s.title)}</a></li>' for s in sections)
    meta_html = "".join(f'<p class="meta">{html.escape(line)}</p>' for line in meta)
    body = "\n".join(section_html(s, md) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head>'
        f"<body><main><h1>{html.escape(title)}</h1>{meta_html}"
        f"<nav><h2>Contents</h2><ol>{toc}</ol></nav>\n{body}\n</main></body></html>\n"
    )
