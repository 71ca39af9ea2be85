"""The report's context on the toy model, shared by the section tests (built once a session)."""

from __future__ import annotations

import pytest
from rich.console import Console

from ioi.report.progress import Tracker
from ioi.report.sections import ReportContext, Settings

N, SEED = 12, 2  # the report's prompts in the section tests


@pytest.fixture(scope="session")
def ctx(toy_model):
    """A `ReportContext` of ``N`` prompts (seed ``SEED``); sections compute on first use."""
    with Tracker(Console(quiet=True)) as tracker:
        return ReportContext(toy_model, "toy", Settings(n=N, seed=SEED), tracker)
