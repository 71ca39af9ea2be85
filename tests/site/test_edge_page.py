"""The site's edge page runs on the toy model and shows the report section's own tables and
curve (`ioi.report.edges_section`), not ones it builds again."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioi.circuit import DEFAULT_THRESHOLDS
from ioi.report import analysis as A
from ioi.report import edges_section as E

APP = Path(__file__).resolve().parents[2] / "streamlit_app"
N, SEED = 10, 1

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    # From the home page, as the site runs (it puts streamlit_app/ on the path for ioi_site).
    at = AppTest.from_file(str(APP / "Home.py"), default_timeout=600)
    at.session_state["ioi_n"] = N
    at.session_state["ioi_seed"] = SEED
    return at.run().switch_page("pages/10_Edge_circuits.py").run()


def test_edge_page_shows_the_agreement_table_and_the_curve(page, toy_model):
    assert not page.exception, [e.message for e in page.exception]
    assert page.title[0].value == "Edge circuits"
    assert page.sidebar.selectbox[0].value == "toy"
    columns = [list(t.value.columns) for t in page.dataframe]
    agreement = E.agreement_table(_results(toy_model))
    assert list(agreement.columns) in columns
    shown = page.dataframe[columns.index(list(agreement.columns))].value
    expected = agreement.to_frame()
    assert list(shown["estimate"]) == ["eap", "eap-ig"]
    assert shown["Spearman"].tolist() == pytest.approx(expected["Spearman"].tolist(), abs=1e-6)
    assert ["edge", "EAP", "EAP-IG", "exact", "SE", "95% low", "95% high"] in columns
    assert ["set", "heads", "count"] in columns
    charts = page.get("plotly_chart")
    assert len(charts) == 1 and "Faithfulness of the top n edges" in charts[0].proto.spec


def _results(model) -> E.EdgeResults:
    """The page's computation, called directly (same prompts, node circuit from discovery)."""
    setup = A.prepare(model, N, SEED)
    oracle, ablation = A.path_patching_oracle(setup), A.mean_ablation(setup)
    chosen, _ = A.discover(oracle, ablation, DEFAULT_THRESHOLDS, 0.8)
    return E.edge_results(setup, chosen.discovered.heads())
