"""Section 6: further questions. Live: backup heads, and one circuit or several?"""

import ioi_site
import streamlit as st

from ioi.circuit import backup_name_mover_experiment, compare_groups
from ioi.head import Head
from ioi.report import analysis as A
from ioi.report import figures as F


@st.cache_data(show_spinner="Knocking the heads out...")
def backup(name: str, n: int, seed: int, heads: tuple[Head, ...]):
    return backup_name_mover_experiment(ioi_site.get_ablation(name, n, seed), heads)


@st.cache_resource(show_spinner="Discovering a circuit per template family...")
def families(name: str, n: int, seed: int, threshold: float):
    return compare_groups(
        ioi_site.get_oracle(name, n, seed), threshold, by="family", n_permutations=200, seed=seed
    )


def backup_heads(choice: ioi_site.Choice) -> None:
    st.caption(
        "Mean-ablate chosen heads at `end` and compare every head's direct logit attribution "
        "before and after. Without backup, the logit difference would fall by the knocked-out "
        "heads' own attribution (the naive prediction)."
    )
    to_logits = ioi_site.get_to_logits(choice.model, choice.n, choice.seed)
    default = A.top_output_heads(to_logits, k=2)
    chosen = st.multiselect(
        "Heads to knock out", ioi_site.all_heads(choice.model), default=default, format_func=str
    )
    if chosen:
        knockout(choice, tuple(chosen))


def knockout(choice: ioi_site.Choice, heads: tuple[Head, ...]) -> None:
    result = backup(choice.model, choice.n, choice.seed, heads)
    cols = st.columns(3)
    cols[0].metric("logit diff before", f"{result.logit_diff_before:.3f}")
    cols[1].metric("naive prediction", f"{result.naive_prediction:.3f}")
    cols[2].metric("after", f"{result.logit_diff_after:.3f}")
    st.plotly_chart(
        F.layer_head_facets(
            {"before": result.dla_before, "after": result.dla_after, "change": result.change},
            "Direct logit attribution per head, before and after the knockout",
        )
    )


def one_or_several(choice: ioi_site.Choice) -> None:
    chosen, _ = ioi_site.get_discovery(choice.model, choice.n, choice.seed)
    st.caption(
        f"A circuit discovered on the BABA prompts and one on the ABBA prompts (threshold "
        f"{chosen.threshold:g}, the one chosen on all prompts), their overlap, and a "
        "permutation test on per-prompt head importance."
    )
    try:
        result = families(choice.model, choice.n, choice.seed, chosen.threshold)
    except ValueError as err:  # e.g. too few prompts of one family
        st.warning(str(err))
        return
    cols = st.columns(2)
    cols[0].metric("Jaccard overlap BABA / ABBA", f"{float(result.jaccard[0, 1]):.2f}")
    cols[1].metric("permutation test p-value", f"{result.test.p_value:.3f}")
    st.dataframe(
        [
            {"family": g, "heads": " ".join(map(str, sorted(c.heads())))}
            for g, c in zip(result.groups, result.circuits, strict=True)
        ],
        hide_index=True,
    )
    st.plotly_chart(
        F.layer_head_facets(
            dict(zip(result.groups, result.test.group_means, strict=True)),
            "Mean head importance per family",
        )
    )


ioi_site.section_page(
    6, {"backup-name-movers": backup_heads, "one-circuit-or-several": one_or_several}
)
