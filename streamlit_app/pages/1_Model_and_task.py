"""Section 1: the model, the task and the logit difference."""

import ioi_site
import pandas as pd
import streamlit as st

from ioi.models import GPT2_ALIASES
from ioi.reference import reference_figures
from ioi.report import figures as F
from ioi.report import tables as T


def logit_difference(choice: ioi_site.Choice) -> None:
    perf = ioi_site.get_setup(choice.model, choice.n, choice.seed).performance
    left, middle, right = st.columns(3)
    left.metric("IOI prompts", f"{perf['overall']['logit_diff']:.3f}")
    middle.metric("ABC prompts", f"{perf['abc_logit_diff']:.3f}")
    right.metric("IO beats S", f"{perf['overall']['io_over_s']:.1%}")
    ioi_site.show_table(T.score_table(perf))
    st.plotly_chart(
        F.histogram_figure(
            ioi_site.get_per_prompt(choice.model, choice.n, choice.seed).tolist(),
            "Logit difference per IOI prompt",
            "logit diff (IO - S)",
        )
    )


def dataset(choice: ioi_site.Choice) -> None:
    setup = ioi_site.get_setup(choice.model, choice.n, choice.seed)
    perf, ds, abc = setup.performance, setup.ds, setup.abc
    st.markdown("**Per template**")
    st.dataframe(pd.DataFrame(perf["per_template"]).drop(columns=["template_idx"]), hide_index=True)
    st.markdown("**The prompts**")
    st.dataframe(
        pd.DataFrame(
            {"IOI": ds.sentences, "ABC": abc.sentences, "IO": [p.answer for p in ds.prompts]}
        ),
        hide_index=True,
    )


def beside_the_paper(choice: ioi_site.Choice) -> None:
    if choice.model not in GPT2_ALIASES:
        st.markdown(
            f"The published figures are GPT-2 small's; **{choice.model}** is another model, so "
            "they are not set beside its numbers. Pick GPT-2 small in the sidebar (when its "
            "weights are on this machine) to see both."
        )
        return
    perf = ioi_site.get_setup(choice.model, choice.n, choice.seed).performance
    paper = reference_figures()["paper"]
    st.dataframe(
        pd.DataFrame(
            [
                (
                    "mean logit diff",
                    perf["overall"]["logit_diff"],
                    paper["mean_logit_diff_ioi_distribution"],
                ),
                ("IO > S", perf["overall"]["io_over_s"], paper["io_over_s_fraction"]),
                ("P(IO)", perf["overall"]["io_prob"], paper["mean_io_probability"]),
            ],
            columns=["figure", "ours", f"published ({paper['source']})"],
        ),
        hide_index=True,
    )


ioi_site.section_page(
    1,
    {
        "the-logit-difference": logit_difference,
        "the-ioi-dataset": dataset,
        "how-does-this-compare-with-gpt-2-small": beside_the_paper,
    },
)
