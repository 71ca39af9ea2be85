"""Section 3: activation patching sweeps, and attribution patching."""

import ioi_site
import pandas as pd
import streamlit as st

from ioi.patching import heatmap
from ioi.report import analysis as A
from ioi.report import figures as F

DENOISING = (
    "Denoising: the model runs on the ABC prompts with one activation from the IOI run "
    "patched in. 0 = ABC-like, 1 = IOI-like."
)


def sweeps(choice: ioi_site.Choice, components: list[str]) -> None:
    for component in components:
        result = ioi_site.get_patching(choice.model, choice.n, choice.seed, component)
        left, right = st.columns([2, 1])
        left.plotly_chart(heatmap(result, "normalized", f"Patching {A.SWEEP_TITLES[component]}"))
        right.dataframe(pd.DataFrame(result.top_k(5))[["site", "normalized"]], hide_index=True)


def chosen_sweeps(choice: ioi_site.Choice, options: list[str], default: list[str], key: str):
    st.caption(DENOISING)
    chosen = st.multiselect(
        "Sweeps", options, default=default, format_func=A.SWEEP_TITLES.get, key=key
    )
    sweeps(choice, chosen)


def residual(choice: ioi_site.Choice) -> None:
    chosen_sweeps(choice, ["resid_pre", "attn_out", "mlp_out"], ["resid_pre"], "sweeps_resid")


def heads(choice: ioi_site.Choice) -> None:
    st.caption(DENOISING)
    sweeps(choice, ["z"])


def inside_heads(choice: ioi_site.Choice) -> None:
    components = ["q", "k", "v", "pattern"]
    chosen_sweeps(choice, components, components, "sweeps_inside")


def attribution(choice: ioi_site.Choice) -> None:
    if st.checkbox("Compare attribution patching with exact patching (all heads)"):
        comparison = ioi_site.get_attribution_vs_exact(choice.model, choice.n, choice.seed)
        st.plotly_chart(F.attribution_scatter(comparison))


ioi_site.section_page(
    3,
    {
        "patching-the-residual-stream": residual,
        "patching-heads": heads,
        "what-inside-a-head-matters-query-key-value-pattern": inside_heads,
        "attribution-patching-a-linear-shortcut": attribution,
    },
)
