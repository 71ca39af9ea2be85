"""Type an IOI sentence; see the logit difference and the heads that write it."""

import ioi_site
import pandas as pd
import streamlit as st

from ioi import site
from ioi.report import figures as F
from ioi.report import tables as T

st.set_page_config(page_title="Try your own prompt", layout="wide")
choice = ioi_site.sidebar()
st.title("Try your own prompt")
st.markdown(
    "Write a sentence that names two people, one of them twice, and stop right before the "
    "answer. The site checks it, runs the model on it, and shows whether the model prefers "
    "the name mentioned once (the IO) over the repeated one (S). Nothing you type is executed; "
    "it is only tokenised."
)
text = st.text_input("Prompt", value=site.EXAMPLE_PROMPT, max_chars=site.MAX_PROMPT_CHARS)
model = ioi_site.get_model(choice.model)
try:
    prompt = site.check_prompt(text, model)
except ValueError as err:
    st.error(str(err))
    st.stop()

result = site.analyse_prompt(model, prompt)
cols = st.columns(4)
cols[0].metric("logit diff (IO - S)", f"{result.logit_diff:.2f}")
cols[1].metric(f"P({prompt.io})", f"{result.io_prob:.3f}")
cols[2].metric(f"P({prompt.s})", f"{result.s_prob:.3f}")
cols[3].metric("IO", prompt.io, help=f"S = {prompt.s}")
if result.logit_diff > 0:
    st.success(f"The model prefers {prompt.io}, the name mentioned once.")
else:
    st.warning(f"The model prefers {prompt.s}, the repeated name: it gets this one wrong.")
left, right = st.columns([2, 1])
left.plotly_chart(
    F.layer_head_heatmap(result.per_head, "Direct logit attribution per head", "logit diff")
)
ioi_site.show_table(T.heads_table(result.per_head, "DLA", "Largest direct effects"), right)
right.dataframe(
    pd.DataFrame(result.top_tokens, columns=["next token", "probability"]), hide_index=True
)
st.subheader("Attention of the top heads")
ioi_site.show_attention(list(prompt.token_strs), result.patterns, result.top_heads)
