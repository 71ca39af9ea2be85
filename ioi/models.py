"""Load the models the course studies: GPT-2 small, a local GPT-2 directory, or the bundled toy,
and any other model TransformerLens converts (`ioi.architectures`).

GPT-2 and the toy come with GPT-2's tokenizer, other models with their own. Every path returns a
``HookedTransformer`` processed the way the IOI literature does (LayerNorm folded, writing
weights and unembedding centred, attention matrices refactored, where the architecture allows:
`ioi.architectures.ioi_processing`), so one dataset and one set of metrics serve them all.
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
GPT2_HUB_REPOS = ("gpt2", "openai-community/gpt2")  # the hub's old and new name
MODEL_CHOICES = (
    "toy",
    "gpt2-small",
    "a TransformerLens model name (e.g. pythia-160m, Qwen/Qwen2.5-0.5B)",
    "a directory of HF weights and tokenizer (GPT-2, Llama, GPT-NeoX, ...)",
    "a toy .safetensors file",
)
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
            weights, a directory of another architecture TransformerLens converts with its
            tokenizer's files (`ioi.architectures.load_hf_dir`), a TransformerLens model name
            such as ``"pythia-160m"`` (`ioi.architectures.load_tl_model`), or a toy
            ``.safetensors`` file.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
        dtype: a torch dtype or one of ``"float32"``, ``"float16"``, ``"bfloat16"``.

    Raises:
        ValueError: unknown name, missing file, or weights that cannot be had offline
            (``ModelUnavailableError``, which says how to get them).
    """
    from ioi.architectures import close_names, load_tl_model, official_name

    dev = resolve_device(device)
    dt = _resolve_dtype(dtype)
    name = os.fspath(name)
    if name == "toy":
        model = load_toy(device=dev, dtype=dt)
    elif name in GPT2_ALIASES:
        model = _load_gpt2_small(dev, dt)
    elif Path(name).is_dir():
        model = _load_dir(Path(name), dev, dt)
    elif Path(name).suffix == ".safetensors":
        model = load_toy(name, device=dev, dtype=dt)
    elif Path(name).exists():
        raise ValueError(
            f"cannot load {name!r}: expected a directory of HF weights or a .safetensors file"
        )
    elif official_name(name) is not None:
        model = load_tl_model(name, dev, dt)
    else:
        like = close_names(name)
        hint = f" (did you mean {' or '.join(like)}?)" if like else ""
        raise ValueError(f"unknown model {name!r}{hint}: choose one of {', '.join(MODEL_CHOICES)}")
    # Finite in the file can still overflow in a half-precision dtype.
    require_finite(model.named_parameters(), f"the weights of {name!r} (as {dt})")
    model.eval()
    return model


def _load_dir(path: Path, device: torch.device, dtype: torch.dtype) -> HookedTransformer:
    """A GPT-2 directory loads with GPT-2's tokenizer (as ever); any other through TransformerLens."""
    from ioi.architectures import load_hf_dir

    if read_config_json(path).get("model_type") == "gpt2":
        return load_hf_gpt2_dir(path, device, dtype)
    return load_hf_dir(path, device, dtype)


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def cached_gpt2_dir() -> Path | None:
    """The local Hugging Face cache snapshot of ``gpt2`` with its weights, if one exists.

    Looks for the hub's ``gpt2`` and its newer name ``openai-community/gpt2``, in the cache
    ``huggingface_hub`` uses (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``); never the network.
    """
    for repo in GPT2_HUB_REPOS:
        snapshot = cached_hub_dir(repo, WEIGHT_FILES)
        if snapshot is not None:
            return snapshot
    return None


def cached_hub_dir(repo: str, weight_files: tuple[str, ...]) -> Path | None:
    """The local Hugging Face cache snapshot of hub ``repo`` with its config and one of
    ``weight_files``, if one exists (in the cache `cached_gpt2_dir` describes; never the network).
    """
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "config.json")
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    return snapshot if any((snapshot / f).is_file() for f in weight_files) else None


def has_gpt2_small_layout(cfg: HookedTransformerConfig) -> bool:
    """True for a GPT-2 with GPT-2 small's layout: 12 layers of 12 heads, vocabulary 50257.

    The published IOI figures name heads by (layer, head) and tokens by GPT-2's ids, so they
    can be set beside such a model's own; they are comparable only if its weights are GPT-2
    small's (which also needs ``d_model`` 768; this rule does not check it, so a narrow
    random model built for the tests counts too).
    """
    return cfg.original_architecture == "GPT2LMHeadModel" and (
        cfg.n_layers,
        cfg.n_heads,
        cfg.d_vocab,
    ) == (12, 12, 50257)


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


GPT2_REQUIRED_KEYS = ("n_embd", "n_head", "n_layer", "vocab_size")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_config_json(path: str | os.PathLike) -> dict:
    """The settings in a Hugging Face directory's ``config.json``, of any architecture.

    Raises:
        ValueError: the file is missing, is not JSON or not a JSON object.
    """
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} has no config.json; expected a directory of HF weights")
    try:
        hf_config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_file} is not valid JSON: {err}") from None
    if not isinstance(hf_config, dict):
        raise ValueError(
            f"{config_file} must hold a JSON object of settings, got {type(hf_config).__name__}"
        )
    return hf_config


def read_hf_config(path: str | os.PathLike) -> dict:
    """The ``config.json`` of a GPT-2-family directory, checked for what loading needs.

    Raises:
        ValueError: the file is missing, is not JSON or not a JSON object, lacks one of
            ``GPT2_REQUIRED_KEYS``, gives one of them as anything but a positive integer, or
            has ``n_embd`` not divisible by ``n_head``.
    """
    config_file = Path(path) / "config.json"
    hf_config = read_config_json(path)
    if hf_config.get("model_type") != "gpt2":
        raise ValueError(
            f"{path} holds a {hf_config.get('model_type')!r} model (config.json 'model_type'); "
            "this reader takes GPT-2-family directories ('gpt2'); load_model loads the others"
        )
    missing = [key for key in GPT2_REQUIRED_KEYS if key not in hf_config]
    if missing:
        raise ValueError(
            f"{config_file} lacks {', '.join(missing)}; a GPT-2 config needs "
            f"{', '.join(GPT2_REQUIRED_KEYS)}"
        )
    for key in GPT2_REQUIRED_KEYS:
        value = hf_config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{config_file}: {key} must be a positive integer, got {value!r}")
    if hf_config["n_embd"] % hf_config["n_head"]:
        raise ValueError(
            f"{config_file}: n_embd {hf_config['n_embd']} is not divisible by "
            f"n_head {hf_config['n_head']}"
        )
    return hf_config


def gpt2_config_from_hf(hf_config: dict) -> HookedTransformerConfig:
    """A TransformerLens config for a GPT-2-family ``config.json`` (see `read_hf_config`)."""
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
    """Load a directory of Hugging Face GPT-2 weights (config.json + safetensors/bin), offline.

    Raises:
        ValueError: a bad ``config.json`` (`read_hf_config`), a missing, truncated or corrupt
            weights file, weights whose names or shapes do not match the config (e.g. from a
            model of another size), or weights that are not all finite.
    """
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    path = Path(path)
    hf_config = read_hf_config(path)
    weights = next((path / f for f in WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise ValueError(f"{path} has no {' or '.join(WEIGHT_FILES)} weights file")
    cfg = gpt2_config_from_hf(hf_config)
    from transformers import GPT2LMHeadModel

    hf_model = read_hf_weights(path, weights, GPT2LMHeadModel)
    require_finite(hf_model.named_parameters(), f"the weights in {weights}")
    state_dict = convert_gpt2_weights(hf_model, cfg)
    model = HookedTransformer(cfg, tokenizer=gpt2_tokenizer(), move_to_device=False)
    model.load_and_process_state_dict(state_dict, **IOI_PROCESSING)
    model.to(dtype, print_details=False)
    model.to(device, print_details=False)
    return model


def read_hf_weights(path: Path, weights: Path, model_class):
    """``model_class`` (e.g. ``GPT2LMHeadModel``) from ``path``, offline, in float32.

    Raises:
        ValueError: the weights cannot be read, or some tensor the config implies is missing,
            extra or of another shape (the first one named).
    """
    from transformers.utils import logging as hf_logging

    if weights.suffix == ".safetensors":
        _check_safetensors(weights)
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # our error below replaces transformers' load report
    hf_logging.disable_progress_bar()  # one line per user error on the CLI, no loading bar
    try:
        hf_model, info = model_class.from_pretrained(
            path,
            local_files_only=True,
            dtype=torch.float32,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # so that we can name the first mismatch
        )
    except (OSError, RuntimeError, EOFError, ValueError) as err:  # e.g. a truncated .bin
        raise ValueError(f"cannot read the weights in {weights}: {err}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    order = {name: i for i, name in enumerate(hf_model.state_dict())}
    mismatched = sorted(info["mismatched_keys"], key=lambda m: order.get(m[0], len(order)))
    if mismatched:
        name, found, expected = mismatched[0]
        raise ValueError(
            f"{weights} does not fit {path / 'config.json'}: {name} has shape "
            f"{tuple(found)} in the file but the config implies {tuple(expected)} "
            f"({len(mismatched)} tensors differ; are the weights from a model of another size?)"
        )
    for kind in ("missing_keys", "unexpected_keys"):
        names = sorted(info[kind], key=lambda n: order.get(n, len(order)))
        if names:
            where = "is missing from" if kind == "missing_keys" else "is in"
            extra = "" if kind == "missing_keys" else " but not in the config's model"
            raise ValueError(
                f"{names[0]} {where} {weights}{extra} ({len(names)} such tensors); "
                "the weights do not match config.json"
            )
    return hf_model.eval()


def _check_safetensors(weights: Path) -> None:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(weights, framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError) as err:
        raise ValueError(
            f"{weights} is not a readable safetensors file (truncated or corrupt?): {err}"
        ) from None


def require_finite(named_tensors, where: str) -> None:
    """Raise ``ValueError`` naming the first tensor of ``(name, tensor)`` pairs with NaN/inf.

    Weights with a NaN or an infinity give NaN or meaningless logits downstream, so they are
    refused where they are loaded.
    """
    for name, tensor in named_tensors:
        bad = ~torch.isfinite(tensor.detach())
        if bad.any():
            n_nan = int(torch.isnan(tensor.detach()).sum())
            raise ValueError(
                f"{where} are not all finite: {name} has {int(bad.sum())} non-finite entries "
                f"({n_nan} NaN, {int(bad.sum()) - n_nan} inf)"
            )
