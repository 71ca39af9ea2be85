"""The GPT-2 small path, end to end and offline, on a randomly initialised GPT-2-architecture model.

No machine here has GPT-2 small's weights, so the tests build a GPT-2 of its layout (12 layers of
12 heads, vocabulary 50257) but narrow, holding the bundled toy's circuit in its first three
layers (`ioi.testing.toy_in_gpt2_layout_dir`; a random one would do for loading, but on random
weights the IOI-ABC gap is about 0, every normalised effect is huge and circuit discovery
patches almost every path), and place it

- in a temporary Hugging Face cache laid out as the hub lays out ``gpt2``
  (`ioi.testing.hub_cache_with_gpt2`): ``ioi replicate`` with no ``--model`` must pick it as GPT-2
  small, say so and where it is, and write the whole report with the comparison with the paper;
- in a plain directory: loaded from there it gets the same comparison basis, with the sentence
  that it holds only if the weights are GPT-2 small's (the basis the report's reference
  section prints).

The network is cut for every test here (`socket.create_connection` raises), so nothing can
quietly download the real weights.
"""

from __future__ import annotations

import json
import socket

import pytest
import torch

from ioi.cli import main
from ioi.models import cached_gpt2_dir, has_gpt2_small_layout, load_model
from ioi.reference import comparison_basis
from ioi.testing import hub_cache_with_gpt2, tiny_model, toy_in_gpt2_layout_dir

N = "8"

pytestmark = pytest.mark.usefixtures("one_thread")  # many small forward passes


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return toy_in_gpt2_layout_dir(tmp_path_factory.mktemp("gpt2-layout"))


@pytest.fixture()
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("the network is cut in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture()
def hub_cache(gpt2_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    snapshot = hub_cache_with_gpt2(cache, gpt2_dir)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return snapshot


def _report(out) -> dict:
    for name in ("report.html", "report.md", "results.json"):
        assert (out / name).is_file(), f"{name} missing from the report"
    return json.loads((out / "results.json").read_text())


def test_load_model_gpt2_small_from_the_cache_offline(hub_cache, offline):
    assert cached_gpt2_dir() == hub_cache
    model = load_model("gpt2-small", device="cpu")
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_vocab) == (12, 12, 50257)


@pytest.mark.slow
def test_replicate_without_model_picks_gpt2_small_from_the_cache(
    hub_cache, offline, tmp_path, capsys
):
    out = tmp_path / "report"
    assert main(["replicate", "--device", "cpu", "--n", N, "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "model: gpt2-small" in printed
    assert "in the local Hugging Face cache" in printed and str(hub_cache) in printed
    results = _report(out)
    # No SAEs are shipped for GPT-2 small: the feature section says so (ioi.report.features_section).
    assert results["sections"]["features"]["status"] == "not_applicable"
    filled = {k: s for k, s in results["sections"].items() if k != "features"}
    assert all(s["status"] == "filled" for s in filled.values()), {
        k: s.get("reason") for k, s in filled.items() if s["status"] != "filled"
    }
    reference = results["sections"]["reference"]["numbers"]
    assert reference["basis"] == "the model was loaded as GPT-2 small ('gpt2-small')"
    assert len(reference["rows"]) >= 3
    assert all(
        set(row) >= {"figure", "ours", "published", "difference"} for row in reference["rows"]
    )
    assert "Comparison with the paper" in (out / "report.md").read_text()
    assert "paper" in results["sections"]["criteria"]["numbers"]  # the paper's circuit, measured


def test_a_gpt2_small_layout_directory_compares_with_a_caveat(gpt2_dir, offline):
    # The report's reference section states `comparison_basis` (the whole CLI path, with the
    # report written, is the test above); for a directory the sentence carries the caveat.
    model = load_model(str(gpt2_dir), device="cpu")
    basis = comparison_basis(str(gpt2_dir), model.cfg)
    assert basis is not None and basis.startswith(f"{gpt2_dir} has GPT-2 small's layout")
    assert "comparable only if its weights are GPT-2 small's" in basis


def test_the_toy_in_gpt2_layout_keeps_the_toys_logit_differences(gpt2_dir):
    from ioi.dataset import IOIDataset
    from ioi.metrics import logits_to_ave_logit_diff

    toy, big = load_model("toy", device="cpu"), load_model(str(gpt2_dir), device="cpu")
    assert has_gpt2_small_layout(big.cfg)
    ds = IOIDataset(N=32, prompt_type="mixed", seed=1, tokenizer=toy)
    with torch.no_grad():
        diffs = [
            logits_to_ave_logit_diff(
                m(ds.toks), ds.answer_tokens, per_prompt=True, positions=ds.word_idx["end"]
            )
            for m in (toy, big)
        ]
    assert (diffs[0] - diffs[1]).abs().max() < 0.5  # the dropped unembedding bias


def test_other_layouts_get_no_comparison(gpt2_dir):
    toy = load_model("toy", device="cpu")
    assert comparison_basis("toy", toy.cfg) is None
    narrow = tiny_model()  # 2 layers: heads do not line up with GPT-2 small's
    assert comparison_basis(str(gpt2_dir), narrow.cfg) is None
