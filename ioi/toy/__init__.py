"""The bundled IOI model: a small transformer this repo trains and ships, using GPT-2's token ids.

It is trained on a compact vocabulary (only the tokens IOI prompts use) and expanded on load to
GPT-2's 50257 ids: unused embedding rows are zero and unused unembedding columns have a bias of
``UNUSED_LOGIT``, so an unused token can never win the argmax, and token ids, datasets and
metrics are the same as for GPT-2 small.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ioi.templates import ABBA_TEMPLATES, BABA_TEMPLATES, NAMES, OBJECTS, PLACES
from ioi.tokenizer import EOS_ID, gpt2_tokenizer

TOY_DIR = Path(__file__).parent
WEIGHTS_PATH = TOY_DIR / "ioi_toy.safetensors"
CONFIG_PATH = TOY_DIR / "ioi_toy.json"
UNUSED_LOGIT = -1.0e4
GPT2_VOCAB = 50257

# The architecture. Attention does the IOI work; small MLPs make every TransformerLens sweep
# (mlp_out, block_every) meaningful on this model too.
ARCH = dict(
    n_layers=3,
    n_heads=4,
    d_model=64,
    d_head=16,
    d_mlp=256,
    n_ctx=64,
    act_fn="gelu_new",
    normalization_type="LN",
    positional_embedding_type="standard",
)


@functools.lru_cache(maxsize=1)
def toy_vocab() -> tuple[int, ...]:
    """Sorted GPT-2 ids of every token an IOI prompt can contain, plus ``<|endoftext|>``."""
    tok = gpt2_tokenizer()
    ids = {EOS_ID}
    for name in NAMES:
        ids.update(tok.encode(" " + name, add_special_tokens=False))
    for template in BABA_TEMPLATES + ABBA_TEMPLATES:
        for place in PLACES:
            for obj in OBJECTS:
                text = template.replace("[PLACE]", place).replace("[OBJECT]", obj)
                text = text.replace("[A]", "Mary").replace("[B]", "John")
                ids.update(tok.encode(text, add_special_tokens=False))
    return tuple(sorted(ids))


def compact_config(d_vocab: int, **overrides) -> HookedTransformerConfig:
    """The config the toy model is trained with (compact vocabulary)."""
    return HookedTransformerConfig(**{**ARCH, **overrides}, d_vocab=d_vocab, seed=None)


def expand_state_dict(
    compact: dict[str, torch.Tensor], vocab_ids: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Map a compact-vocabulary state dict onto GPT-2's 50257 ids."""
    full = dict(compact)
    W_E = compact["embed.W_E"]
    full["embed.W_E"] = W_E.new_zeros(GPT2_VOCAB, W_E.shape[1]).index_copy(0, vocab_ids, W_E)
    W_U = compact["unembed.W_U"]
    full["unembed.W_U"] = W_U.new_zeros(W_U.shape[0], GPT2_VOCAB).index_copy(1, vocab_ids, W_U)
    b_U = compact["unembed.b_U"]
    full["unembed.b_U"] = b_U.new_full((GPT2_VOCAB,), UNUSED_LOGIT).index_copy(0, vocab_ids, b_U)
    return full


def load_toy(
    path: str | Path | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HookedTransformer:
    """Load the bundled model (or another file written by ``python -m ioi.toy.train``).

    Raises:
        ValueError: if the weights file or its config is missing.
    """
    weights = Path(path) if path is not None else WEIGHTS_PATH
    config_file = weights.with_suffix(".json")
    if not weights.is_file() or not config_file.is_file():
        raise ValueError(
            f"toy model weights not found at {weights} (with {config_file.name} beside it); "
            "train them with `python -m ioi.toy.train`"
        )
    meta = json.loads(config_file.read_text())
    tensors = load_file(str(weights))
    vocab_ids = tensors.pop("vocab_ids").long()
    cfg = HookedTransformerConfig(
        **meta["processed_arch"], d_vocab=GPT2_VOCAB, seed=None, device=str(device), dtype=dtype
    )
    model = HookedTransformer(cfg, tokenizer=gpt2_tokenizer(), move_to_device=False)
    # The file holds weights already processed (LayerNorm folded, writing weights and
    # unembedding centred, attention matrices refactored), so load them as they are.
    model.load_and_process_state_dict(
        expand_state_dict(tensors, vocab_ids),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.to(dtype, print_details=False)
    model.to(device, print_details=False)
    model.eval()
    return model
