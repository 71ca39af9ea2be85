import time

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from ioi.dataset import IOIDataset
from ioi.device import resolve_device
from ioi.models import ModelUnavailableError, load_model
from ioi.toy import UNUSED_LOGIT, load_toy, toy_vocab


def test_auto_device_is_cpu_here_and_bad_names_raise():
    expected = (
        "cuda"
        if torch.cuda.is_available()
        else ("mps" if torch.backends.mps.is_available() else "cpu")
    )
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="choose one of"):
        resolve_device("tpu")


def test_gpt2_small_without_weights_fails_fast_with_instructions(monkeypatch):
    monkeypatch.setattr("ioi.models.cached_gpt2_dir", lambda: None)
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError, match="--model DIR"):
        load_model("gpt2-small", device="cpu")
    assert time.perf_counter() - start < 10  # no minute of retries
    assert issubclass(ModelUnavailableError, ValueError)


def test_unknown_model_and_missing_files_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        load_model("gpt3-huge")
    with pytest.raises(ValueError, match="not found"):
        load_model(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="config.json"):
        load_model(tmp_path)  # an empty directory
    with pytest.raises(ValueError, match="dtype"):
        load_model("toy", dtype="float8")


def test_local_hf_gpt2_directory_matches_hugging_face(tmp_path):
    gen = torch.Generator().manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=32, vocab_size=50257)
    ).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    hf.save_pretrained(tmp_path)
    model = load_model(tmp_path, device="cpu")
    toks = torch.tensor([[50256, 2215, 5335, 290, 1757, 1816, 284]])
    with torch.no_grad():
        expected = hf(toks).logits.log_softmax(-1)
        got = model(toks).log_softmax(-1)
    # Folding and centring change logits by a constant per position, never log-probabilities.
    assert torch.allclose(expected, got, atol=1e-4)


def test_toy_model_shape_and_unused_tokens_never_win(toy_model):
    assert toy_model.cfg.d_vocab == 50257
    used = torch.tensor(toy_vocab())
    assert torch.equal(
        toy_model.W_E[used.new_tensor([5335, 1757])].abs().sum(-1) > 0, torch.tensor([True, True])
    )
    unused = torch.ones(50257, dtype=torch.bool)
    unused[used] = False
    assert (toy_model.W_E[unused] == 0).all()
    ds = IOIDataset(N=64, seed=11, tokenizer=toy_model, prepend_bos=True)
    with torch.no_grad():
        logits = toy_model(ds.toks)
    assert torch.isin(logits.argmax(-1), used).all()
    assert (logits[..., unused] == UNUSED_LOGIT).all()


def test_toy_loads_from_an_explicit_path_and_in_half_precision(tmp_path):
    from ioi.toy import CONFIG_PATH, WEIGHTS_PATH

    (tmp_path / "m.safetensors").write_bytes(WEIGHTS_PATH.read_bytes())
    (tmp_path / "m.json").write_bytes(CONFIG_PATH.read_bytes())
    model = load_toy(tmp_path / "m.safetensors", dtype=torch.bfloat16)
    assert model.W_E.dtype == torch.bfloat16


@pytest.mark.slow
@pytest.mark.parametrize("prompt_type", ["BABA", "ABBA"])
def test_toy_model_solves_ioi_on_fresh_prompts(toy_model, prompt_type):
    # Seed 12345 is never used in training (training datasets use seeds >= 10_000 in even/odd
    # pairs from the training seed 0: 10000 and 10001).
    ds = IOIDataset(N=500, prompt_type=prompt_type, seed=12345, tokenizer=toy_model)
    with torch.no_grad():
        logits = toy_model(ds.toks)
    end = logits[torch.arange(500), ds.word_idx["end"]]
    diff = end.gather(1, ds.answer_tokens).diff(dim=1).neg().squeeze(1)  # IO - S
    assert (diff > 0).float().mean() >= 0.95
    assert diff.mean() >= 2.5
