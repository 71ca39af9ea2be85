"""The reference file: every block names its source and the corruption behind its figures."""

from __future__ import annotations

import pytest

from ioi.reference import provenance, reference_figures


def test_every_reference_block_names_its_source_and_corruption() -> None:
    blocks = [k for k, v in reference_figures().items() if isinstance(v, dict)]
    assert blocks
    for block in blocks:
        text = provenance(block)
        assert text.startswith("GPT-2 small, ") and "; corruption: " in text


def test_the_eight_prompts_are_not_abc() -> None:
    assert "not the ABC" in provenance("eight_prompts")
    assert "ABC" in provenance("ioi_dataset_n25_seed1_mixed")


def test_unknown_block_lists_the_blocks() -> None:
    with pytest.raises(ValueError, match="blocks: .*eight_prompts"):
        provenance("nope")
