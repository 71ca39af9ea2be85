"""Shared parts of the site's pages: the sidebar, the course text, cached calls into `ioi`.

Streamlit puts this folder on ``sys.path`` when it runs ``Home.py``, so pages import this
module by name. Everything computed here is a call into the ``ioi`` package, cached:
``st.cache_resource`` for objects that hold the model (the model itself, prompt sets, the
path-patching oracle, the mean ablation, discovered circuits), ``st.cache_data`` for results
(tensors, patching results, figures), keyed by model name, prompt count and seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components
import torch

from ioi import site
from ioi.circuit import DEFAULT_THRESHOLDS
from ioi.head import Head
from ioi.models import load_model
from ioi.report import analysis as A
from ioi.report import tables as T
from ioi.report.document import Table

ROOT = Path(__file__).resolve().parent.parent  # the repository: course/ lives here
DEFAULT_N, DEFAULT_SEED = 40, 1
PAGES = {
    1: ("pages/1_Model_and_task.py", "1. The model and the task"),
    2: ("pages/2_Logit_attribution.py", "2. Logit attribution"),
    3: ("pages/3_Activation_patching.py", "3. Activation patching"),
    4: ("pages/4_Path_patching.py", "4. Path patching"),
    5: ("pages/5_Paper_replication.py", "5. Replicating the paper"),
    6: ("pages/6_Further.py", "6. Further"),
    7: ("pages/7_Feature_circuits.py", "7. Feature circuits"),
}
PROMPT_PAGE = "pages/8_Try_your_own_prompt.py"
FEATURE_PAGE = "pages/9_Feature_browser.py"
EDGE_PAGE = "pages/10_Edge_circuits.py"


@dataclass(frozen=True)
class Choice:
    """What the sidebar selected."""

    model: str
    n: int
    seed: int
    show_code: bool


# ---- cached calls into ioi ---------------------------------------------------------------


@st.cache_resource(show_spinner="Loading the model...")
def get_model(name: str):
    return load_model(name, device="auto")


@st.cache_resource(show_spinner="Building prompts and measuring the model...")
def get_setup(name: str, n: int, seed: int) -> A.Setup:
    return A.prepare(get_model(name), n, seed)


@st.cache_data(show_spinner="Direct logit attribution...")
def get_attribution(name: str, n: int, seed: int) -> A.Attribution:
    return A.logit_attribution(get_setup(name, n, seed))


@st.cache_data(show_spinner=False)
def get_per_prompt(name: str, n: int, seed: int) -> torch.Tensor:
    return A.per_prompt_logit_diff(get_setup(name, n, seed))


@st.cache_data(show_spinner=False)
def get_patching(name: str, n: int, seed: int, component: str):
    return A.activation_patching_sweep(get_setup(name, n, seed), component)


@st.cache_data(show_spinner="Attribution patching and exact patching of every head...")
def get_attribution_vs_exact(name: str, n: int, seed: int):
    return A.attribution_vs_exact(get_setup(name, n, seed))


@st.cache_resource(show_spinner="Caching activations for path patching...")
def get_oracle(name: str, n: int, seed: int):
    return A.path_patching_oracle(get_setup(name, n, seed))


@st.cache_data(show_spinner="Path patching every head to the logits...")
def get_to_logits(name: str, n: int, seed: int) -> torch.Tensor:
    return A.heads_to_logits(get_oracle(name, n, seed))


@st.cache_data(show_spinner="Path patching into the receivers...")
def get_to_receivers(
    name: str, n: int, seed: int, receivers: tuple[Head, ...], inp: str
) -> torch.Tensor:
    return A.heads_to_receivers(get_oracle(name, n, seed), receivers, inp)


@st.cache_resource(show_spinner="Mean ablation: per-template means...")
def get_ablation(name: str, n: int, seed: int):
    return A.mean_ablation(get_setup(name, n, seed))


@st.cache_resource(show_spinner="Discovering the circuit at every threshold...")
def get_discovery(name: str, n: int, seed: int):
    return A.discover(
        get_oracle(name, n, seed), get_ablation(name, n, seed), DEFAULT_THRESHOLDS, 0.8
    )


@st.cache_resource(show_spinner="Faithfulness, completeness, minimality...")
def get_criteria(name: str, n: int, seed: int, threshold: float, paper: bool = False):
    """Criteria of the circuit discovered at ``threshold`` (or of the published one)."""
    from ioi.circuit import gpt2_small_circuit

    if paper:
        circuit = gpt2_small_circuit()
    else:
        _, points = get_discovery(name, n, seed)
        circuit = next(p for p in points if p.threshold == threshold).discovered.circuit
    return A.criteria(get_ablation(name, n, seed), circuit, seed=seed)


# ---- layout ------------------------------------------------------------------------------


def sidebar() -> Choice:
    """Model picker, prompt count and seed, kept across pages in ``st.session_state``."""
    options = site.model_options()
    available = [o for o in options if o.available]
    state = st.session_state
    state.setdefault("ioi_model", available[0].name)
    state.setdefault("ioi_n", DEFAULT_N)
    state.setdefault("ioi_seed", DEFAULT_SEED)
    state.setdefault("ioi_code", False)
    # Widgets get their own keys, copied from and back to the persistent ones, so a choice
    # survives moving between pages (Streamlit drops widget state of pages not shown).
    for key in ("ioi_model", "ioi_n", "ioi_seed", "ioi_code"):
        state[f"_{key}"] = state[key]

    def keep(key: str) -> Callable[[], None]:
        return lambda: state.update({key: state[f"_{key}"]})

    with st.sidebar:
        st.header("Model")
        labels = {o.name: o.label for o in available}
        st.selectbox(
            "Model",
            list(labels),
            format_func=labels.get,
            key="_ioi_model",
            on_change=keep("ioi_model"),
        )
        for option in options:
            if not option.available:
                st.caption(f"{option.label}: not available. {option.note}")
        st.slider(
            "IOI prompts",
            10,
            200,
            step=10,
            key="_ioi_n",
            on_change=keep("ioi_n"),
            help="Prompts used by the live results (alternately BABA and ABBA).",
        )
        st.number_input("Seed", 0, 10_000, key="_ioi_seed", on_change=keep("ioi_seed"))
        st.checkbox("Show the course's code cells", key="_ioi_code", on_change=keep("ioi_code"))
    return Choice(state.ioi_model, int(state.ioi_n), int(state.ioi_seed), bool(state.ioi_code))


@st.cache_data(show_spinner=False)
def course_pages() -> dict[int, site.CoursePage]:
    return site.course_pages(ROOT)


Live = Callable[[Choice], None]


def live_box(draw: Live, choice: Choice) -> None:
    """One section's live results, framed, computed by the library on the chosen model."""
    with st.container(border=True):
        st.caption(
            f"Live: **{choice.model}**, {choice.n} prompts, seed {choice.seed} "
            "(change them in the sidebar)"
        )
        draw(choice)


def course_text(number: int, choice: Choice, figures: dict[str, Live]) -> site.CoursePage | None:
    """Render course section ``number`` with its live figures beside the text about them.

    ``figures`` maps the anchor of a section heading (level 2) to what draws its results; they
    are drawn after the section's opening text, before its first exercise. Folded hints and
    answers (``<details>``) become expanders that open on click. Figures whose heading the
    course lacks, or all of them when the section has no text, follow at the end.
    """
    try:
        page = course_pages().get(number)
    except ValueError as err:
        st.error(f"The course sources cannot be read: {err}")
        page = None
    if page is None:
        st.info(
            f"The course text of section {number} cannot be shown; the live results below "
            "are computed by the library all the same."
        )
    blocks = page.blocks if page else ()
    placed = {b.anchor for b in blocks if b.kind == "heading" and b.level == 2}
    pending: str | None = None
    for block in blocks:
        if block.kind == "heading" and pending is not None:
            live_box(figures[pending], choice)
            pending = None
        if block.kind == "heading":
            if block.level > 1:
                header = st.header if block.level == 2 else st.subheader
                header(block.text, anchor=block.anchor)
            if block.level == 2 and block.anchor in figures:
                pending = block.anchor
        elif block.kind == "markdown":
            st.markdown(block.text)
        elif block.kind == "details":
            with st.expander(block.summary):
                st.markdown(block.text)
        elif choice.show_code:
            st.code(block.text, language="python")
    if pending is not None:
        live_box(figures[pending], choice)
    rest = [key for key in figures if key not in placed]
    if rest:
        st.header("More live results")
        for key in rest:
            live_box(figures[key], choice)
    return page


def toc(page: site.CoursePage | None) -> None:
    """The page's table of contents, in the sidebar."""
    if page is None:
        return
    with st.sidebar:
        st.header("On this page")
        st.markdown(
            "\n".join(f"{'  ' * (h.level - 2)}- [{h.text}](#{h.anchor})" for h in page.headings())
        )


def section_page(number: int, figures: dict[str, Live]) -> None:
    """A course section: its text, with live results from the library beside the paragraphs
    that discuss them (``figures``: heading anchor -> drawing function, see `course_text`)."""
    path, title = PAGES[number]
    st.set_page_config(page_title=title, layout="wide")
    choice = sidebar()
    pages = _safe_course_pages()
    st.title(pages[number].title if number in pages else title)
    toc(course_text(number, choice, figures))


def _safe_course_pages() -> dict[int, site.CoursePage]:
    try:
        return course_pages()
    except ValueError:
        return {}


# ---- small display helpers ---------------------------------------------------------------


def show_table(table: Table, where=st) -> None:
    """One of the report's tables (``ioi.report.tables``) on the page, or in a column ``where``."""
    where.dataframe(table.to_frame(), hide_index=True)


def top_heads(values: torch.Tensor, k: int) -> list[Head]:
    """The ``k`` heads with the largest |value| of a [layer, head] grid, largest first."""
    return [head for head, _ in T.top_heads(values, k)]


def all_heads(name: str) -> list[Head]:
    cfg = get_model(name).cfg
    return [Head(layer, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]


def show_attention(tokens: list[str], patterns: torch.Tensor, heads) -> None:
    """A circuitsvis attention view (JavaScript inlined: works offline), in an iframe."""
    html = site.attention_html(tokens, patterns, heads)
    if hasattr(st, "iframe"):  # Streamlit >= 1.5x; components.v1.html is deprecated there
        st.iframe(html, height=620)
    else:
        components.html(html, height=620, scrolling=True)
