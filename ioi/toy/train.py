"""Train the bundled IOI model: ``python -m ioi.toy.train [--steps N] [--seed S] [--out PATH]``.

The model learns one thing: given an IOI prompt, put the indirect object's logit on top at the
``end`` position. Prompts come from ``IOIDataset`` with training seeds that evaluation never
uses, half with a BOS token and half without, BABA and ABBA alike. Everything random flows from
``--seed`` through local generators, so a run is reproducible on the same torch build.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.toy import ARCH, WEIGHTS_PATH, compact_config, toy_vocab

TRAIN_SEED_OFFSET = 10_000  # datasets for training use seeds >= this; evaluation uses small seeds


def remap_table(vocab_ids: tuple[int, ...]) -> torch.Tensor:
    """GPT-2 id -> compact id (unused ids map to 0, which is ``<|endoftext|>``'s neighbour)."""
    table = torch.zeros(50257, dtype=torch.long)
    table[torch.tensor(vocab_ids)] = torch.arange(len(vocab_ids))
    return table


def build_pool(n: int, seed: int) -> list[IOIDataset]:
    """Training prompts: mixed templates, with and without BOS."""
    return [
        IOIDataset(N=n, prompt_type="mixed", seed=TRAIN_SEED_OFFSET + 2 * seed, prepend_bos=True),
        IOIDataset(
            N=n, prompt_type="mixed", seed=TRAIN_SEED_OFFSET + 2 * seed + 1, prepend_bos=False
        ),
    ]


def init_weights(model: HookedTransformer, generator: torch.Generator) -> None:
    """GPT-2-style init (normal, std 0.02; zero biases; unit LN gains) from a local generator."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.fill_(1.0)
            elif name.split(".")[-1].startswith("b"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=generator)


def batch_loss(model, ds: IOIDataset, rows: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    toks = table[ds.toks[rows]]
    logits = model(toks)  # [batch, pos, d_vocab_compact]
    end_logits = logits[torch.arange(len(rows)), ds.word_idx["end"][rows]]
    return F.cross_entropy(end_logits, table[ds.io_tokenIDs[rows]])


@torch.no_grad()
def evaluate(model, table: torch.Tensor, seed: int) -> dict[str, float]:
    """Accuracy and mean logit difference on fresh BABA and ABBA prompts."""
    out = {}
    for prompt_type in ("BABA", "ABBA"):
        ds = IOIDataset(N=500, prompt_type=prompt_type, seed=seed)
        logits = model(table[ds.toks])[torch.arange(500), ds.word_idx["end"]]
        io, s = logits.gather(1, table[ds.answer_tokens]).unbind(1)
        out[f"{prompt_type}_acc"] = (io > s).float().mean().item()
        out[f"{prompt_type}_logit_diff"] = (io - s).mean().item()
    return out


def train(steps: int, seed: int, batch: int, lr: float, pool: int) -> HookedTransformer:
    vocab_ids = toy_vocab()
    table = remap_table(vocab_ids)
    model = HookedTransformer(compact_config(len(vocab_ids)), move_to_device=False)
    gen = torch.Generator().manual_seed(seed)
    init_weights(model, gen)
    datasets = build_pool(pool, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    for step in range(steps):
        ds = datasets[step % len(datasets)]
        rows = torch.randint(0, ds.N, (batch,), generator=gen)
        loss = batch_loss(model, ds, rows, table)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            print(
                f"step {step:5d}  loss {loss.item():.4f}  {time.time() - start:6.1f}s", flush=True
            )
    model.eval()
    print("held-out (seed 1):", json.dumps(evaluate(model, table, seed=1)), flush=True)
    return model


def save_processed(model: HookedTransformer, out: Path) -> None:
    """Fold LayerNorm, centre weights, refactor attention (the IOI literature's settings), save."""
    vocab_ids = torch.tensor(toy_vocab())
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    processed = HookedTransformer(compact_config(len(vocab_ids)), move_to_device=False)
    processed.load_and_process_state_dict(
        state,
        fold_ln=True,
        center_writing_weights=True,
        center_unembed=True,
        fold_value_biases=True,
        refactor_factored_attn_matrices=True,
    )
    tensors = {
        k: v.contiguous()
        for k, v in processed.state_dict().items()
        if not k.endswith((".IGNORE", ".mask")) and v.is_floating_point()
    }
    tensors["vocab_ids"] = vocab_ids.to(torch.int32)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out), metadata={"format": "ioi-toy-compact-v1"})
    arch = {**ARCH, "normalization_type": processed.cfg.normalization_type}
    meta = {
        "processed_arch": arch,
        "vocab_size_compact": len(vocab_ids),
        "format": "ioi-toy-compact-v1",
    }
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--pool", type=int, default=20_000, help="prompts per training dataset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = train(args.steps, args.seed, args.batch, args.lr, args.pool)
    save_processed(model, args.out)
    print(f"saved {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
