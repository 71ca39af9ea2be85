"""The IOI replication report: every step of the analysis, as HTML, markdown and JSON.

`build_report` runs the sections of `ioi.report.sections` (each one function) on a model;
`write_report` writes ``report.html`` (interactive plotly figures, self-contained),
``report.md`` (PNG figures through kaleido when a Chrome is available) and ``results.json``.
`check_out_dir` refuses a folder the report cannot be written to, before any work.
``ioi replicate`` does both (`ioi.replicate.replicate`).
"""

from ioi.report.build import Report, build_report, check_out_dir, write_report
from ioi.report.document import Figure, Section, Table
from ioi.report.sections import SECTIONS, ReportContext, Settings

__all__ = [
    "SECTIONS",
    "Figure",
    "Report",
    "ReportContext",
    "Section",
    "Settings",
    "Table",
    "build_report",
    "check_out_dir",
    "write_report",
]
