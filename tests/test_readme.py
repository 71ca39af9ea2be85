"""Every Python block of the README runs as written, in a fresh interpreter (as a reader would
paste it), so the README cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"), re.S | re.M)


def test_the_readme_has_python_blocks():
    assert BLOCKS, "the README shows no Python; this test would check nothing"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"README block {index} failed:\n{done.stderr[-3000:]}"
    assert "Warning" not in done.stderr, done.stderr


def _readme_numbers(pattern: str) -> list[float]:
    """The numbers the README types in the one place ``pattern`` matches."""
    (match,) = re.findall(pattern, README.read_text(encoding="utf-8"), re.M)
    return [float(n) for n in (match if isinstance(match, tuple) else (match,))]


def _hundredths(values) -> list[float]:
    """Measured values as the README types them, to two decimals."""
    import torch

    return [round(v, 2) for v in torch.stack(list(values)).flatten().tolist()]


@pytest.mark.slow
def test_readme_toy_model_tables_are_what_the_library_measures():
    """'The bundled IOI model': the fresh-prompt table (N=500, seed 12345) and 'What its heads
    do' (200 mixed prompts, seed 12345), re-measured at the precision the README types."""
    import torch

    from ioi import heads
    from ioi.dataset import IOIDataset
    from ioi.metrics import logits_to_ave_logit_diff
    from ioi.models import load_model

    model = load_model("toy", device="cpu")
    with torch.no_grad():
        (abc_typed,) = _readme_numbers(r"^\| ABC \(names replaced.*\| — \| ([\d.]+) \| — \|$")
        for family in ("BABA", "ABBA"):
            ds = IOIDataset(N=500, prompt_type=family, seed=12345, tokenizer=model)
            end = ds.word_idx["end"]
            logits = model(ds.toks)
            diff = logits_to_ave_logit_diff(
                logits, ds.answer_tokens, per_prompt=True, positions=end
            )
            p_io = (
                logits[torch.arange(len(end)), end].softmax(-1).gather(1, ds.answer_tokens[:, :1])
            )
            abc = model(ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ").toks)
            accuracy, mean, prob = _readme_numbers(
                rf"^\| {family} \| ([\d.]+)% \| ([\d.]+) \| ([\d.]+) \|$"
            )
            assert round(float((diff > 0).float().mean()) * 100, 1) == accuracy
            assert round(float(diff.mean()), 2) == mean
            assert round(float(p_io.mean()), 4) == prob
            abc_ld = logits_to_ave_logit_diff(abc, ds.answer_tokens, positions=end)
            assert round(float(abc_ld), 2) == abc_typed

        ds = IOIDataset(N=200, prompt_type="mixed", seed=12345, tokenizer=model)
        _, cache = model.run_with_cache(ds.toks)
    attention = {
        pair: heads.ioi_attention(model, ds, *pair, cache)
        for pair in (("S2", "IO"), ("S2", "S1"), ("S1+1", "S1"), ("end", "S2"))
    }
    dla = heads.per_head_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"])
    layers, labels = heads.per_layer_logit_diffs(model, cache, ds.answer_tokens, ds.word_idx["end"])
    by_label = dict(zip(labels, layers.tolist(), strict=True))
    attn_1, attn_2, mlp_below = _readme_numbers(
        r"\(([\d.]+) and\s+([\d.]+) of the logit difference; each MLP < ([\d.]+)\)"
    )
    assert [round(by_label[f"{layer}_attn_out"], 2) for layer in (1, 2)] == [attn_1, attn_2]
    assert all(abs(v) < mlp_below for k, v in by_label.items() if k.endswith("mlp_out"))
    io_1, io_3, s1_most = _readme_numbers(r"S2 → IO ([\d.]+) / ([\d.]+), S2 → S1 ≤ ([\d.]+)")
    assert _hundredths(attention["S2", "IO"][0, [1, 3]]) == [io_1, io_3]
    assert float(attention["S2", "S1"][0].max()) <= s1_most
    assert _hundredths(attention["S1+1", "S1"][0, [0, 2]]) == _readme_numbers(
        r"S1\+1 → S1 ([\d.]+) / ([\d.]+)"
    )
    for layer, name in ((1, "all of layer 1"), (2, "all of layer 2")):
        low, high, *typed = _readme_numbers(
            rf"^\| {name} \|.*end → S2 ([\d.]+)–([\d.]+); direct logit attribution "
            r"([\d.]+), ([\d.]+), ([\d.]+), ([\d.]+) \|$"
        )
        row = attention["end", "S2"][layer]
        assert _hundredths(row.aminmax()) == [low, high]
        assert _hundredths(dla[layer]) == typed
