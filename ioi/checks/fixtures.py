"""The inputs checkers feed the learner: the toy model on the CPU and a few small IOI batches.

Checkers always use the bundled toy model on the CPU, whatever model a notebook studies, so a
check takes seconds and gives the same verdict everywhere. Loading the model and running the
batches is the slow part, so each is built once per process and kept here; `clear` drops them.
Learners get copies (`fresh_cache`, ``.clone()``), so a function that writes into its inputs
cannot spoil later checks.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer

from ioi.dataset import IOIDataset
from ioi.metrics import logits_to_ave_logit_diff

CHECK_SEED = 7  # the checkers' prompts; any seed works, fixed so messages are reproducible
ABC_FLIP = "ABB->XYZ, BAB->XYZ"


@functools.lru_cache(maxsize=1)
def toy_model() -> HookedTransformer:
    """The bundled IOI model on the CPU (loaded once)."""
    from ioi.models import load_model

    return load_model("toy", device="cpu")


@dataclass(frozen=True)
class IOIBatch:
    """A small clean/corrupted pair of IOI batches run through the toy model.

    The corrupted prompts are the ABC flip of the clean ones (three unrelated names), so the
    model has no repeated name to go on. Right padding means prompts end at different positions:
    ``end`` holds each prompt's last position, where the answer is predicted.
    """

    model: HookedTransformer
    ds: IOIDataset
    abc: IOIDataset
    clean_logits: Float[Tensor, "batch pos d_vocab"]
    corrupted_logits: Float[Tensor, "batch pos d_vocab"]
    clean_cache: ActivationCache
    corrupted_cache: ActivationCache
    clean_logit_diff: float
    corrupted_logit_diff: float

    @property
    def end(self) -> Int[Tensor, " batch"]:
        """Each prompt's final (predicting) position."""
        return self.ds.word_idx["end"]

    @property
    def answer_tokens(self) -> Int[Tensor, "batch 2"]:
        """[batch, 2] ids of (IO, S)."""
        return self.ds.answer_tokens

    def describe(self) -> str:
        """How the batch was made, for failure messages."""
        return (
            f"toy model, IOIDataset(N={self.ds.N}, prompt_type={self.ds.prompt_type!r}, "
            f"seed={self.ds.seed}) and its ABC flip; tokens {list(self.ds.toks.shape)}"
        )


@functools.lru_cache(maxsize=4)
def ioi_batch(n: int = 6, prompt_type: str = "mixed", seed: int = CHECK_SEED) -> IOIBatch:
    """A cached `IOIBatch` of ``n`` prompts (full caches: every hook)."""
    model = toy_model()
    ds = IOIDataset(n, prompt_type, seed=seed, tokenizer=model)
    abc = ds.gen_flipped_prompts(ABC_FLIP)
    with torch.inference_mode():
        clean_logits, clean_cache = model.run_with_cache(ds.toks)
        corrupted_logits, corrupted_cache = model.run_with_cache(abc.toks)
    end = ds.word_idx["end"]
    return IOIBatch(
        model=model,
        ds=ds,
        abc=abc,
        clean_logits=clean_logits.clone(),
        corrupted_logits=corrupted_logits.clone(),
        clean_cache=fresh_cache(clean_cache),
        corrupted_cache=fresh_cache(corrupted_cache),
        clean_logit_diff=float(
            logits_to_ave_logit_diff(clean_logits, ds.answer_tokens, positions=end)
        ),
        corrupted_logit_diff=float(
            logits_to_ave_logit_diff(corrupted_logits, ds.answer_tokens, positions=end)
        ),
    )


@dataclass(frozen=True)
class OtherModelBatch:
    """Random prompts through a small random model whose sizes differ from the toy's.

    A checker runs the learner's function here too, so that sizes written as the toy's (3
    layers, 4 heads, 18 positions) fail: this model has more layers, heads and positions.
    """

    model: HookedTransformer
    clean_tokens: Int[Tensor, "batch pos"]
    corrupted_tokens: Int[Tensor, "batch pos"]
    clean_cache: ActivationCache
    answer_tokens: Int[Tensor, "batch 2"]
    end: Int[Tensor, " batch"]

    def describe(self) -> str:
        cfg = self.model.cfg
        return (
            f"a random model of {cfg.n_layers} layers x {cfg.n_heads} heads (not the toy), "
            f"random tokens {list(self.clean_tokens.shape)}"
        )


OTHER_SIZES = {"n_layers": 4, "n_heads": 5, "n_pos": 23}
"""The second model's sizes: each larger than the toy's (and its batches' widths)."""


@functools.lru_cache(maxsize=1)
def other_model_batch() -> OtherModelBatch:
    """The cached `OtherModelBatch` (three prompts)."""
    from ioi.testing import D_VOCAB, tiny_model

    model = tiny_model(
        seed=CHECK_SEED, n_layers=OTHER_SIZES["n_layers"], n_heads=OTHER_SIZES["n_heads"], n_ctx=32
    )
    generator = torch.Generator().manual_seed(CHECK_SEED)
    clean = torch.randint(0, D_VOCAB, (3, OTHER_SIZES["n_pos"]), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 2:12] = torch.randint(0, D_VOCAB, (3, 10), generator=generator)
    answers = torch.randperm(D_VOCAB, generator=generator)[:6].reshape(3, 2)
    with torch.inference_mode():
        _, cache = model.run_with_cache(clean)
    return OtherModelBatch(
        model=model,
        clean_tokens=clean,
        corrupted_tokens=corrupted,
        clean_cache=fresh_cache(cache),
        answer_tokens=answers,
        end=torch.tensor([OTHER_SIZES["n_pos"] - 1, 15, 19]),
    )


@functools.lru_cache(maxsize=4)
@functools.lru_cache(maxsize=1)
def other_ioi_model() -> HookedTransformer:
    """A random model of `OTHER_SIZES`' layers and heads over the toy's vocabulary and context.

    For exercises that take IOI datasets (built with the toy's tokenizer): they run here too,
    so that sizes written as the toy's fail.
    """
    from ioi.testing import tiny_model

    toy = toy_model().cfg
    return tiny_model(
        seed=CHECK_SEED,
        n_layers=OTHER_SIZES["n_layers"],
        n_heads=OTHER_SIZES["n_heads"],
        d_vocab=toy.d_vocab,
        n_ctx=toy.n_ctx,
    )


@functools.lru_cache(maxsize=1)
def other_processed_model() -> HookedTransformer:
    """`other_model_batch`'s model, processed as the toy ships: LayerNorms folded (LNPre),
    writers and unembedding centred, head matrices refactored.

    For exercises read off the weights alone (copying scores), where a correct answer may
    lean on that processing (skipping ln1 before a centred W_V, ln_final without weights).
    """
    model = copy.deepcopy(other_model_batch().model)
    model.process_weights_(
        fold_ln=True,
        center_writing_weights=True,
        center_unembed=True,
        refactor_factored_attn_matrices=True,
    )
    return model


def _patched_run(b: IOIBatch, run: str) -> ActivationCache:
    tokens, other = (
        (b.ds.toks, b.corrupted_cache) if run == "clean" else (b.abc.toks, b.clean_cache)
    )
    name = "blocks.0.attn.hook_z"

    def from_other(z: Tensor, hook) -> Tensor:
        return other[name].clone()

    with torch.inference_mode(), b.model.hooks(fwd_hooks=[(name, from_other)]):
        _, cache = b.model.run_with_cache(tokens)
    return fresh_cache(cache)


def patched_run_cache(b: IOIBatch, run: str) -> ActivationCache:
    """A fresh copy of the cache of a *patched* run of ``run``'s prompts ("clean" or "corrupted").

    Layer 0's head outputs are taken from the other run, so every activation from layer 0's
    attention output on differs from the plain run's. Checkers pass it as a given cache: a
    function told to use the cache it is given must read it, not re-run the model.
    """
    if run not in ("clean", "corrupted"):
        raise ValueError(f"run must be 'clean' or 'corrupted', not {run!r}")
    return fresh_cache(_patched_run(b, run))


def fresh_cache(cache: ActivationCache) -> ActivationCache:
    """A deep copy of ``cache`` (ordinary tensors, outside inference mode) the learner may change."""
    copied = {name: value.clone() for name, value in cache.items()}
    return ActivationCache(copied, cache.model)


def clear() -> None:
    """Forget the cached model and batches (frees memory; the next check rebuilds them)."""
    ioi_batch.cache_clear()
    toy_model.cache_clear()
    other_model_batch.cache_clear()
    other_ioi_model.cache_clear()
    other_processed_model.cache_clear()
