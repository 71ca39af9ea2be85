"""How well a model does IOI: logit difference, accuracy and IO probability, overall and per template."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.metrics import final_logits, io_probability, logits_to_ave_logit_diff


@torch.inference_mode()
def run_logits(
    model: HookedTransformer, toks: Int[Tensor, "batch pos"], batch_size: int = 64
) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits for ``toks`` in batches, on the model's device, returned on the CPU."""
    device = model.cfg.device
    chunks = [
        model(toks[i : i + batch_size].to(device)).float().cpu()
        for i in range(0, len(toks), batch_size)
    ]
    return torch.cat(chunks)


def prompt_scores(model: HookedTransformer, ds: IOIDataset) -> dict[str, Tensor]:
    """Per-prompt logit difference (IO - S), correctness and IO probability at ``end``."""
    logits = run_logits(model, ds.toks)
    end = ds.word_idx["end"]
    diff = logits_to_ave_logit_diff(logits, ds.answer_tokens, per_prompt=True, positions=end)
    top = final_logits(logits, end).argmax(-1)
    return {
        "logit_diff": diff,
        "io_over_s": (diff > 0).float(),
        "io_top1": (top == ds.io_tokenIDs).float(),
        "io_prob": io_probability(logits, ds.answer_tokens, positions=end),
    }


def summarise(scores: dict[str, Tensor], rows: Tensor | None = None) -> dict[str, float]:
    """Means of each score over ``rows`` (all prompts by default)."""
    return {k: float(v[rows].mean() if rows is not None else v.mean()) for k, v in scores.items()}


def evaluate_ioi(model: HookedTransformer, ds: IOIDataset, abc: IOIDataset | None = None) -> dict:
    """Overall, per-family (BABA/ABBA) and per-template performance; ABC baseline if given."""
    scores = prompt_scores(model, ds)
    n_baba = len(ds.templates) // 2
    out: dict = {"n_prompts": ds.N, "overall": summarise(scores)}
    for family, mask in (("BABA", ds.template_idx < n_baba), ("ABBA", ds.template_idx >= n_baba)):
        if mask.any():
            out[family] = summarise(scores, mask)
    out["per_template"] = [
        {
            "template_idx": int(ds.template_idx[g[0]]),
            "family": "BABA" if int(ds.template_idx[g[0]]) < n_baba else "ABBA",
            "template": ds.templates[int(ds.template_idx[g[0]])],
            "n": len(g),
            **summarise(scores, g),
        }
        for g in ds.groups
    ]
    if abc is not None:
        # The ABC prompts are scored against the IOI answers: near zero if the model needs the
        # repeated name to decide.
        abc_logits = run_logits(model, abc.toks)
        out["abc_logit_diff"] = float(
            logits_to_ave_logit_diff(abc_logits, ds.answer_tokens, positions=ds.word_idx["end"])
        )
    return out
