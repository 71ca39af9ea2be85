"""Bad model files fail with one clear ValueError (and the CLI with one line, exit 2), and a
GPT-2 in a Hugging Face cache laid out as the hub lays out ``gpt2`` is found offline.

The models are randomly initialised GPT-2s in Hugging Face format (`ioi.testing.random_gpt2_dir`).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ioi.cli import main
from ioi.device import resolve_device
from ioi.models import cached_gpt2_dir, load_model
from ioi.testing import hub_cache_with_gpt2, random_gpt2_dir


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return random_gpt2_dir(tmp_path_factory.mktemp("gpt2"), n_embd=24, n_layer=2)


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    (folder / "config.json").write_text(json.dumps(cfg))


def _truncated(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _nan(folder):
    tensors = load_file(folder / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


BAD = {
    "truncated weights": (_truncated, "not a readable safetensors file"),
    "weights of another size": (lambda f: _edit_config(f, n_embd=36), "does not fit"),
    "config not JSON": (lambda f: (f / "config.json").write_text("{nope"), "not valid JSON"),
    "config a list": (lambda f: (f / "config.json").write_text("[1]"), "JSON object"),
    "config lacks n_head": (lambda f: _edit_config(f, n_head=None), "lacks n_head"),
    "n_layer a string": (lambda f: _edit_config(f, n_layer="2"), "positive integer"),
    "n_embd not divisible": (lambda f: _edit_config(f, n_embd=25), "not divisible"),
    "NaN in the weights": (_nan, "not all finite"),
    "no weights file": (lambda f: (f / "model.safetensors").unlink(), "weights file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_model_folder_is_one_value_error_and_one_cli_line(small_dir, tmp_path, capsys, case):
    spoil, pattern = BAD[case]
    folder = _copy(small_dir, tmp_path / "m")
    spoil(folder)
    with pytest.raises(ValueError, match=pattern):
        load_model(folder, device="cpu")
    assert main(["replicate", "--model", str(folder), "--out", str(tmp_path / "r")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0] and "Traceback" not in captured.err, lines


def test_the_intact_folder_loads(small_dir):
    model = load_model(small_dir, device="cpu")
    assert (model.cfg.n_layers, model.cfg.n_heads, model.cfg.d_vocab) == (2, 12, 50257)


@pytest.mark.parametrize("device", ["cpu:abc", "cuda:", "tpu", "cpu:1", "CPU"])
def test_malformed_devices_are_refused(device):
    with pytest.raises(ValueError, match="device"):
        resolve_device(device)


def test_a_gpt2_in_a_hub_laid_out_cache_is_found_and_loaded_offline(
    small_dir, tmp_path, monkeypatch
):
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    snapshot = hub_cache_with_gpt2(cache, small_dir)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    assert cached_gpt2_dir() == snapshot
    model = load_model("gpt2-small", device="cpu")
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[50256, 464, 3290]]))).all()
