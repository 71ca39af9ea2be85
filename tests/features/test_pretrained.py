"""Loading SAEs: the shipped toy SAEs, a local directory, and a release offline (fails fast)."""

from __future__ import annotations

import socket

import pytest
import torch

from ioi.dataset import IOIDataset
from ioi.features import load_pretrained_saes, load_saes_dir, load_toy_saes, spliced
from ioi.features.quality import evaluate_saes
from ioi.features.testing import random_sae
from ioi.features.train import TOY_HOOKS
from ioi.models import ModelUnavailableError


@pytest.fixture()
def no_network(monkeypatch):
    """Cut the network: every connection attempt is recorded and refused."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network cut by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_offline_release_fails_at_once(no_network, monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # so the hub is probed, and refused
    with pytest.raises(ModelUnavailableError, match="not in the local Hugging Face cache"):
        load_pretrained_saes("gpt2-small-res-jb", ["blocks.8.hook_resid_pre"])
    assert len(no_network) == 1, "one probe of the hub, then the error (no download retries)"


def test_offline_with_hub_offline_set_probes_nothing(no_network, monkeypatch, tmp_path):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="load_pretrained_saes"):
        load_pretrained_saes("gpt2-small-res-jb")
    assert no_network == []


def test_unknown_release_and_id():
    with pytest.raises(
        ValueError, match="unknown SAE release 'gpt2-small-res-jbb'.*gpt2-small-res-jb"
    ):
        load_pretrained_saes("gpt2-small-res-jbb")
    with pytest.raises(
        ValueError, match="no SAE 'blocks.99.hook_resid_pre'.*blocks.0.hook_resid_pre"
    ):
        load_pretrained_saes("gpt2-small-res-jb", ["blocks.99.hook_resid_pre"])


def test_a_missing_directory_is_named_as_one(tmp_path):
    missing = tmp_path / "no_saes_here"
    with pytest.raises(ValueError, match="no directory at .*no_saes_here"):
        load_pretrained_saes(missing)
    with pytest.raises(ValueError, match="no directory at './saes'"):
        load_pretrained_saes("./saes")


def test_local_directory_saved_by_sae_lens(tmp_path):
    sae = random_sae(16, 32, seed=3)
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    sae.save_model(tmp_path / "one")
    (loaded,) = load_pretrained_saes(tmp_path / "one").values()
    for name, param in sae.state_dict().items():
        assert torch.equal(param, loaded.state_dict()[name]), name
    random_sae(16, 32, seed=4).save_model(tmp_path / "many" / "blocks.1.hook_mlp_out")
    sae.save_model(tmp_path / "many" / "first")
    many = load_saes_dir(tmp_path / "many")
    # Keyed by the recorded hook name, else by the folder's name.
    assert sorted(many) == ["blocks.0.hook_resid_pre", "blocks.1.hook_mlp_out"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no SAE"):
        load_saes_dir(tmp_path / "empty")


def test_shipped_toy_saes(toy_model, no_hooks_after):
    saes = load_toy_saes()
    assert list(saes) == list(TOY_HOOKS)
    prompts = IOIDataset(16, "mixed", seed=1, tokenizer=toy_model)
    plain = toy_model(prompts.toks)
    with spliced(toy_model, saes):
        torch.testing.assert_close(toy_model(prompts.toks), plain, atol=1e-4, rtol=0)
    for result in evaluate_saes(toy_model, saes, prompts):
        # Measured 0.959 and 0.943 on 200 prompts (python -m ioi.features quality).
        assert result.variance_explained > 0.9, result
        assert result.logit_diff_recovered_mean > 0.9, result
        assert result.l0 == pytest.approx(16.0)
    no_hooks_after(toy_model)


def _hub_cache_with_sae(cache, repo: str, folder: str, sae_dir) -> None:
    """Lay an SAE saved by SAELens out in ``cache`` as ``huggingface_hub`` caches ``repo``'s
    ``folder/`` (blobs named by content, snapshot links, ``refs/main``)."""
    import hashlib
    from pathlib import Path

    commit = "0" * 39 + "2"
    root = Path(cache) / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit / folder
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for file in sorted(Path(sae_dir).iterdir()):
        data = file.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "..", "blobs", blob.name))


def test_cached_release_loads_offline(no_network, monkeypatch, tmp_path):
    """A release already in the Hugging Face cache loads through SAE.from_pretrained with the
    network cut (a tiny SAE stands in for GPT-2 small's layer-8 SAE)."""
    import huggingface_hub.constants as hub_constants

    sae = random_sae(16, 32, seed=5)
    sae.cfg.metadata.hook_name = "blocks.8.hook_resid_pre"
    sae.save_model(tmp_path / "saved")
    cache = tmp_path / "hub"
    _hub_cache_with_sae(
        cache, "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre", tmp_path / "saved"
    )
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    saes = load_pretrained_saes("gpt2-small-res-jb", ["blocks.8.hook_resid_pre"])
    assert list(saes) == ["blocks.8.hook_resid_pre"]
    torch.testing.assert_close(saes["blocks.8.hook_resid_pre"].W_enc, sae.W_enc)
    assert no_network == []


def test_ioi_processing_keeps_the_residual_stream_the_sae_releases_saw(tmp_path):
    """GPT-2 small's residual SAEs were trained on TransformerLens's default processing (LN
    folded, writing weights and unembedding centred, value biases folded); our processing adds
    the attention refactoring, which leaves every residual stream as it was (a narrow random
    GPT-2 of GPT-2 small's layout stands in for the real weights)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    from ioi.models import gpt2_config_from_hf, load_model, read_hf_config
    from ioi.testing import random_gpt2_dir

    path = random_gpt2_dir(tmp_path / "gpt2", n_layer=3)
    ours = load_model(path, device="cpu")
    cfg = gpt2_config_from_hf(read_hf_config(path))
    reference = HookedTransformer(cfg, move_to_device=False)
    state = convert_gpt2_weights(GPT2LMHeadModel.from_pretrained(path), cfg)
    reference.load_and_process_state_dict(
        state,
        fold_ln=True,
        center_writing_weights=True,
        center_unembed=True,
        fold_value_biases=True,
    )
    toks = torch.randint(0, 50257, (2, 7), generator=torch.Generator().manual_seed(0))
    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(3)] + ["blocks.2.hook_resid_post"]
    _, ours_cache = ours.run_with_cache(toks, names_filter=names)
    _, ref_cache = reference.run_with_cache(toks, names_filter=names)
    for name in names:
        torch.testing.assert_close(ours_cache[name], ref_cache[name], atol=1e-4, rtol=1e-4)
