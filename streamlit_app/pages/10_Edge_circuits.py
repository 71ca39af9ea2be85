"""Edge circuits: EAP and EAP-IG against exact edge patching, the faithfulness of the top edges,
and the edge circuit's heads against the node circuit. The report's section, live."""

import ioi_site
import streamlit as st

from ioi.report import edges_section as E


@st.cache_resource(show_spinner="EAP, EAP-IG, exact patching of the top edges, the curves...")
def edges(name: str, n: int, seed: int) -> E.EdgeResults:
    chosen, _ = ioi_site.get_discovery(name, n, seed)
    return E.edge_results(ioi_site.get_setup(name, n, seed), chosen.discovered.heads())


st.set_page_config(page_title="Edge circuits", layout="wide")
choice = ioi_site.sidebar()
st.title("Edge circuits")
st.markdown(
    "An edge joins a component that writes into the residual stream (the embeddings, a head, "
    "an MLP) to one that reads from it later (a head's query, key or value, an MLP, the "
    "logits). Edge attribution patching (EAP) estimates every edge's effect from one gradient; "
    "EAP-IG averages the gradient along the way from the IOI to the ABC prompts; exact edge "
    "patching runs the model once per edge. The same computation as the report's "
    "*Edge circuits* section (`ioi replicate`), on the prompts chosen in the sidebar."
)
results = edges(choice.model, choice.n, choice.seed)
for paragraph in E.edges_text(results):
    st.markdown(paragraph)
ioi_site.show_table(E.agreement_table(results))
curve = E.curve_figure(results)
st.plotly_chart(curve.fig)
st.caption(curve.caption)
left, right = st.columns(2)
ioi_site.show_table(E.overlap_table(results), left)
ioi_site.show_table(E.top_edges_table(results), right)
