"""Load the models the course studies: GPT-2 small, a local GPT-2 directory, or the bundled toy.

Every path returns a ``HookedTransformer`` with GPT-2's tokenizer, processed the way the IOI
literature does (LayerNorm folded, writing weights and unembedding centred, attention matrices
refactored), so one dataset and one set of metrics serve them all.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ioi.device import resolve_device
from ioi.tokenizer import gpt2_tokenizer
from ioi.toy import load_toy

GPT2_ALIASES = ("gpt2-small", "gpt2")
MODEL_CHOICES = ("toy", "gpt2-small", "a directory of HF GPT-2 weights", "a toy .safetensors file")
IOI_PROCESSING = dict(
    fold_ln=True,
    center_writing_weights=True,
    center_unembed=True,
    fold_value_biases=True,
    refactor_factored_attn_matrices=True,
)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class ModelUnavailableError(ValueError):
    """The asked-for weights are neither on disk nor reachable."""


def load_model(
    name: str | os.PathLike = "toy",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = torch.float32,
) -> HookedTransformer:
    """Load a model by name or path, on ``device`` (``"auto"``: cuda, then mps, then cpu).

    Args:
        name: ``"toy"`` (the bundled IOI model), ``"gpt2-small"`` (from the local Hugging Face
            cache, or the hub if reachable), a directory holding ``config.json`` and GPT-2
            weights, or a toy ``.safetensors`` file.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        dtype: a torch dtype or one of ``"float32"``, ``"float16"``, ``"bfloat16"``.

    Raises:
        ValueError: unknown name, missing file, or weights that cannot be had offline
            (``ModelUnavailableError``, which says how to get them).
    """
    dev = resolve_device(device)
    dt = _resolve_dtype(dtype)
    name = os.fspath(name)
    if name == "toy":
        model = load_toy(device=dev, dtype=dt)
    elif name in GPT2_ALIASES:
        model = _load_gpt2_small(dev, dt)
    elif Path(name).is_dir():
        model = load_hf_gpt2_dir(name, dev, dt)
    elif Path(name).suffix == ".safetensors":
        model = load_toy(name, device=dev, dtype=dt)
    elif Path(name).exists():
        raise ValueError(
            f"cannot load {name!r}: expected a directory of HF weights or a .safetensors file"
        )
    else:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_CHOICES)}")
    model.eval()
    return model


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def cached_gpt2_dir() -> Path | None:
    """The local Hugging Face cache snapshot of ``gpt2`` with its weights, if one exists."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers always brings it
        return None
    config = try_to_load_from_cache("gpt2", "config.json")
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    has_weights = any((snapshot / f).is_file() for f in ("model.safetensors", "pytorch_model.bin"))
    return snapshot if has_weights else None


def gpt2_small_available() -> bool:
    """True when GPT-2 small's weights are already on this machine (no network is used)."""
    return cached_gpt2_dir() is not None


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    # Read at call time: tests and offline users set HF_HUB_OFFLINE=1 to forbid any probe.
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _load_gpt2_small(device: torch.device, dtype: torch.dtype) -> HookedTransformer:
    snapshot = cached_gpt2_dir()
    if snapshot is not None:
        return load_hf_gpt2_dir(snapshot, device, dtype)
    if not _hub_reachable():
        raise ModelUnavailableError(
            "GPT-2 small's weights are not in the local Hugging Face cache and the hub cannot be "
            "reached. Run `ioi replicate --model gpt2-small` once on a machine with internet access "
            "(it fills ~/.cache/huggingface), or pass --model DIR with a directory holding "
            "config.json and model.safetensors; or use --model toy."
        )
    return HookedTransformer.from_pretrained(
        "gpt2-small", device=str(device), dtype=dtype, tokenizer=gpt2_tokenizer(), **IOI_PROCESSING
    )


def gpt2_config_from_hf(hf_config: dict) -> HookedTransformerConfig:
    """A TransformerLens config for a GPT-2-family ``config.json``."""
    n_embd = hf_config["n_embd"]
    return HookedTransformerConfig(
        d_model=n_embd,
        d_head=n_embd // hf_config["n_head"],
        n_heads=hf_config["n_head"],
        d_mlp=hf_config.get("n_inner") or 4 * n_embd,
        n_layers=hf_config["n_layer"],
        n_ctx=hf_config.get("n_ctx", hf_config.get("n_positions", 1024)),
        eps=hf_config.get("layer_norm_epsilon", 1e-5),
        d_vocab=hf_config["vocab_size"],
        act_fn=hf_config.get("activation_function", "gelu_new"),
        use_attn_scale=hf_config.get("scale_attn_weights", True),
        scale_attn_by_inverse_layer_idx=hf_config.get("scale_attn_by_inverse_layer_idx", False),
        normalization_type="LN",
        original_architecture="GPT2LMHeadModel",
        default_prepend_bos=True,
        seed=None,
    )


def load_hf_gpt2_dir(
    path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformer:
    """Load a directory of Hugging Face GPT-2 weights (config.json + safetensors/bin), offline."""
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} has no config.json; expected a directory of HF GPT-2 weights")
    if not any((path / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        raise ValueError(f"{path} has no model.safetensors or pytorch_model.bin weights file")
    hf_config = json.loads(config_file.read_text())
    if hf_config.get("model_type") != "gpt2":
        raise ValueError(
            f"{path} holds a {hf_config.get('model_type')!r} model; only GPT-2-family directories "
            "load offline here (use HookedTransformer.from_pretrained for others)"
        )
    cfg = gpt2_config_from_hf(hf_config)
    hf_model = GPT2LMHeadModel.from_pretrained(
        path, local_files_only=True, torch_dtype=torch.float32
    )
    state_dict = convert_gpt2_weights(hf_model, cfg)
    model = HookedTransformer(cfg, tokenizer=gpt2_tokenizer(), move_to_device=False)
    model.load_and_process_state_dict(state_dict, **IOI_PROCESSING)
    model.to(dtype, print_details=False)
    model.to(device, print_details=False)
    return model
