"""Section 5: head classes (copying, attention detectors, the name-mover scatter), the circuit
found by the code, and the paper's three criteria."""

import ioi_site
import pandas as pd
import streamlit as st

from ioi.head import Head
from ioi.heads import name_mover_scatter
from ioi.models import GPT2_ALIASES
from ioi.report import analysis as A
from ioi.report import figures as F


@st.cache_data(show_spinner="Attention and output of the head on every prompt...")
def scatter(name: str, n: int, seed: int, head: Head):
    setup = ioi_site.get_setup(name, n, seed)
    return name_mover_scatter(ioi_site.get_model(name), setup.ds, head.layer, head.head)


def copying(choice: ioi_site.Choice) -> None:
    att = ioi_site.get_attribution(choice.model, choice.n, choice.seed)
    if att.copying is None:
        st.info("Copying scores need the model's name tokens; this model has none to score.")
        return
    st.plotly_chart(
        F.layer_head_facets(
            {"copying": att.copying, "negative copying": att.negative_copying},
            "Copying scores: fraction of names each OV circuit copies into the top 5",
            zmid=None,
        )
    )


def detectors(choice: ioi_site.Choice) -> None:
    att = ioi_site.get_attribution(choice.model, choice.n, choice.seed)
    st.plotly_chart(
        F.layer_head_facets(att.detectors, "Head detectors on repeated random tokens", zmid=None)
    )


def mover_scatter(choice: ioi_site.Choice) -> None:
    to_logits = ioi_site.get_to_logits(choice.model, choice.n, choice.seed)
    default = A.top_output_heads(to_logits, k=1)[0]
    heads = ioi_site.all_heads(choice.model)
    head = st.selectbox("Head", heads, index=heads.index(default), format_func=str)
    st.plotly_chart(F.name_mover_scatter_figure(scatter(choice.model, choice.n, choice.seed, head)))


def _usable(choice: ioi_site.Choice):
    chosen, points = ioi_site.get_discovery(choice.model, choice.n, choice.seed)
    usable = sorted(p.threshold for p in points if p.discovered.circuit is not None)
    return chosen, points, usable


def circuit_under_test(choice: ioi_site.Choice) -> None:
    chosen, points, usable = _usable(choice)
    if not usable:
        st.warning("No head passed any threshold on these prompts: there is no circuit to test.")
        return
    threshold = st.select_slider(
        "Threshold of the discovered circuit",
        usable,
        value=chosen.threshold if chosen.discovered.circuit else usable[0],
        key="circuit_threshold",
    )
    circuits = [("discovered circuit", False)]
    if choice.model in GPT2_ALIASES:
        circuits.append(("published circuit", True))
    for label, paper in circuits:
        result = ioi_site.get_criteria(choice.model, choice.n, choice.seed, threshold, paper)
        faith = result.faithfulness
        st.markdown(
            f"**{label}**: F(M) = {faith.f_model:.3f}, F(C) = {faith.f_circuit:.3f}, "
            f"{faith.ratio:.1%} of the logit difference kept."
        )
        cols = st.columns(3)
        cols[0].plotly_chart(
            F.faithfulness_figure(
                [("F(M)", faith.f_model), ("F(C)", faith.f_circuit)], f"Faithfulness ({label})"
            )
        )
        cols[1].plotly_chart(F.completeness_figure(result.completeness))
        cols[2].plotly_chart(F.minimality_figure(result.minimality))


def circuit_drawn(choice: ioi_site.Choice) -> None:
    chosen, points, usable = _usable(choice)
    st.plotly_chart(F.threshold_figure(points, chosen))
    if not usable:
        st.warning("No head passed any threshold on these prompts: there is no circuit.")
        return
    threshold = st.session_state.get("circuit_threshold", chosen.threshold)
    point = next((p for p in points if p.threshold == threshold), chosen)
    found = point.discovered
    if found.circuit is None:
        st.warning(f"No circuit at threshold {point.threshold:g}.")
        return
    st.plotly_chart(F.circuit_graph(found, ioi_site.get_model(choice.model).cfg.n_layers))
    st.caption(
        f"Threshold {point.threshold:g} (the slider above). An edge from a head into q, k or v "
        "goes to the group of heads whose inputs were path-patched together when it was found."
    )
    left, right = st.columns(2)
    left.dataframe(
        pd.DataFrame(
            [
                {"class": c, "kept at": found.circuit.positions[c], "heads": " ".join(map(str, hs))}
                for c, hs in found.circuit.heads.items()
            ]
        ),
        hide_index=True,
    )
    right.dataframe(
        pd.DataFrame(
            [
                {
                    "head": str(f.head),
                    "class": f.cls,
                    "via": f.role,
                    "effect": f.effect,
                    "attends to": f.attends_to,
                }
                for f in found.findings
            ]
        ),
        hide_index=True,
    )


ioi_site.section_page(
    5,
    {
        "copying-scores": copying,
        "attention-detectors": detectors,
        "the-name-mover-scatter": mover_scatter,
        "the-circuit-under-test": circuit_under_test,
        "the-circuit-drawn": circuit_drawn,
    },
)
