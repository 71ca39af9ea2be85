"""Every decimal number typed into the course's prose is a published figure that the reference
file records (checked here at the precision the prose gives it), a head label, or listed below
with the reason it needs no measurement (a definition, a threshold) or the test that checks it.

A new number in the text fails `test_every_number_in_the_prose_is_accounted_for` until it is
added to one of the tables, so nothing the text states goes unchecked by accident.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ioi.reference import reference_figures

COURSE = Path(__file__).resolve().parents[2] / "course"
NUMBER = re.compile(r"(?<![\w.])\d+\.\d+%?(?![\w.])")

# (section file, number as the prose types it, where the reference file records it, scale)
PUBLISHED = [
    ("01_model_and_task.py", "3.56", ("paper", "mean_logit_diff_ioi_distribution"), 1),
    ("01_model_and_task.py", "99.3%", ("paper", "io_over_s_fraction"), 100),
    ("01_model_and_task.py", "0.49", ("paper", "mean_io_probability"), 1),
    (
        "02_logit_attribution.py",
        "4.6",
        ("eight_prompts", "per_layer_direct_logit_attribution", "attn9"),
        1,
    ),
    ("05_paper_replication.py", "1.0", ("paper", "copy_scores_top5", "9.9"), 1),
    ("05_paper_replication.py", "0.945", ("paper", "copy_scores_top5", "10.0"), 1),
    ("05_paper_replication.py", "0.945", ("paper", "copy_scores_top5", "9.6"), 1),
    ("05_paper_replication.py", "1.0", ("paper", "copy_scores_top5", "negative_10.7"), 1),
    ("05_paper_replication.py", "0.1", ("paper", "copy_scores_top5", "average_head"), 1),
    (
        "06_further.py",
        "1.71",
        (
            "ioi_dataset_n25_seed1_mixed",
            "ablate_9.9_at_end_with_abc_mean",
            "direct_logit_attribution_9.9",
        ),
        1,
    ),
    (
        "06_further.py",
        "1.10",
        ("ioi_dataset_n25_seed1_mixed", "ablate_9.9_at_end_with_abc_mean", "naive_prediction"),
        1,
    ),
    (
        "06_further.py",
        "2.81",
        ("ioi_dataset_n25_seed1_mixed", "ablate_9.9_at_end_with_abc_mean", "before"),
        1,
    ),
    (
        "06_further.py",
        "2.63",
        ("ioi_dataset_n25_seed1_mixed", "ablate_9.9_at_end_with_abc_mean", "after"),
        1,
    ),
    ("06_further.py", "0.87", ("later_work", "acdc_ioi_edge_auc_kl_resample"), 1),
]

# (section file, number) -> why it needs no reference entry
ACCOUNTED = {
    ("01_model_and_task.py", "1.0"): "definition: io_over_s / io_top1 are 1.0 or 0.0",
    ("01_model_and_task.py", "0.0"): "definition: io_over_s is 1.0 or 0.0",
    (
        "02_logit_attribution.py",
        "0.9",
    ): "toy claim, tests/course/test_claims.py::test_02_late_heads_attend_from_end_to_s2",
    ("03_activation_patching.py", "0.7"): "an example value of the normalised metric",
    (
        "03_activation_patching.py",
        "0.1",
    ): "the threshold above which the cell prints a position (a choice, not a claim)",
    ("07_feature_circuits.py", "0.05"): "the usual significance level, a definition",
}


def _prose(name: str) -> str:
    """The markdown cells of one course section, comment marks removed, lines joined."""
    lines, markdown = [], False
    for line in (COURSE / name).read_text().splitlines():
        if line.startswith("# %%"):
            markdown = "[markdown]" in line
        elif markdown:
            lines.append(line.removeprefix("#").strip())
    return " ".join(lines)


def _heads() -> set[str]:
    """Every GPT-2 small head label the reference file names (keys and circuit members)."""
    found: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                found.update(re.findall(r"\d+\.\d+", str(key)))
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)
        elif isinstance(value, str) and re.fullmatch(r"\d+\.\d+", value):
            found.add(value)

    walk(reference_figures())
    return found


def _lookup(path: tuple[str, ...]) -> float:
    value: object = reference_figures()
    for key in path:
        value = value[key]  # type: ignore[index]
    return float(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "typed", "path", "scale"), PUBLISHED, ids=lambda v: str(v))
def test_a_published_figure_in_the_prose_is_the_reference_files(name, typed, path, scale):
    assert NUMBER.search(typed) and typed in NUMBER.findall(_prose(name)), (name, typed)
    digits = typed.rstrip("%")
    decimals = len(digits.split(".")[1])
    assert f"{_lookup(path) * scale:.{decimals}f}" == digits, (name, typed, path, _lookup(path))


def test_every_number_in_the_prose_is_accounted_for():
    heads, published = _heads(), {(n, t) for n, t, *_ in PUBLISHED}
    loose = [
        (path.name, number)
        for path in sorted(COURSE.glob("[0-9][0-9]_*.py"))
        for number in NUMBER.findall(_prose(path.name))
        if (path.name, number) not in published | set(ACCOUNTED) and number not in heads
    ]
    assert not loose, f"numbers in the prose that nothing computes or checks: {loose}"


def test_the_papers_circuit_has_26_heads_in_7_classes():
    """Section 1: 'a circuit of 26 attention heads in 7 classes' (the reference file's circuit)."""
    circuit = reference_figures()["paper"]["circuit"]
    assert "a circuit of 26 attention heads in 7 classes" in _prose("01_model_and_task.py")
    assert len(circuit) == 7
    assert len({head for members in circuit.values() for head in members}) == 26
