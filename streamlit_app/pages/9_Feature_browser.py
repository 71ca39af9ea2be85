"""Pick an SAE and one of its features: where it fires on a prompt, its top prompts, what it
writes to the logits."""

import ioi_site
import streamlit as st

from ioi.dataset import IOIDataset
from ioi.features.activations import ABC_FLIP
from ioi.report import figures as F
from ioi.report.features_section import report_saes
from ioi.site.features import feature_view, logit_effects_table, top_prompts_table

st.set_page_config(page_title="Feature browser", layout="wide")
choice = ioi_site.sidebar()
st.title("Feature browser")
st.markdown(
    "Sparse autoencoders (SAEs) split an activation into features, directions that fire on "
    "few tokens. Pick an SAE and a feature to see where it fires on one IOI prompt, the prompts "
    "and tokens where it fires most, and the names its decoder direction promotes and "
    "suppresses through the unembedding `W_U`."
)
model = ioi_site.get_model(choice.model)
saes, reason = report_saes(model, choice.model)
if saes is None:
    st.info(f"No SAEs for this model: {reason}.")
    st.stop()
ds = IOIDataset(choice.n, "mixed", seed=choice.seed, tokenizer=model)
left, mid, right = st.columns(3)
hook = left.selectbox("SAE (hook point)", list(saes))
d_sae = saes[hook].cfg.d_sae
feature = int(
    mid.number_input(f"Feature (0..{d_sae - 1})", 0, d_sae - 1, value=0, key="fb_feature")
)
prompt = int(
    right.number_input(f"Prompt (0..{len(ds) - 1})", 0, len(ds) - 1, value=0, key="fb_prompt")
)
abc = ds.gen_flipped_prompts(ABC_FLIP)  # the contrast the role is read from
view = feature_view(model, saes, hook, feature, ds, prompt, abc=abc)
st.caption(f"IOI role: **{view.report.role}** · " + ds.sentences[prompt])
evidence = view.report.role_evidence
st.caption(
    "Role evidence (Cohen's d of each contrast; name share: the names' share of the mass): "
    + ", ".join(f"{contrast} {value:.2f}" for contrast, value in evidence.items())
)
labels = [f"{i}:{t}" for i, t in enumerate(view.tokens)]
st.plotly_chart(
    F.bar_figure(labels, view.activations.tolist(), f"{hook} f{feature} on prompt {prompt}",
                 "activation")
)  # fmt: skip
cols = st.columns(2)
ioi_site.show_table(top_prompts_table(view, ds, model), cols[0])
ioi_site.show_table(logit_effects_table(view), cols[1])
