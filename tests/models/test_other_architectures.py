"""Beyond GPT-2: Llama-style and GPT-NeoX-style directories, and TransformerLens model names.

The models are randomly initialised 2-layer Hugging Face models saved with a small BPE
tokenizer trained offline (`ioi.testing.random_hf_dir`, `ioi.testing.ioi_tokenizer`), which keeps
only `ioi.testing.TEST_NAMES` of the paper's names whole.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from ioi.architectures import DIR_ARCHITECTURES, ioi_processing
from ioi.cli import main
from ioi.dataset import IOIDataset
from ioi.models import ModelUnavailableError, load_model
from ioi.report import SECTIONS
from ioi.templates import NAMES
from ioi.testing import TEST_NAMES, hub_cache_with_gpt2, ioi_tokenizer, random_hf_dir

ARCHS = ("llama", "neox")

pytestmark = pytest.mark.usefixtures("one_thread")  # many small forward passes


@pytest.fixture(scope="module")
def tokenizer():
    return ioi_tokenizer()


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("hf")
    return {arch: random_hf_dir(root / arch, arch, tokenizer=tokenizer) for arch in ARCHS}


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.mark.parametrize("arch", ARCHS)
def test_a_directory_loads_with_its_architecture_and_hugging_faces_log_probs(hf_dirs, arch):
    from transformers import AutoModelForCausalLM

    model = load_model(hf_dirs[arch], device="cpu")
    cfg = model.cfg
    assert cfg.positional_embedding_type == "rotary" and cfg.n_layers == 2
    if arch == "llama":
        assert (cfg.n_heads, cfg.n_key_value_heads, cfg.normalization_type) == (4, 2, "RMSPre")
        assert cfg.ungroup_grouped_query_attention and cfg.gated_mlp
    else:
        assert cfg.parallel_attn_mlp and cfg.normalization_type == "LNPre"
    flags = ioi_processing(cfg)
    assert flags["fold_ln"] and not flags["refactor_factored_attn_matrices"]  # rotary
    assert flags["center_writing_weights"] == (arch == "neox")  # RMSNorm does not centre
    hf = AutoModelForCausalLM.from_pretrained(hf_dirs[arch], local_files_only=True).eval()
    toks = torch.randint(0, cfg.d_vocab, (3, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = hf(toks).logits.log_softmax(-1)
        got = model(toks).log_softmax(-1)
    # Folding and centring move each position's logits by a constant, never the log-probs; what
    # is left is float32 rounding of reordered sums (~1e-6 here, log-probs of size ~6).
    assert expected.std() > 0.5  # the random model is not near-uniform: the check has teeth
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    with torch.no_grad():  # every query head has its own keys to patch
        _, cache = model.run_with_cache(toks, names_filter="blocks.0.attn.hook_k")
    assert cache["blocks.0.attn.hook_k"].shape[2] == cfg.n_heads


def test_the_dataset_keeps_the_names_the_tokenizer_keeps_whole(tokenizer):
    ds = IOIDataset(8, tokenizer=tokenizer)
    assert sorted(ds.names) == sorted(TEST_NAMES)
    assert sorted(ds.dropped["names"]) == sorted(set(NAMES) - set(TEST_NAMES))
    assert ds.dropped["places"] == ds.dropped["objects"] == []
    assert set(ds.tokenizer.decode(ds.io_tokenIDs).split()) <= set(TEST_NAMES)
    too_few = ioi_tokenizer(names=TEST_NAMES[:4])
    with pytest.raises(ValueError, match=r"only 4 of the paper's 99 names .* at least 5"):
        IOIDataset(8, tokenizer=too_few)


@pytest.mark.parametrize("arch", ARCHS)
def test_replicate_on_a_directory_writes_a_complete_report(hf_dirs, arch, tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["replicate", "--model", str(hf_dirs[arch]), "--n", "8", "--out", str(out)]
    assert main([*argv, "--device", "cpu"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert f"the prompts use {len(TEST_NAMES)} of 99 names" in printed
    assert all((out / f).is_file() for f in ("report.html", "report.md", "results.json"))
    results = json.loads((out / "results.json").read_text())
    sections = results["sections"]
    assert list(sections) == [key for key, _, _ in SECTIONS]
    for key, section in sections.items():
        # GPT-2 small's figures; SAEs are shipped for the toy model only
        expected = "not_applicable" if key in ("reference", "features") else "filled"
        assert section["status"] == expected, (key, section.get("reason"))
    words = sections["setup"]["numbers"]["dataset"]["words"]["names"]
    assert words["kept"] == len(TEST_NAMES) and len(words["dropped"]) == 99 - len(TEST_NAMES)
    assert "of 99 names" in (out / "report.md").read_text(encoding="utf-8")


def test_an_architecture_transformer_lens_cannot_convert_is_one_line(tmp_path, capsys):
    from transformers import BertConfig

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    config.architectures = ["BertForMaskedLM"]
    config.save_pretrained(tmp_path)  # no weights needed: the config alone is refused
    with pytest.raises(ValueError, match="'BertForMaskedLM' model, which TransformerLens") as err:
        load_model(tmp_path, device="cpu")
    assert all(arch in str(err.value) for arch in ("GPT2LMHeadModel", *DIR_ARCHITECTURES))
    assert main(["replicate", "--model", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "cannot convert from a directory" in _one_error_line(capsys)


def test_a_directory_without_its_tokenizer_is_one_line(hf_dirs, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(hf_dirs["llama"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(ValueError, match="has no tokenizer"):
        load_model(folder, device="cpu")
    assert main(["replicate", "--model", str(folder), "--out", str(tmp_path / "r")]) == 2
    assert "tokenizer.save_pretrained" in _one_error_line(capsys)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, used in place of the real one."""
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_transformer_lens_name_not_on_this_machine_fails_fast_saying_how(
    hub_cache, tmp_path, capsys
):
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="hf download EleutherAI/pythia-160m"):
        load_model("pythia-160m", device="cpu")
    assert time.perf_counter() - start < 5  # no retries against an unreachable hub
    assert main(["replicate", "--model", "pythia-160m", "--out", str(tmp_path / "r")]) == 2
    assert "cannot be reached" in _one_error_line(capsys)
    with pytest.raises(ValueError, match="did you mean pythia-160m"):
        load_model("pythia-160", device="cpu")


def test_a_transformer_lens_name_loads_from_a_hub_laid_out_cache(hf_dirs, hub_cache):
    from transformers import AutoModelForCausalLM

    hub_cache_with_gpt2(hub_cache, hf_dirs["neox"], repo="EleutherAI/pythia-160m")
    model = load_model("pythia-160m", device="cpu")
    assert (model.cfg.d_model, model.cfg.model_name) == (64, "pythia-160m")
    hf = AutoModelForCausalLM.from_pretrained(hf_dirs["neox"], local_files_only=True).eval()
    toks = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        torch.testing.assert_close(
            model(toks).log_softmax(-1), hf(toks).logits.log_softmax(-1), atol=1e-4, rtol=0
        )
