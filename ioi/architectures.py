"""Load models beyond GPT-2: a TransformerLens model name, or a local Hugging Face directory.

The methods find each model's own circuit, so they run on any decoder TransformerLens converts
(Llama, GPT-NeoX/Pythia, Qwen2, Mistral, ...). Two ways in, one loader:

1. a directory holding ``config.json``, the weights and the tokenizer's files: its
   ``architectures`` entry must be one of `DIR_ARCHITECTURES`;
2. a TransformerLens model name (``pythia-160m``, ``Qwen/Qwen2.5-0.5B``): its files are taken from
   the local Hugging Face cache, or fetched from the hub if it can be reached; offline and not
   cached, `ModelUnavailableError` says how to get them.

TransformerLens 3.9's own ``from_pretrained`` accepts only official names, so here the
TransformerLens config comes from its config converter, the weights from its weight converters
(``transformer_lens.pretrained.weight_conversions``), and the IOI processing flags are those of
`ioi.models.IOI_PROCESSING` that the architecture allows (`ioi_processing`).
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ioi.models import (
    IOI_PROCESSING,
    ModelUnavailableError,
    _hub_reachable,
    cached_hub_dir,
    read_config_json,
    read_hf_weights,
    require_finite,
)

DIR_ARCHITECTURES = (
    "LlamaForCausalLM",
    "GPTNeoXForCausalLM",
    "MistralForCausalLM",
    "MixtralForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "GPTNeoForCausalLM",
    "GPTJForCausalLM",
    "OPTForCausalLM",
    "BloomForCausalLM",
    "PhiForCausalLM",
    "Phi3ForCausalLM",
    "ApertusForCausalLM",
    "OlmoeForCausalLM",
    "Olmo3ForCausalLM",
)
"""Architectures whose directories load: those TransformerLens 3.9 converts from a config alone.

(Gemma and OLMo 1/2 are converted by name only, so they load by their TransformerLens name; GPT-2
directories take `ioi.models.load_hf_gpt2_dir`.) Only the first two are exercised by the tests
(``tests/models/test_other_architectures.py``); the rest are TransformerLens's conversions.
"""
NAME_ARCHITECTURES = (
    "GPT2LMHeadModel",
    "GemmaForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "OlmoForCausalLM",
    "Olmo2ForCausalLM",
    *DIR_ARCHITECTURES,
)
"""Architectures that load by TransformerLens name (decoders that ``AutoModelForCausalLM`` reads)."""
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
# TransformerLens picks the architecture from these words in a *name* before it reads the config,
# so a directory is never shown to it under its own path (which may well contain "llama").
_NAME_SNIFFED = ("llama", "gemma", "olmo", "tinystories")
_TL_NATIVE_ORGS = ("NeelNanda/", "ArthurConmy/", "Baidicoot/")  # repos in TransformerLens's format


def ioi_processing(cfg: HookedTransformerConfig) -> dict[str, bool]:
    """The flags of `ioi.models.IOI_PROCESSING` that hold for a model of this config.

    As TransformerLens's ``from_pretrained`` decides them: LayerNorm and RMSNorm scales fold into
    the next weights (RMSNorm without centring, so ``center_writing_weights`` is off for it), but
    not in post-norm or shortformer models; the unembedding is not centred under a logit softcap;
    the QK refactoring is off with rotary embeddings (the QK matrix then depends on the positions)
    and with grouped keys. Every flag leaves the log-probabilities as they were.
    """
    from transformer_lens.utilities.activation_functions import softcap_enabled
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    post_norm = cfg.original_architecture in POST_NORM_ARCHITECTURES
    shortformer = cfg.positional_embedding_type == "shortformer"
    layer_norm = cfg.normalization_type in ("LN", "LNPre") and not cfg.final_rms
    flags = dict(IOI_PROCESSING)
    flags["fold_ln"] &= cfg.normalization_type in ("LN", "LNPre", "RMS", "RMSPre")
    flags["fold_ln"] &= not (post_norm or shortformer)
    flags["center_writing_weights"] &= layer_norm and not (post_norm or shortformer)
    flags["center_unembed"] &= not shortformer and not softcap_enabled(cfg.output_logits_soft_cap)
    flags["refactor_factored_attn_matrices"] &= (
        cfg.positional_embedding_type != "rotary" and cfg.n_key_value_heads is None
    )
    return flags


def architecture_of(path: Path, hf_config: dict) -> str:
    """The model class a ``config.json`` names (``architectures``, else its ``model_type``).

    Raises:
        ValueError: it names neither, or a class outside `DIR_ARCHITECTURES`.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names = hf_config.get("architectures") or []
    arch = names[0] if names else MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(hf_config.get("model_type"))
    if arch not in DIR_ARCHITECTURES:
        what = repr(arch) if arch else f"model_type {hf_config.get('model_type')!r}"
        raise ValueError(
            f"{path} holds a {what} model, which TransformerLens cannot convert from a directory; "
            f"the architectures that load are GPT2LMHeadModel, {', '.join(DIR_ARCHITECTURES)}"
        )
    return arch


def load_hf_dir(
    path: str | os.PathLike,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    tl_name: str | None = None,
) -> HookedTransformer:
    """Load a Hugging Face directory of any architecture in `DIR_ARCHITECTURES`, offline.

    The directory holds ``config.json``, the weights (safetensors or bin, sharded or not) and the
    tokenizer's files (read with ``transformers.AutoTokenizer``). The model is processed with
    `ioi_processing`; grouped-query attention is ungrouped in the hooks
    (``cfg.ungroup_grouped_query_attention``), so every query head has its own k and v to patch;
    the computation is unchanged.

    Args:
        path: the directory.
        device, dtype: where and in what the model is put.
        tl_name: the TransformerLens name whose cached files ``path`` holds; its config then
            comes from TransformerLens's entry for that name.

    Raises:
        ValueError: a missing or bad ``config.json``, an architecture TransformerLens cannot
            convert (the valid ones listed), missing weights or tokenizer, weights that do not
            fit the config or are not all finite, or a tokenizer larger than the vocabulary.
    """
    from transformer_lens import loading_from_pretrained as tl_loading
    from transformers import AutoModelForCausalLM

    path = Path(path)
    hf_config = read_config_json(path)
    if tl_name is None:
        architecture_of(path, hf_config)
    weights = next((path / f for f in HF_WEIGHT_FILES if (path / f).is_file()), None)
    if weights is None:
        raise ValueError(f"{path} has no weights file ({', '.join(HF_WEIGHT_FILES)})")
    tokenizer = _read_tokenizer(path)
    cfg = _tl_config(path, tl_name, device)
    if len(tokenizer) > cfg.d_vocab:
        raise ValueError(
            f"the tokenizer in {path} has {len(tokenizer)} tokens but the model's vocabulary "
            f"only {cfg.d_vocab}; the tokenizer is not this model's"
        )
    hf_model = read_hf_weights(path, weights, AutoModelForCausalLM)
    require_finite(hf_model.named_parameters(), f"the weights in {weights}")
    state_dict = tl_loading.get_pretrained_state_dict(str(path), cfg, hf_model=hf_model)
    del hf_model
    cfg.ungroup_grouped_query_attention = cfg.n_key_value_heads is not None
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state_dict, **ioi_processing(cfg))
    model.to(dtype, print_details=False)
    model.to(device, print_details=False)
    return model


def _tl_config(path: Path, tl_name: str | None, device) -> HookedTransformerConfig:
    """TransformerLens's config for the model in ``path`` (by ``tl_name``, if it has one).

    In float32: the weights are processed in it, then cast (as `ioi.models.load_hf_gpt2_dir` does).
    """
    from transformer_lens import loading_from_pretrained as tl_loading

    common = dict(fold_ln=False, device=str(device), dtype=torch.float32)  # folded on loading
    try:
        if tl_name is not None:
            from huggingface_hub import constants

            # Offline here: the files are in the cache (`load_tl_model` made sure of it).
            cfg = tl_loading.get_pretrained_model_config(
                tl_name, cache_dir=constants.HF_HUB_CACHE, local_files_only=True, **common
            )
        else:
            with tempfile.TemporaryDirectory(prefix="ioi-config-") as tmp:
                neutral = Path(tmp) / "model"  # a name TransformerLens reads nothing into
                if any(word in str(neutral).lower() for word in _NAME_SNIFFED):
                    raise ValueError(
                        f"the temporary folder {tmp} has one of {_NAME_SNIFFED} in its name, which "
                        "TransformerLens would read as a model name; set TMPDIR to another folder"
                    )
                neutral.mkdir()
                shutil.copy(path / "config.json", neutral / "config.json")
                cfg = tl_loading.get_pretrained_model_config(str(neutral), **common)
    except (NotImplementedError, KeyError, AttributeError, TypeError) as err:
        raise ValueError(
            f"TransformerLens cannot build a config from {path / 'config.json'}: {err}"
        ) from None
    if cfg.original_architecture not in NAME_ARCHITECTURES:
        raise ValueError(
            f"{tl_name or path} is a {cfg.original_architecture} model, which ioi does not load "
            f"(not a decoder that transformers' AutoModelForCausalLM reads); the architectures "
            f"that load are {', '.join(NAME_ARCHITECTURES)}"
        )
    cfg.model_name = tl_name.split("/")[-1] if tl_name else path.name
    cfg.tokenizer_name = str(path)
    return cfg


def _read_tokenizer(path: Path):
    from transformers import AutoTokenizer

    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise ValueError(
            f"{path} has no tokenizer ({' or '.join(TOKENIZER_FILES)}); save the model's "
            f"tokenizer beside its weights: tokenizer.save_pretrained({str(path)!r})"
        )
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read the tokenizer in {path}: {err}") from None


# ---- TransformerLens names ---------------------------------------------------------------


def official_name(name: str) -> str | None:
    """The hub repository TransformerLens knows ``name`` (or an alias of it) by; None if none."""
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    return make_model_alias_map().get(name.lower())


def close_names(name: str, n: int = 3) -> list[str]:
    """Up to ``n`` TransformerLens model names (or aliases) that look like ``name``."""
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    aliases = make_model_alias_map()
    return difflib.get_close_matches(name.lower(), list(aliases), n=n, cutoff=0.6)


def load_tl_model(
    name: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> HookedTransformer:
    """Load a model by its TransformerLens name, from the local cache or (if reachable) the hub.

    Raises:
        ModelUnavailableError: not cached and the hub cannot be reached (at once, no retries).
        ValueError: a repository in TransformerLens's own format, or bad files (`load_hf_dir`).
    """
    repo = official_name(name)
    if repo is None:
        raise ValueError(f"{name!r} is not a TransformerLens model name")
    if repo.startswith(_TL_NATIVE_ORGS):
        raise ValueError(
            f"{repo} is stored in TransformerLens's own format, not Hugging Face's; load it with "
            "HookedTransformer.from_pretrained and pass the model to ioi.replicate.replicate"
        )
    snapshot = cached_hub_dir(repo, HF_WEIGHT_FILES)
    if snapshot is None:
        if not _hub_reachable():
            raise ModelUnavailableError(
                f"{name}'s weights ({repo} on the Hugging Face hub) are not in the local Hugging "
                "Face cache and the hub cannot be reached. Run `ioi replicate --model "
                f"{name}` once on a machine with internet access (it fills ~/.cache/huggingface), "
                f"or `hf download {repo} --local-dir DIR` there and pass --model DIR with the "
                "folder (config.json, weights and tokenizer files)"
            )
        snapshot = _download(repo)
    return load_hf_dir(snapshot, device, dtype, tl_name=repo)


def _download(repo: str) -> Path:
    """Fetch ``repo``'s config, tokenizer and weights (safetensors if it has them) into the cache."""
    from huggingface_hub import snapshot_download

    files = ["*.json", "*.model", "*.txt", "*.tiktoken"]
    snapshot_download(repo, allow_patterns=[*files, "*.safetensors"])
    snapshot = cached_hub_dir(repo, HF_WEIGHT_FILES)
    if snapshot is None:  # no safetensors on the hub: the PyTorch pickles, then
        snapshot_download(repo, allow_patterns=[*files, "pytorch_model*.bin"])
        snapshot = cached_hub_dir(repo, HF_WEIGHT_FILES)
    if snapshot is None:
        raise ValueError(f"{repo} on the hub has no weights in Hugging Face's format")
    return snapshot
