"""Test helpers: tiny models built in code, a plain per-site patching reference, hook counters.

The tests import them (``from ioi.testing import tiny_model``); so can anyone who checks a
patching function of their own. The reference patches one site per ``run_with_hooks`` call with
explicit slicing, written independently of the engine's masks, so the engine is checked against
something simple.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.hook_points import HookPoint

from ioi.patching import PerPrompt, Site
from ioi.tokenizer import gpt2_tokenizer

D_VOCAB = 61
BATCH = 3
N_POS = 6


def tiny_model(seed: int = 0, **overrides) -> HookedTransformer:
    """A 2-layer, 4-head, d_model 32 model with seeded random weights; ``overrides`` go to cfg.

    Weights come from a private generator (norm scales near 1, everything else normal with
    std ~ 1/sqrt(d_model)), so building a model never reseeds the global RNG.
    """
    settings = dict(
        n_layers=2,
        n_heads=4,
        d_model=32,
        d_head=8,
        d_mlp=64,
        d_vocab=D_VOCAB,
        n_ctx=16,
        act_fn="gelu",
        normalization_type="LN",
        device="cpu",
    )
    settings.update(overrides)
    if settings.get("attn_only"):
        settings.pop("d_mlp")
    model = HookedTransformer(HookedTransformerConfig(**settings))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            if name.rsplit(".", 1)[-1] == "w":  # LayerNorm / RMSNorm scale
                param.copy_(1 + 0.1 * noise)
            else:
                param.copy_(noise * 0.2)
    return model.eval()


def token_pair(seed: int = 0, shared_prefix: int = 1) -> tuple[Tensor, Tensor]:
    """Clean and corrupted token batches that agree on their first ``shared_prefix`` positions."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, D_VOCAB, (BATCH, N_POS), generator=gen)
    corrupted = torch.randint(0, D_VOCAB, (BATCH, N_POS), generator=gen)
    corrupted[:, :shared_prefix] = clean[:, :shared_prefix]
    return clean, corrupted


def logit_diff(logits: Tensor) -> Tensor:
    """A metric in the IOI style: mean logit difference of two tokens at the last position."""
    return (logits[:, -1, 3] - logits[:, -1, 7]).mean()


def hooks_left(model: HookedTransformer) -> list[str]:
    """Names of hook points that still carry a forward or backward hook."""
    left = []
    for name, module in model.mod_dict.items():
        if isinstance(module, HookPoint) and (module.fwd_hooks or module.bwd_hooks):
            left.append(name)
        if isinstance(module, HookPoint) and (module._forward_hooks or module._backward_hooks):
            left.append(f"{name} (torch)")
    return left


def site_index(site: Site, batch: int) -> tuple:
    """Explicit index of the patched entries: batch axis first, like the activation."""
    pos = site.pos
    rows = slice(None)
    if pos is None:
        pos_index = slice(None)
    elif isinstance(pos, PerPrompt):
        rows, pos_index = torch.arange(batch), torch.tensor(pos.values)
    elif isinstance(pos, tuple):
        pos_index = list(pos)
    else:
        pos_index = pos
    head = slice(None) if site.head is None else site.head
    if site.component == "pattern":
        src = slice(None) if site.src_pos is None else site.src_pos
        return (rows, head, pos_index, src)
    if site.component in ("z", "q", "k", "v"):
        return (rows, pos_index, head)
    return (rows, pos_index)


def reference_patch(
    model: HookedTransformer,
    tokens: Tensor,
    sites: list[Site],
    metric,
    source_acts,
) -> Tensor:
    """One ``run_with_hooks`` per site; ``source_acts(name, act)`` gives the patched-in values."""
    values = []
    for site in sites:
        index = site_index(site, tokens.shape[0])

        def hook(act: Tensor, hook, index=index) -> Tensor:
            src = source_acts(hook.name, act).expand_as(act)
            patched = act.clone()
            patched[index] = src[index]
            return patched

        with torch.inference_mode():
            logits = model.run_with_hooks(tokens, fwd_hooks=[(site.hook_name, hook)])
            values.append(float(metric(logits)))
    return torch.tensor(values)


def gpt2_vocab_model(
    n_layers: int = 3,
    d_model: int = 32,
    d_head: int = 8,
    d_mlp: int = 64,
    normalization: str = "LNPre",
    attn_only: bool = False,
    seed: int = 0,
    **overrides,
) -> HookedTransformer:
    """A small 4-head model over GPT-2's 50257 ids (so IOI prompts tokenise), seeded weights.

    Weight matrices ~ N(0, 0.4), everything else ~ N(0, 0.1), norm scales near 1; the weights
    come from a private generator, so building a model never touches the global RNG.
    ``overrides`` go to the config (e.g. ``parallel_attn_mlp=True``, ``n_key_value_heads=2``).
    """
    settings = dict(
        n_layers=n_layers,
        n_heads=4,
        d_model=d_model,
        d_head=d_head,
        d_mlp=d_mlp,
        n_ctx=64,
        d_vocab=50257,
        act_fn="gelu_new",
        normalization_type=normalization,
        attn_only=attn_only,
        init_weights=False,
        seed=None,
    )
    cfg = HookedTransformerConfig(**{**settings, **overrides})
    model = HookedTransformer(cfg, tokenizer=gpt2_tokenizer(), move_to_device=False)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.4 if ".W_" in name else 0.1
            offset = 1.0 if name.endswith(".w") else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * scale + offset)
    return model.eval()


def hook_count(model) -> int:
    """Number of forward/backward hooks attached anywhere in ``model``."""
    total = 0
    for module in model.modules():
        total += (
            len(module._forward_hooks)
            + len(module._forward_pre_hooks)
            + len(module._backward_hooks)
        )
        total += len(getattr(module, "fwd_hooks", [])) + len(getattr(module, "bwd_hooks", []))
    return total


def errors_in_a_user_session(setup: str, cases: dict[str, str]) -> dict[str, tuple[str, str]]:
    """Run each expression of ``cases`` in a fresh interpreter without the tests' runtime type
    checking (jaxtyping stops mis-shaped calls before our own checks in tests; a user's session
    has no such hook), after ``setup``. Returns ``case -> (exception class name, message)``;
    ``("none", repr(result))`` when the expression raised nothing.
    """
    import json
    import subprocess
    import sys

    script = (
        "import json, sys\n"
        f"{setup}\n"
        "out = {}\n"
        f"for key, expr in {cases!r}.items():\n"
        "    try:\n"
        "        out[key] = ['none', repr(eval(expr))[:200]]\n"
        "    except Exception as err:\n"
        "        out[key] = [type(err).__name__, str(err)]\n"
        "print('RESULT' + json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    if done.returncode or not lines:
        raise RuntimeError(f"the user session failed:\n{done.stderr[-3000:]}")
    return {key: tuple(value) for key, value in json.loads(lines[-1][6:]).items()}


def assert_user_session_errors(setup: str, cases: dict[str, tuple[str, str, str]]) -> None:
    """`errors_in_a_user_session` for ``case -> (expression, exception class name, regex)``:
    asserts each expression raised that class (``"none"``: raised nothing) with a message (or
    repr of the result) that the regex finds."""
    import re

    got = errors_in_a_user_session(setup, {case: expr for case, (expr, _, _) in cases.items()})
    for case, (_, error, pattern) in cases.items():
        assert got[case][0] == error and re.search(pattern, got[case][1]), (case, got[case])


GPT2_TEST_SHA = "0" * 39 + "1"  # a made-up commit: the snapshot folder's name in the cache


def random_gpt2_dir(
    path, n_embd: int = 48, n_positions: int = 128, seed: int = 0, n_layer: int = 12
) -> Path:
    """Save a randomly initialised GPT-2 (12 layers of 12 heads, vocabulary 50257, ``n_embd``
    wide) to ``path`` in Hugging Face format (config.json + model.safetensors); returns ``path``.

    The architecture of GPT-2 small but narrow, so the real loading path runs in seconds.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    path = Path(path)
    config = GPT2Config(
        n_layer=n_layer, n_head=12, n_embd=n_embd, n_positions=n_positions, vocab_size=50257
    )
    gen = torch.Generator().manual_seed(seed)
    hf = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    hf.save_pretrained(path)
    return path


def hub_cache_with_gpt2(cache: Path, model_dir: Path, repo: str = "gpt2") -> Path:
    """Lay ``model_dir``'s files out in ``cache`` as ``huggingface_hub`` caches the hub's ``repo``.

    ``cache/models--gpt2/blobs/<sha256>`` holds each file, ``snapshots/<commit>/<file>`` links
    to it (relative symlink, as the hub client makes them) and ``refs/main`` names the commit.
    Point ``HF_HUB_CACHE`` at ``cache`` to use it. Returns the snapshot folder.
    """
    import hashlib

    root = Path(cache) / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / GPT2_TEST_SHA
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(GPT2_TEST_SHA)
    for file in sorted(Path(model_dir).iterdir()):
        data = file.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    return snapshot


def toy_in_gpt2_layout_dir(path) -> Path:
    """Save the bundled toy's circuit inside a GPT-2 of GPT-2 small's layout; returns ``path``.

    A Hugging Face GPT-2 (config.json + model.safetensors) of 12 layers of 12 heads and GPT-2's
    vocabulary, ``n_embd`` = 12 x the toy's ``d_head``: layers 0-2 hold the toy's processed
    weights in their first heads and the first ``d_model`` residual dimensions, every other
    head, MLP and dimension is zero (so those blocks pass the residual stream on unchanged).
    LayerNorm over the wider stream is rescaled to match the toy's (exact up to LayerNorm's eps,
    because the toy's writing weights are centred, so the stream's mean stays 0). GPT-2 has no unembedding bias, so the toy's (which
    masks tokens outside its vocabulary) is dropped: logit differences between names stay within
    about 0.4 of the toy's, probabilities do not. Unlike `random_gpt2_dir` this model has a real
    IOI circuit, so circuit discovery on it finds a few heads rather than almost every one.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    from ioi.toy import load_toy

    path = Path(path)
    toy = load_toy(device=torch.device("cpu"))
    c = toy.cfg
    d, dh, nh = c.d_model, c.d_head, c.n_heads
    n_embd = 12 * dh
    config = GPT2Config(
        n_layer=12,
        n_head=12,
        n_embd=n_embd,
        n_positions=c.n_ctx,
        vocab_size=c.d_vocab,
        n_inner=c.d_mlp,
        activation_function=c.act_fn,
        tie_word_embeddings=False,
    )
    hf = GPT2LMHeadModel(config).eval()
    ln_scale = (d / n_embd) ** 0.5  # LN over n_embd dims of a vector living in the first d
    with torch.no_grad():
        for param in hf.parameters():
            param.zero_()
        gpt = hf.transformer
        gpt.wte.weight[:, :d] = toy.embed.W_E
        gpt.wpe.weight[:, :d] = toy.pos_embed.W_pos
        for norm in [gpt.ln_f] + [ln for block in gpt.h for ln in (block.ln_1, block.ln_2)]:
            norm.weight[:] = 1.0  # blocks past the toy's read nothing, so any scale would do
            norm.weight[:d] = ln_scale
        hf.lm_head.weight[:, :d] = toy.unembed.W_U.T
        for block, toy_block in zip(gpt.h, toy.blocks, strict=False):  # the toy is shallower
            attn, mlp = toy_block.attn, toy_block.mlp
            for head in range(nh):
                cols = slice(head * dh, (head + 1) * dh)
                for part, (W, bias) in enumerate(
                    ((attn.W_Q, attn.b_Q), (attn.W_K, attn.b_K), (attn.W_V, attn.b_V))
                ):
                    qkv = slice(part * n_embd + head * dh, part * n_embd + (head + 1) * dh)
                    block.attn.c_attn.weight[:d, qkv] = W[head]
                    block.attn.c_attn.bias[qkv] = bias[head]
                block.attn.c_proj.weight[cols, :d] = attn.W_O[head]
            block.attn.c_proj.bias[:d] = attn.b_O
            block.mlp.c_fc.weight[:d] = mlp.W_in
            block.mlp.c_fc.bias[:] = mlp.b_in
            block.mlp.c_proj.weight[:, :d] = mlp.W_out
            block.mlp.c_proj.bias[:d] = mlp.b_out
    hf.save_pretrained(path)
    return path


TEST_NAMES = (
    "Mary", "John", "Michael", "Jessica", "Daniel", "Sarah", "James", "Laura", "Kevin", "Emily",
    "Thomas", "Rachel",
)  # fmt: skip
"""The names `ioi_tokenizer` keeps whole by default: a few of the paper's, so a dataset drops the rest."""


def ioi_tokenizer(names=TEST_NAMES, vocab_size: int = 600, seed: int = 0):
    """A small byte-level BPE tokenizer, trained offline on IOI sentences that use ``names``.

    Every template word, place, object and name in ``names`` ends up one token with its leading
    space; the paper's other names are split, as another model's tokenizer splits some. The
    one special token ``<|endoftext|>`` is BOS, EOS and pad. Training is deterministic.
    """
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from ioi.templates import ABBA_TEMPLATES, BABA_TEMPLATES, OBJECTS, PLACES

    rng = random.Random(seed)
    corpus = []
    for template in BABA_TEMPLATES + ABBA_TEMPLATES:
        for _ in range(10):
            a, b = rng.sample(list(names), 2)
            text = template.replace("[A]", a).replace("[B]", b)
            text = text.replace("[PLACE]", rng.choice(PLACES)).replace(
                "[OBJECT]", rng.choice(OBJECTS)
            )
            corpus.append(text)
    corpus += [" " + word for word in (*names, *PLACES, *OBJECTS)] * 5  # each one token
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer)
    eos = "<|endoftext|>"
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos
    )


def random_hf_dir(
    path, arch: str = "llama", seed: int = 0, tokenizer=None, d_model: int = 64
) -> Path:
    """Save a randomly initialised 2-layer Hugging Face model and its tokenizer to ``path``.

    ``arch`` is ``"llama"`` (grouped-query attention with 4 query and 2 key/value heads, rotary
    embeddings, RMSNorm, gated SiLU MLP, untied unembedding) or ``"neox"`` (GPT-NeoX: LayerNorm,
    rotary on a quarter of each head, attention and MLP in parallel). The vocabulary is the
    tokenizer's (default `ioi_tokenizer`). Weights: norm scales 1 + N(0, 0.1), the rest
    N(0, 0.1), from a private generator. Returns ``path``.
    """
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer if tokenizer is not None else ioi_tokenizer()
    shared = dict(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if arch == "llama":
        config = LlamaConfig(**shared, num_key_value_heads=2, tie_word_embeddings=False)
        hf = LlamaForCausalLM(config)
    elif arch == "neox":
        hf = GPTNeoXForCausalLM(GPTNeoXConfig(**shared, rotary_pct=0.25))
    else:
        raise ValueError(f"unknown arch {arch!r}; choose 'llama' or 'neox'")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            offset = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(offset + 0.1 * torch.randn(p.shape, generator=gen))
    path = Path(path)
    hf.eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
