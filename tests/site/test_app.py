"""The Streamlit site: every page runs under ``AppTest`` and shows its text and live results;
the prompt checker accepts IOI prompts and explains what is wrong with the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioi import site

APP = Path(__file__).resolve().parents[2] / "streamlit_app"
ROOT = APP.parent
PAGES = sorted(p.name for p in (APP / "pages").glob("*.py"))
COURSE_PAGES = {int(name.split("_")[0]): name for name in PAGES if name[0] in "123456"}
# live results each page must show at least (plotly charts, tables)
LIVE = {1: (1, 3), 2: (4, 1), 3: (2, 2), 4: (2, 1), 5: (5, 2), 6: (2, 1)}


# ---- the prompt checker (no Streamlit needed) --------------------------------------------


def test_a_good_prompt_is_read_with_its_names_and_positions(toy_model):
    prompt = site.check_prompt(site.EXAMPLE_PROMPT, toy_model)
    assert (prompt.io, prompt.s) == ("Mary", "John")
    words = prompt.token_strs
    assert words[prompt.positions["IO"]] == " Mary"
    assert words[prompt.positions["S1"]] == words[prompt.positions["S2"]] == " John"
    assert prompt.positions["end"] == len(words) - 1 and words[-1] == " to"
    result = site.analyse_prompt(toy_model, prompt)
    assert result.logit_diff > 0 and result.io_prob > result.s_prob
    assert result.patterns.shape == (3, len(words), len(words))
    assert result.per_head.shape == (toy_model.cfg.n_layers, toy_model.cfg.n_heads)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "Type a sentence"),
        ("x" * 500, "under 400"),
        ("Hello there, how are you", "no names"),
        ("When Mary and John went to the store, John gave a drink to Mary", "just before"),
        ("When Mary and John went to the store, Sarah gave a drink to", "3 names"),
        ("When Mary and John went to the store, they gave a drink to", "twice"),
        ("When Mary and Maximilian went to the store, Maximilian gave a drink to", "single token"),
        ("When Mary and John went to the shops, John gave a banana to", "never saw"),
    ],
)
def test_bad_prompts_get_a_friendly_value_error(text, needle, toy_model):
    with pytest.raises(ValueError, match=needle):
        site.check_prompt(text, toy_model)


def test_course_pages_are_the_course_sources():
    pages = site.course_pages(ROOT)
    sources = sorted((ROOT / "course").glob("[0-9][0-9]_*.py"))
    assert sorted(pages) == [int(p.name[:2]) for p in sources]
    first = pages[min(pages)]
    source = sources[0].read_text(encoding="utf-8")
    missing = [h.text for h in first.headings() if f"# {'#' * h.level} {h.text}\n" not in source]
    assert first.headings() and not missing
    assert any(b.kind == "markdown" for b in first.blocks)


def test_split_markdown_keeps_code_fences_whole():
    blocks = site.split_markdown("## Title\ntext\n```\n# not a heading\n```\n### Sub")
    assert [(b.kind, b.level) for b in blocks] == [("heading", 2), ("markdown", 0), ("heading", 3)]
    assert "# not a heading" in blocks[1].text and blocks[0].anchor == "title"


# ---- the site under AppTest --------------------------------------------------------------


@pytest.fixture(scope="module")
def app():
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP / "Home.py"), default_timeout=600)
    at.session_state["ioi_n"] = 10  # the pages compute live; few prompts keep them quick
    return at.run()


def _no_exception(at) -> None:
    assert not at.exception, [e.message for e in at.exception]


@pytest.mark.slow
def test_home_page_has_contents_models_and_live_results(app):
    _no_exception(app)
    assert app.title[0].value == "Indirect Object Identification"
    assert len(app.get("page_link")) == len(PAGES)
    assert len(app.get("plotly_chart")) >= 1 and len(app.dataframe) >= 2
    assert {m.label for m in app.metric} >= {"mean logit diff (IO - S)", "ABC baseline"}
    assert app.sidebar.selectbox[0].value == "toy"


@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(COURSE_PAGES))
def test_course_page_shows_text_and_live_results(app, number):
    at = app.switch_page(f"pages/{COURSE_PAGES[number]}").run()
    _no_exception(at)
    course = site.course_pages(ROOT).get(number)
    if course is not None:  # the walkthrough is the course's own text
        assert at.title[0].value == course.title
        headers = {h.value for h in at.header} | {h.value for h in at.subheader}
        assert {h.text for h in course.headings()} <= headers
    assert [t.label for t in at.tabs] == ["Walkthrough", "Live results"]
    charts, tables = LIVE[number]
    assert len(at.get("plotly_chart")) >= charts
    assert len(at.dataframe) >= tables


@pytest.mark.slow
def test_attention_patterns_are_drawn_by_circuitsvis(app):
    at = app.switch_page(f"pages/{COURSE_PAGES[2]}").run()
    frames = at.get("iframe")
    assert frames, "no circuitsvis view on the logit attribution page"
    assert "CircuitsVis.render" in frames[0].proto.srcdoc


@pytest.mark.slow
def test_prompt_page_answers_and_explains_errors(app):
    name = next(p for p in PAGES if "prompt" in p.lower())
    at = app.switch_page(f"pages/{name}").run()
    _no_exception(at)
    assert at.metric[0].label == "logit diff (IO - S)" and float(at.metric[0].value) > 0
    assert len(at.get("plotly_chart")) == 1 and len(at.get("iframe")) == 1

    at.text_input[0].set_value("When Mary and John went to the shops, John gave a banana to")
    at.run()
    _no_exception(at)
    assert at.error and "never saw" in at.error[0].value
    assert not at.get("plotly_chart")


@pytest.mark.slow
def test_sidebar_says_why_gpt2_small_is_missing(monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr("ioi.site.data.gpt2_small_available", lambda: False)
    at = AppTest.from_file(str(APP / "pages" / "7_Try_your_own_prompt.py"), default_timeout=600)
    at.run()
    _no_exception(at)
    assert at.sidebar.selectbox[0].options == ["bundled IOI model (3 layers x 4 heads)"]
    assert any("ioi replicate --model gpt2-small" in c.value for c in at.sidebar.caption)
