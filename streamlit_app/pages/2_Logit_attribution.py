"""Section 2: direct logit attribution, and what the top heads attend to."""

import ioi_site
import streamlit as st

from ioi import site
from ioi.report import figures as F
from ioi.report import tables as T


def layer_by_layer(choice: ioi_site.Choice) -> None:
    att = ioi_site.get_attribution(choice.model, choice.n, choice.seed)
    st.plotly_chart(
        F.line_figure(
            att.accumulated_labels,
            att.accumulated.tolist(),
            "Logit difference read from the residual stream after each sub-layer",
            "logit diff",
        )
    )
    st.plotly_chart(
        F.bar_figure(
            att.per_layer_labels,
            att.per_layer.tolist(),
            "Direct logit attribution per layer output",
            "logit diff",
        )
    )


def head_by_head(choice: ioi_site.Choice) -> None:
    att = ioi_site.get_attribution(choice.model, choice.n, choice.seed)
    left, right = st.columns([2, 1])
    left.plotly_chart(
        F.layer_head_heatmap(att.per_head, "Direct logit attribution per head", "logit diff")
    )
    ioi_site.show_table(T.heads_table(att.per_head, "DLA", "Largest direct effects"), right)


def attention(choice: ioi_site.Choice) -> None:
    att = ioi_site.get_attribution(choice.model, choice.n, choice.seed)
    st.plotly_chart(
        F.layer_head_facets(
            att.attention, "Mean attention between IOI positions (dest->src)", zmid=None
        )
    )
    st.markdown("**Attention patterns of chosen heads**")
    ds = ioi_site.get_setup(choice.model, choice.n, choice.seed).ds
    index = st.selectbox(
        "Prompt", range(min(ds.N, 20)), format_func=lambda i: ds.sentences[i], key="att_prompt"
    )
    top = ioi_site.top_heads(att.per_head, k=3)
    chosen = st.multiselect("Heads", ioi_site.all_heads(choice.model), default=top, format_func=str)
    if chosen:
        toks = ds.toks[index, : int(ds.seq_lens[index])]
        patterns = site.dataset_patterns(ioi_site.get_model(choice.model), toks, chosen)
        tokens = [ds.tokenizer.decode([t]) for t in toks.tolist()]
        ioi_site.show_attention(tokens, patterns, chosen)


ioi_site.section_page(
    2,
    {
        "layer-by-layer": layer_by_layer,
        "head-by-head": head_by_head,
        "what-do-the-top-heads-attend-to": attention,
    },
)
