"""Section 4: path patching, to the logits and into chosen heads."""

import ioi_site
import streamlit as st

from ioi.report import analysis as A
from ioi.report import figures as F
from ioi.report import tables as T


def to_logits(choice: ioi_site.Choice) -> None:
    st.caption(
        "One head takes its ABC output while every other head stays as on the IOI prompts; "
        "the effect is read along the direct path to the logits. -1: the path carries the "
        "whole IOI - ABC difference; 0: no effect."
    )
    grid = ioi_site.get_to_logits(choice.model, choice.n, choice.seed)
    left, right = st.columns([2, 1])
    left.plotly_chart(F.layer_head_heatmap(grid, "Path patching: each head -> logits", "effect"))
    ioi_site.show_table(T.heads_table(grid, "effect", "Largest direct paths"), right)


def to_receivers(choice: ioi_site.Choice) -> None:
    st.caption(
        "Each earlier head takes its ABC output along the paths into the chosen heads' "
        "queries, keys or values only. Only heads below the highest receiver's layer can "
        "reach a receiver, so the grid stops there."
    )
    candidates = [h for h in ioi_site.all_heads(choice.model) if h[0] > 0]
    default = A.top_output_heads(ioi_site.get_to_logits(choice.model, choice.n, choice.seed), k=3)
    chosen = st.multiselect("Receiver heads", candidates, default=default, format_func=str)
    inp = st.radio("Into their", ["q", "k", "v"], horizontal=True)
    if chosen:
        receivers = tuple(sorted(chosen))
        grid = ioi_site.get_to_receivers(choice.model, choice.n, choice.seed, receivers, inp)
        st.plotly_chart(
            F.layer_head_heatmap(
                grid, f"Earlier heads -> {', '.join(map(str, receivers))} ({inp})", "effect"
            )
        )


ioi_site.section_page(4, {"sender-logits": to_logits, "sender-receivers": to_receivers})
