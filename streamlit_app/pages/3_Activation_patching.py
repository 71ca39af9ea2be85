"""Section 3: activation patching sweeps, and attribution patching."""

import ioi_site
import pandas as pd
import streamlit as st

from ioi.patching import heatmap
from ioi.report import analysis as A
from ioi.report import figures as F


def live(choice: ioi_site.Choice) -> None:
    st.markdown(
        "Denoising: the model runs on the ABC prompts with one activation from the IOI run "
        "patched in. 0 = ABC-like, 1 = IOI-like."
    )
    sweeps = st.multiselect(
        "Sweeps",
        list(A.SWEEP_TITLES),
        default=["resid_pre", "z"],
        format_func=A.SWEEP_TITLES.get,
    )
    progress = st.progress(0.0, text="patching")
    for i, component in enumerate(sweeps):
        progress.progress(i / len(sweeps), text=f"patching {A.SWEEP_TITLES[component]}")
        result = ioi_site.get_patching(choice.model, choice.n, choice.seed, component)
        left, right = st.columns([2, 1])
        title = f"Patching {A.SWEEP_TITLES[component]}"
        left.plotly_chart(heatmap(result, "normalized", title))
        right.dataframe(pd.DataFrame(result.top_k(5))[["site", "normalized"]], hide_index=True)
    progress.progress(1.0, text="done")
    if st.checkbox("Compare attribution patching with exact patching (all heads)"):
        comparison = ioi_site.get_attribution_vs_exact(choice.model, choice.n, choice.seed)
        st.plotly_chart(F.attribution_scatter(comparison))


ioi_site.section_page(3, live)
