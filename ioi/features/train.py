"""Train SAEs on the IOI model's activations with SAELens's own trainer (``SAETrainer``).

Our activation buffer (`ioi.features.activations`) feeds the trainer through a seeded, shuffling
batch iterator; nothing goes to a hub or to wandb. Two architectures: ``"topk"`` (TopK, Gao et
al. 2024) and ``"standard"`` (ReLU with an L1 penalty). The same seed gives the same weights: the
SAE's initialisation draws from torch's global RNG inside SAELens, so it runs under
``torch.random.fork_rng`` seeded by ``seed``, and the caller's RNG state is left as it was.

``python -m ioi.features train`` reproduces the SAEs shipped for the bundled toy model
(`TOY_SPECS`, written to ``ioi/data/saes/``; `ioi.features.pretrained.load_toy_saes` loads
them): TopK SAEs of 256 features, k=16, at the residual stream entering layers 1 and 2, trained on
every token of 6,000 IOI and ABC prompts. Measured at commit a7b2af5 on the project's 2-core CPU
machine (shared with other jobs, load average ~6): 92 s wall for the whole command, and the
weights it wrote were byte-identical to the shipped ones (``cmp`` of the safetensors files).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from jaxtyping import Float
from sae_lens import (
    SAE,
    SAETrainer,
    StandardTrainingSAE,
    StandardTrainingSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.config import LoggingConfig, SAETrainerConfig
from sae_lens.saes.sae import SAEMetadata
from torch import Tensor

from ioi.features.pretrained import TOY_SAE_DIR
from ioi.statistics import check_seed

ARCHITECTURES = ("topk", "standard")


@dataclass(frozen=True)
class SAESpec:
    """How to train one SAE.

    Args:
        architecture: ``"topk"`` or ``"standard"`` (ReLU + L1).
        d_sae: number of features.
        k: active features per token (TopK only).
        l1_coefficient: sparsity penalty (standard only).
        steps: optimiser steps.
        batch_size: activation vectors per step.
        lr: Adam learning rate.
    """

    architecture: str = "topk"
    d_sae: int = 256
    k: int = 16
    l1_coefficient: float = 1.0
    steps: int = 2000
    batch_size: int = 512
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"unknown architecture {self.architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
            )
        for field_name in ("d_sae", "k", "steps", "batch_size"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field_name} must be a positive int, got {value!r}")
        if self.architecture == "topk" and self.k > self.d_sae:
            raise ValueError(f"k={self.k} is more than d_sae={self.d_sae}: choose k <= d_sae")
        for field_name in ("l1_coefficient", "lr"):
            value = getattr(self, field_name)
            if not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{field_name} must be a positive number, got {value!r}")


def activation_batches(
    acts: Float[Tensor, "token d"], batch_size: int, seed: int
) -> Iterator[Float[Tensor, "batch d"]]:
    """Endless batches of rows of ``acts``, each epoch in a fresh order from a seeded generator."""
    if acts.ndim != 2 or acts.shape[0] < batch_size:
        raise ValueError(
            f"need a [token, d] tensor of at least batch_size={batch_size} rows, got shape "
            f"{tuple(acts.shape)}: collect more prompts or lower batch_size"
        )
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for start in range(0, acts.shape[0] - batch_size + 1, batch_size):
            yield acts[order[start : start + batch_size]]


def train_sae(
    acts: Float[Tensor, "token d"],
    spec: SAESpec = SAESpec(),
    seed: int = 0,
    hook_name: str | None = None,
    model_name: str | None = None,
) -> SAE:
    """Train one SAE on ``acts`` with SAELens's ``SAETrainer``; returns the inference SAE.

    Args:
        acts: training activations, e.g. from `ioi.features.collect_activations`.
        spec: architecture and hyperparameters.
        seed: seeds the initialisation and the batch order.
        hook_name, model_name: recorded in the SAE's metadata (``sae.cfg.metadata``).
    """
    if not isinstance(spec, SAESpec):
        raise TypeError(f"spec must be an SAESpec, got {type(spec).__name__}")
    check_seed(seed)
    if not bool(torch.isfinite(acts).all()):
        raise ValueError(
            "acts hold NaN or infinite values: an SAE trained on them would be meaningless; "
            "collect activations from a model whose forward pass is finite"
        )
    acts = acts.detach().float().cpu()
    metadata = SAEMetadata(hook_name=hook_name, model_name=model_name)
    common = dict(d_in=acts.shape[1], d_sae=spec.d_sae, device="cpu", metadata=metadata)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=spec.steps * spec.batch_size,
        train_batch_size_samples=spec.batch_size,
        lr=spec.lr,
        lr_end=spec.lr,
        device="cpu",
        logger=LoggingConfig(log_to_wandb=False),
        dead_feature_window=max(spec.steps // 4, 1),
        feature_sampling_window=max(spec.steps, 1),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if spec.architecture == "topk":
            sae = TopKTrainingSAE(TopKTrainingSAEConfig(k=spec.k, **common))
        else:
            sae = StandardTrainingSAE(
                StandardTrainingSAEConfig(l1_coefficient=spec.l1_coefficient, **common)
            )
        batches = activation_batches(acts, spec.batch_size, seed)
        trained = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=batches).fit()
    return _inference_sae(trained)


def _inference_sae(sae) -> SAE:
    """The trained SAE in its inference class, through SAELens's own save/load path."""
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp).eval()


def train_saes(
    acts: Mapping[str, Float[Tensor, "token d"]],
    specs: Mapping[str, SAESpec],
    seed: int = 0,
    model_name: str | None = None,
) -> dict[str, SAE]:
    """One SAE per hook name of ``specs``, trained on ``acts[hook_name]``, seed ``seed + i``."""
    missing = [name for name in specs if name not in acts]
    if missing:
        raise ValueError(f"no activations for {missing}; collected: {sorted(acts)}")
    return {
        name: train_sae(acts[name], spec, seed=seed + i, hook_name=name, model_name=model_name)
        for i, (name, spec) in enumerate(specs.items())
    }


def save_saes(saes: Mapping[str, SAE], directory: str | os.PathLike) -> None:
    """Write each SAE in SAELens's format (``cfg.json``, ``sae_weights.safetensors``) under
    ``directory/<hook_name>/``; `ioi.features.pretrained.load_saes_dir` reads them back."""
    for name, sae in saes.items():
        sae.save_model(Path(directory) / name)


# ---- the toy model's shipped SAEs -----------------------------------------------------------

# The toy's IOI circuit reads names in layer 1 (S-inhibition) and moves them in layer 2 (name
# movers): the residual stream entering those layers carries what the circuit works with.
TOY_HOOKS = ("blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre")
TOY_SPEC = SAESpec(architecture="topk", d_sae=256, k=16, steps=1500, batch_size=512, lr=1e-3)
TOY_SPECS = {name: TOY_SPEC for name in TOY_HOOKS}
TOY_TRAIN_PROMPTS = 1500  # IOI prompts (and as many ABC prompts) for the training activations
TOY_TRAIN_SEED = 1000  # dataset seed: evaluation prompts use small seeds


def train_toy_saes(
    n_prompts: int = TOY_TRAIN_PROMPTS, specs: Mapping[str, SAESpec] = TOY_SPECS, seed: int = 0
) -> dict[str, SAE]:
    """Train the toy model's SAEs from scratch (every token of IOI and ABC prompts, with and
    without BOS)."""
    from ioi.features.activations import collect_activations, ioi_and_abc
    from ioi.models import load_model

    model = load_model("toy", device="cpu")
    datasets = ioi_and_abc(model, n_prompts, seed=TOY_TRAIN_SEED) + ioi_and_abc(
        model, n_prompts, seed=TOY_TRAIN_SEED + 1, prepend_bos=True
    )
    acts = collect_activations(model, datasets, list(specs), batch_size=128)
    return train_saes(acts, specs, seed=seed, model_name="ioi-toy")


def main(argv: list[str] | None = None) -> int:
    """``python -m ioi.features train``: retrain the shipped toy SAEs into ``--out``."""
    parser = argparse.ArgumentParser(
        prog="python -m ioi.features train", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=TOY_SAE_DIR)
    parser.add_argument("--prompts", type=int, default=TOY_TRAIN_PROMPTS)
    parser.add_argument("--steps", type=int, default=TOY_SPEC.steps)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # Many tiny steps: one thread is fastest (several fight over the cores of a busy machine).
    torch.set_num_threads(1)
    start = time.perf_counter()
    specs = {name: replace(spec, steps=args.steps) for name, spec in TOY_SPECS.items()}
    saes = train_toy_saes(args.prompts, specs, seed=args.seed)
    save_saes(saes, args.out)
    print(f"wrote {len(saes)} SAEs to {args.out} in {time.perf_counter() - start:.0f} s")
    return 0
