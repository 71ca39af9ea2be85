"""Section 7: feature circuits. Live: the shipped SAEs' quality, and feature attribution."""

import ioi_site
import plotly.express as px
import streamlit as st
import torch

from ioi.features import evaluate_saes, feature_attribution, load_toy_saes

TOY = "toy"


@st.cache_resource(show_spinner="Loading the toy model's SAEs...")
def toy_saes():
    return load_toy_saes(device="auto")


@st.cache_data(show_spinner="Measuring the SAEs...")
def quality(name: str, n: int, seed: int):
    setup = ioi_site.get_setup(name, n, seed)
    return evaluate_saes(setup.model, toy_saes(), setup.ds)


@st.cache_data(show_spinner="Attribution patching over the features...")
def attribution(name: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    setup = ioi_site.get_setup(name, n, seed)
    with torch.enable_grad():
        result = feature_attribution(
            setup.model, toy_saes(), setup.ds.toks, setup.abc.toks, setup.metric
        )
    return {hook: table.cpu() for hook, table in result.scores.items()}


def _toy_only(choice: ioi_site.Choice) -> bool:
    if choice.model != TOY:
        st.info(
            "The shipped SAEs read the bundled toy model; choose it in the sidebar. For GPT-2 "
            "small, `ioi.features.load_pretrained_saes('gpt2-small-res-jb')` loads published ones."
        )
        return False
    return True


def sae_quality(choice: ioi_site.Choice) -> None:
    if not _toy_only(choice):
        return
    st.caption(
        "Each shipped SAE on the chosen prompts: sparsity (L0), variance explained, dead "
        "features, and the logit difference with the reconstruction spliced in."
    )
    results = quality(choice.model, choice.n, choice.seed)
    st.dataframe(
        [
            {
                "hook": r.hook_name,
                "L0": round(r.l0, 2),
                "variance explained": round(r.variance_explained, 3),
                "dead features": r.dead_features,
                "logit diff clean": round(r.logit_diff_clean, 3),
                "logit diff spliced": round(r.logit_diff_sae, 3),
            }
            for r in results
        ],
        hide_index=True,
    )


def node_attribution(choice: ioi_site.Choice) -> None:
    if not _toy_only(choice):
        return
    st.caption(
        "Attribution patching over every feature and error node of both SAEs (IOI prompts "
        "patched towards their ABC version, normalised IOI metric)."
    )
    scores = attribution(choice.model, choice.n, choice.seed)
    for hook, table in scores.items():
        flat = table.flatten()
        top = flat.abs().argsort(descending=True)[:15].tolist()
        width = table.shape[1]
        labels = [
            f"pos {i // width} " + ("error" if i % width == width - 1 else f"f{i % width}")
            for i in top
        ]
        st.plotly_chart(
            px.bar(
                x=labels,
                y=flat[top].numpy(),
                labels={"x": "node", "y": "IE (attribution patching)"},
                title=f"Top nodes at {hook}",
            )
        )


ioi_site.section_page(
    7,
    {
        "the-sae-forward-pass": sae_quality,
        "feature-attribution-error-node-included": node_attribution,
    },
)
