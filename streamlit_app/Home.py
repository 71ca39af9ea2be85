"""The IOI site: a walkthrough of the course with live results from the ``ioi`` library.

Run with ``streamlit run streamlit_app/Home.py``.
"""

import ioi_site
import streamlit as st

from ioi import site
from ioi.report import figures as F
from ioi.report import tables as T

st.set_page_config(page_title="IOI: the circuit, taught and reproduced", layout="wide")
choice = ioi_site.sidebar()

st.title("Indirect Object Identification")
st.markdown(
    "*When Mary and John went to the store, John gave a drink to ...* **Mary**. "
    "Wang et al. (2022) found the circuit of attention heads GPT-2 small uses to finish such "
    "sentences. This site walks through the course that rebuilds their analysis, section by "
    "section: the text of each section is the course's own, and beside it are results "
    "computed live by the `ioi` library on the model you pick in the sidebar."
)

st.header("Contents")
pages = ioi_site._safe_course_pages()
for number, (path, fallback) in ioi_site.PAGES.items():
    page = pages.get(number)
    st.page_link(path, label=page.title if page else fallback)
    if page is None:
        st.caption("The course text of this section is not written yet; live results only.")
    else:
        st.caption(" · ".join(h.text for h in page.headings(max_level=2)))
st.page_link(ioi_site.PROMPT_PAGE, label="Try your own prompt")
st.page_link(ioi_site.FEATURE_PAGE, label="Feature browser")
st.page_link(ioi_site.EDGE_PAGE, label="Edge circuits")

st.header("Models")
st.dataframe(
    [
        {"model": o.name, "what": o.label, "on this machine": "yes" if o.available else "no"}
        for o in site.model_options()
    ],
    hide_index=True,
)

st.header(f"How well does {choice.model} do IOI?")
setup = ioi_site.get_setup(choice.model, choice.n, choice.seed)
perf = setup.performance
left, middle, right = st.columns(3)
left.metric("mean logit diff (IO - S)", f"{perf['overall']['logit_diff']:.2f}")
middle.metric("ABC baseline", f"{perf['abc_logit_diff']:.2f}")
right.metric("IO beats S", f"{perf['overall']['io_over_s']:.1%}")
ioi_site.show_table(T.score_table(perf))
st.plotly_chart(
    F.histogram_figure(
        ioi_site.get_per_prompt(choice.model, choice.n, choice.seed).tolist(),
        "Logit difference per IOI prompt",
        "logit diff (IO - S)",
    )
)
