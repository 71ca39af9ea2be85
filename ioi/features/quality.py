"""How good an SAE is on the IOI task: sparsity, reconstruction, and what splicing it in costs.

Per SAE, over evaluation prompts:

- L0: mean number of active features per token;
- fraction of variance explained: ``1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2``;
- dead features: features active on no evaluation token;
- the IOI logit difference (`ioi.metrics.logits_to_ave_logit_diff` at ``end``) and the
  cross-entropy loss (of the answer at ``end``, or of every next token) with the reconstruction spliced in (`ioi.features.spliced`,
  ``error_term=False``), beside zero-ablation and mean-ablation of the same activation, and
  the fraction recovered, ``(L_ablate - L_sae) / (L_ablate - L_clean)`` (the convention of
  SAELens and the field; for the logit difference the same ratio, ``(ld_sae - ld_ablate) /
  (ld_clean - ld_ablate)``). Both ablations replace the activation at every position; the mean
  is over every real token of the evaluation prompts.

`evaluate_saes` returns one `SAEQuality` per SAE; `quality_table` renders them with rich.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from rich.table import Table
from sae_lens import SAE
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.features.activations import collect_activations
from ioi.features.splice import spliced
from ioi.metrics import logits_to_ave_logit_diff


@dataclass(frozen=True)
class SAEQuality:
    """One SAE's quality on the evaluation prompts (losses in nats per token)."""

    hook_name: str
    d_sae: int
    n_tokens: int
    l0: float
    variance_explained: float
    dead_features: int
    logit_diff_clean: float
    logit_diff_sae: float
    logit_diff_zero: float
    logit_diff_mean: float
    ce_clean: float
    ce_sae: float
    ce_zero: float
    ce_mean: float

    @property
    def dead_fraction(self) -> float:
        return self.dead_features / self.d_sae

    @property
    def logit_diff_recovered_zero(self) -> float:
        return recovered(self.logit_diff_clean, self.logit_diff_sae, self.logit_diff_zero)

    @property
    def logit_diff_recovered_mean(self) -> float:
        return recovered(self.logit_diff_clean, self.logit_diff_sae, self.logit_diff_mean)

    @property
    def ce_recovered_zero(self) -> float:
        return recovered(self.ce_clean, self.ce_sae, self.ce_zero)

    @property
    def ce_recovered_mean(self) -> float:
        return recovered(self.ce_clean, self.ce_sae, self.ce_mean)


# ---- the metrics, on plain tensors --------------------------------------------------------


def l0(feature_acts: Float[Tensor, "token d_sae"]) -> float:
    """Mean number of non-zero features per token."""
    return (feature_acts != 0).float().sum(-1).mean().item()


def variance_explained(x: Float[Tensor, "token d"], x_hat: Float[Tensor, "token d"]) -> float:
    """``1 - sum |x - x_hat|^2 / sum |x - mean(x)|^2``, over all tokens and dimensions."""
    total = (x - x.mean(0)).pow(2).sum()
    if total == 0:
        raise ValueError("the activations do not vary over the tokens: variance explained is 0/0")
    return (1 - (x - x_hat).pow(2).sum() / total).item()


def dead_features(feature_acts: Float[Tensor, "token d_sae"]) -> Bool[Tensor, " d_sae"]:
    """True for each feature that is zero on every token."""
    return (feature_acts != 0).sum(0) == 0


def recovered(clean: float, spliced_value: float, ablated: float) -> float:
    """``(ablated - spliced) / (ablated - clean)``: 1 when splicing costs nothing, 0 when it is
    as bad as the ablation. The same ratio serves a loss and a logit difference."""
    if ablated == clean:
        raise ValueError(
            f"the ablation leaves the value unchanged ({clean}): the fraction recovered is "
            "undefined; evaluate on prompts where the activation matters"
        )
    return (ablated - spliced_value) / (ablated - clean)


def answer_ce_loss(
    logits: Float[Tensor, "batch pos d_vocab"], answers: Tensor, positions: Tensor
) -> Float[Tensor, " batch"]:
    """Cross-entropy of each prompt's answer token at its predicting position (``end``)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    log_probs = logits[rows, positions.to(logits.device)].log_softmax(-1)  # [batch, d_vocab]
    return -log_probs[rows, answers.to(logits.device)]


def token_ce_loss(
    logits: Float[Tensor, "batch pos d_vocab"], toks: Tensor, seq_lens: Tensor
) -> tuple[Float[Tensor, ""], int]:
    """Summed next-token cross-entropy over the real tokens of right-padded prompts, and how
    many tokens it sums."""
    log_probs = logits[:, :-1].log_softmax(-1)
    nll = -log_probs.gather(-1, toks[:, 1:, None].to(logits.device))[..., 0]  # [batch, pos-1]
    # Target position t+1 is a real token when t + 1 < seq_len.
    targets = torch.arange(1, toks.shape[1], device=logits.device)[None]
    mask = targets < seq_lens[:, None].to(logits.device)
    return nll[mask].sum(), int(mask.sum())


# ---- evaluation ----------------------------------------------------------------------------


LOSS_POSITIONS = ("end", "all")


def evaluate_saes(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    dataset: IOIDataset,
    loss_positions: str = "end",
    batch_size: int = 64,
    progress: bool = False,
) -> list[SAEQuality]:
    """Measure each SAE of ``saes`` (one at a time) on the prompts of ``dataset``.

    Args:
        model: the model the SAEs read.
        saes: ``{hook_name: SAE}``.
        dataset: evaluation prompts (use seeds the SAEs were not trained on).
        loss_positions: ``"end"``: the cross-entropy of the answer at ``end`` (the one token
            an IOI-only model such as the toy is trained to predict); ``"all"``: the mean
            next-token loss over every real token (for a language model such as GPT-2).
        batch_size: prompts per forward pass.
        progress: show a progress bar while collecting activations.
    """
    if not isinstance(dataset, IOIDataset):
        raise TypeError(f"dataset must be an IOIDataset, got {type(dataset).__name__}")
    if loss_positions not in LOSS_POSITIONS:
        raise ValueError(
            f"unknown loss_positions {loss_positions!r}; choose one of {', '.join(LOSS_POSITIONS)}"
        )
    acts = collect_activations(model, dataset, list(saes), batch_size=batch_size, progress=progress)
    clean = _scores(model, dataset, [], loss_positions, batch_size)
    results = []
    for name, sae in saes.items():
        x = acts[name].to(sae.device, sae.dtype)
        with torch.no_grad():
            feats = sae.encode(x)
            x_hat = sae.decode(feats)
        mean_act = acts[name].mean(0)
        with spliced(model, {name: sae}, error_term=False):
            with_sae = _scores(model, dataset, [], loss_positions, batch_size)
        zero = _scores(model, dataset, [(name, _zero)], loss_positions, batch_size)
        mean_hook = _replace_with(lambda a, m=mean_act: _broadcast_mean(a, m))
        mean = _scores(model, dataset, [(name, mean_hook)], loss_positions, batch_size)
        results.append(
            SAEQuality(
                hook_name=name,
                d_sae=sae.cfg.d_sae,
                n_tokens=x.shape[0],
                l0=l0(feats),
                variance_explained=variance_explained(x, x_hat),
                dead_features=int(dead_features(feats).sum()),
                logit_diff_clean=clean[0],
                logit_diff_sae=with_sae[0],
                logit_diff_zero=zero[0],
                logit_diff_mean=mean[0],
                ce_clean=clean[1],
                ce_sae=with_sae[1],
                ce_zero=zero[1],
                ce_mean=mean[1],
            )
        )
    return results


def _zero(act: Tensor, hook) -> Tensor:
    return torch.zeros_like(act)


def _broadcast_mean(act: Tensor, mean_act: Tensor) -> Tensor:
    # [d] (or [head * d_head] for a per-head activation) -> the activation's shape
    return mean_act.to(act.device, act.dtype).reshape(act.shape[2:]).expand_as(act)


def _replace_with(fn: Callable[[Tensor], Tensor]) -> Callable:
    def hook(act: Tensor, hook) -> Tensor:
        return fn(act)

    return hook


def _scores(
    model: HookedTransformer,
    dataset: IOIDataset,
    fwd_hooks: list,
    loss_positions: str,
    batch_size: int,
) -> tuple[float, float]:
    """Mean logit difference and mean cross-entropy over ``dataset``, ``batch_size`` prompts at
    a time (the full logits of every prompt at once would be [N, pos, d_vocab])."""
    ld_sum, ce_sum, ce_count = 0.0, 0.0, 0
    end = dataset.word_idx["end"]
    answers = dataset.answer_tokens
    with torch.no_grad(), model.hooks(fwd_hooks=fwd_hooks):
        for start in range(0, len(dataset), batch_size):
            rows = slice(start, start + batch_size)
            logits = model(dataset.toks[rows].to(model.cfg.device))
            ld = logits_to_ave_logit_diff(
                logits, answers[rows], per_prompt=True, positions=end[rows]
            )
            ld_sum += ld.sum().item()
            if loss_positions == "end":
                ce_sum += answer_ce_loss(logits, answers[rows, 0], end[rows]).sum().item()
                ce_count += logits.shape[0]
            else:
                total, count = token_ce_loss(logits, dataset.toks[rows], dataset.seq_lens[rows])
                ce_sum, ce_count = ce_sum + total.item(), ce_count + count
    return ld_sum / len(dataset), ce_sum / ce_count


# ---- rendering ------------------------------------------------------------------------------


def quality_table(results: list[SAEQuality], title: str = "SAE quality") -> Table:
    """A rich table of `evaluate_saes`'s results: one column per SAE, one row per measure."""
    table = Table(title=title)
    table.add_column("measure")
    for r in results:
        table.add_column(r.hook_name, justify="right")
    rows = [
        ("features (d_sae)", lambda r: str(r.d_sae)),
        ("tokens evaluated", lambda r: str(r.n_tokens)),
        ("L0", lambda r: f"{r.l0:.1f}"),
        ("variance explained", lambda r: f"{r.variance_explained:.3f}"),
        ("dead features", lambda r: f"{r.dead_features} ({r.dead_fraction:.1%})"),
        ("logit diff: clean", lambda r: f"{r.logit_diff_clean:.3f}"),
        ("logit diff: SAE spliced", lambda r: f"{r.logit_diff_sae:.3f}"),
        ("logit diff: zero-ablated", lambda r: f"{r.logit_diff_zero:.3f}"),
        ("logit diff: mean-ablated", lambda r: f"{r.logit_diff_mean:.3f}"),
        ("logit diff recovered (vs zero)", lambda r: f"{r.logit_diff_recovered_zero:.1%}"),
        ("logit diff recovered (vs mean)", lambda r: f"{r.logit_diff_recovered_mean:.1%}"),
        ("CE loss: clean", lambda r: f"{r.ce_clean:.4f}"),
        ("CE loss: SAE spliced", lambda r: f"{r.ce_sae:.4f}"),
        ("CE loss: zero-ablated", lambda r: f"{r.ce_zero:.4f}"),
        ("CE loss: mean-ablated", lambda r: f"{r.ce_mean:.4f}"),
        ("CE loss recovered (vs zero)", lambda r: f"{r.ce_recovered_zero:.1%}"),
        ("CE loss recovered (vs mean)", lambda r: f"{r.ce_recovered_mean:.1%}"),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(r) for r in results))
    return table


def main(argv: list[str] | None = None) -> int:
    """``python -m ioi.features.quality [--prompts N] [--seed S]``: the shipped toy SAEs' table."""
    import argparse

    from rich.console import Console

    from ioi.features.pretrained import load_toy_saes
    from ioi.models import load_model

    parser = argparse.ArgumentParser(description="Quality of the toy model's shipped SAEs")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = load_model("toy", device="cpu")
    dataset = IOIDataset(args.prompts, "mixed", seed=args.seed, tokenizer=model)
    results = evaluate_saes(model, load_toy_saes(), dataset)
    title = f"toy SAEs on {args.prompts} IOI prompts (seed {args.seed})"
    Console().print(quality_table(results, title=title))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
