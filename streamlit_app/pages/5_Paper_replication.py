"""Section 5: head classes (copying, attention detectors), the circuit found by the code, and
the paper's three criteria."""

import ioi_site
import pandas as pd
import streamlit as st

from ioi.models import GPT2_ALIASES
from ioi.report import figures as F


def live(choice: ioi_site.Choice) -> None:
    att = ioi_site.get_attribution(choice.model, choice.n, choice.seed)
    st.subheader("Head classes")
    st.plotly_chart(
        F.layer_head_facets(att.detectors, "Head detectors on repeated random tokens", zmid=None)
    )
    if att.copying is not None:
        st.plotly_chart(
            F.layer_head_facets(
                {"copying": att.copying, "negative copying": att.negative_copying},
                "Copying scores: fraction of names each OV circuit copies into the top 5",
                zmid=None,
            )
        )
    st.subheader("The circuit found by recursive path patching")
    chosen, points = ioi_site.get_discovery(choice.model, choice.n, choice.seed)
    st.plotly_chart(F.threshold_figure(points, chosen))
    usable = [p.threshold for p in points if p.discovered.circuit is not None]
    if not usable:
        st.warning("No head passed any threshold on these prompts: there is no circuit.")
        return
    threshold = st.select_slider(
        "Threshold",
        sorted(usable),
        value=chosen.threshold if chosen.discovered.circuit else usable[0],
    )
    point = next(p for p in points if p.threshold == threshold)
    found = point.discovered
    model = ioi_site.get_model(choice.model)
    st.plotly_chart(F.circuit_graph(found, model.cfg.n_layers))
    st.caption(
        "An edge from a head into q, k or v goes to the group of heads whose inputs were "
        "path-patched together when the head was found."
    )
    left, right = st.columns(2)
    left.dataframe(
        pd.DataFrame(
            [
                {
                    "class": c,
                    "kept at": found.circuit.positions[c],
                    "heads": " ".join(map(str, hs)),
                }
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

    st.subheader("Faithfulness, completeness, minimality")
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


ioi_site.section_page(5, live)
