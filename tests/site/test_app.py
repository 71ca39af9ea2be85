"""The Streamlit site: every page runs under ``AppTest`` and shows its text and live results;
the prompt checker accepts IOI prompts and explains what is wrong with the others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ioi import site
from ioi.report import tables as T

APP = Path(__file__).resolve().parents[2] / "streamlit_app"
ROOT = APP.parent
PAGES = sorted(p.name for p in (APP / "pages").glob("*.py"))
# live results each course page must show at least (plotly charts, tables)
LIVE = {1: (1, 3), 2: (4, 1), 3: (2, 2), 4: (2, 1), 5: (5, 2), 6: (2, 1), 7: (2, 1)}
COURSE_PAGES = {int(name.split("_")[0]): name for name in PAGES if int(name.split("_")[0]) in LIVE}


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


def _figure_anchors(page: Path) -> list[str]:
    """The heading anchors a page script hands to ``section_page`` (its dict literal's keys)."""
    for node in ast.walk(ast.parse(page.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "section_page":
            return [key.value for key in node.args[1].keys]
    raise AssertionError(f"{page.name} does not call ioi_site.section_page")


def test_every_live_figure_sits_under_a_heading_of_its_course_section():
    pages = site.course_pages(ROOT)
    for number, name in COURSE_PAGES.items():
        anchors = _figure_anchors(APP / "pages" / name)
        sections = {h.anchor for h in pages[number].headings(max_level=2)}
        assert anchors, f"{name} shows no live results"
        assert set(anchors) <= sections, f"{name}: {set(anchors) - sections} are not headings"


def test_folds_become_details_blocks_and_broken_folds_are_refused():
    blocks = site.split_markdown(
        "Predict first.\n<details><summary>Answer</summary>\n\nIt is **2**.\n</details>\nAfter."
    )
    assert [(b.kind, b.summary) for b in blocks] == [
        ("markdown", ""),
        ("details", "Answer"),
        ("markdown", ""),
    ]
    assert blocks[1].text == "It is **2**."
    with pytest.raises(ValueError, match="never closed"):
        site.split_markdown("<details><summary>Hint 1</summary>\nbody")
    with pytest.raises(ValueError, match="closes no fold"):
        site.split_markdown("text\n</details>")
    # a fold inside a code fence is code, not a fold
    fenced = site.split_markdown("```\n<details><summary>x</summary>\n```")
    assert [b.kind for b in fenced] == ["markdown"]


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
    # the report's own score table (ioi.report.tables), not one the site builds again
    assert [list(t.value.columns) for t in app.dataframe].count(list(T.SCORE_COLUMNS)) == 1
    assert {m.label for m in app.metric} >= {"mean logit diff (IO - S)", "ABC baseline"}
    assert app.sidebar.selectbox[0].value == "toy"


def _walk(node, out: list) -> list:
    """The page's elements in document order: (type, header text or caption, node)."""
    for child in getattr(node, "children", {}).values():
        text = getattr(child, "value", "") if child.type in ("header", "subheader") else ""
        if child.type == "caption":
            text = child.value
        out.append((child.type, text if isinstance(text, str) else "", child))
        _walk(child, out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(COURSE_PAGES))
def test_course_page_shows_text_with_live_results_beside_it(app, number):
    at = app.switch_page(f"pages/{COURSE_PAGES[number]}").run()
    _no_exception(at)
    course = site.course_pages(ROOT)[number]
    assert at.title[0].value == course.title
    elements = _walk(at.main, [])
    headers = [text for kind, text, _ in elements if kind in ("header", "subheader")]
    assert [h.text for h in course.headings()] == headers  # the course's text, nothing else
    assert not at.tabs, "live results belong beside the text, not on a separate tab"
    # every figure follows its own heading, before the next heading
    for anchor in _figure_anchors(APP / "pages" / COURSE_PAGES[number]):
        title = next(h.text for h in course.headings(max_level=2) if h.anchor == anchor)
        start = next(i for i, (k, t, _) in enumerate(elements) if k == "header" and t == title)
        after = elements[start + 1 :]
        stop = next((i for i, (k, _, _) in enumerate(after) if k in ("header", "subheader")), None)
        section = after[:stop]
        assert any(k == "caption" and t.startswith("Live:") for k, t, _ in section), title
    # folded hints and answers: one expander per <details>, closed until clicked
    folds = [b.summary for b in course.blocks if b.kind == "details"]
    assert [e.label for e in at.expander] == folds and folds
    assert not any(e.proto.expanded for e in at.expander)
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
    at = AppTest.from_file(str(APP / "pages" / "8_Try_your_own_prompt.py"), default_timeout=600)
    at.run()
    _no_exception(at)
    assert at.sidebar.selectbox[0].options == ["bundled IOI model (3 layers x 4 heads)"]
    assert any("ioi replicate --model gpt2-small" in c.value for c in at.sidebar.caption)


def test_streamlit_run_hides_the_deploy_button_from_any_directory(tmp_path):
    """`streamlit run streamlit_app/Home.py` reads the script-level config, so the Deploy button
    is hidden without `ioi app`'s flags, whatever the working directory or the user's config."""
    import os
    import subprocess
    import sys

    probe = (
        "import streamlit.config as c, sys\n"
        "print(c.get_option('client.toolbarMode'))\n"  # before: Streamlit's default
        "c._main_script_path = sys.argv[1]\n"  # what `streamlit run` sets (streamlit/web/cli.py)
        "c.get_config_options(force_reparse=True)\n"
        "print(c.get_option('client.toolbarMode'))\n"
    )
    env = {**os.environ, "HOME": str(tmp_path)}  # no ~/.streamlit/config.toml of the user's
    out = subprocess.run(
        [sys.executable, "-c", probe, str(APP / "Home.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["auto", "minimal"], out
