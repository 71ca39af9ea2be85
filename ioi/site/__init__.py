"""The site's data layer: what the Streamlit pages in ``streamlit_app/`` compute.

`ioi.site.data`: model options, the course pages, checking and analysing a typed prompt;
`ioi.site.attention`: attention patterns of chosen heads, as an offline circuitsvis view.
The pages themselves only render (``streamlit_app/ioi_site.py`` and ``streamlit_app/pages/``).
"""

from ioi.site.attention import attention_html, dataset_patterns
from ioi.site.data import (
    EXAMPLE_PROMPT,
    MAX_PROMPT_CHARS,
    Block,
    CheckedPrompt,
    CoursePage,
    ModelOption,
    PromptResult,
    analyse_prompt,
    anchor_for,
    check_prompt,
    course_pages,
    model_options,
    split_markdown,
)

__all__ = [
    "EXAMPLE_PROMPT",
    "MAX_PROMPT_CHARS",
    "Block",
    "CheckedPrompt",
    "CoursePage",
    "ModelOption",
    "PromptResult",
    "analyse_prompt",
    "anchor_for",
    "attention_html",
    "check_prompt",
    "course_pages",
    "dataset_patterns",
    "model_options",
    "split_markdown",
]
