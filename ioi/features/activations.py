"""Collect a model's activations at any hook point over IOI and ABC prompts, for SAE training and
evaluation.

Every token of every prompt (padding masked out), or only chosen word positions (``"S2"``,
``"end"``, ...: `ioi.dataset.WORD_IDX_KEYS`), in chunks of prompts, with a rich progress bar.
An activation of one vector per head (``hook_z``, ``hook_q``, ...) is flattened to
``n_heads * d_head``, as SAELens's hook_z SAEs read it. The result is ``{hook_name: [token, d]}``,
returned or written to a safetensors file.

Example:
    >>> from transformer_lens.utils import get_act_name
    >>> prompts = ioi_and_abc(model, n=50, seed=0)
    >>> acts = collect_activations(model, prompts, [get_act_name("resid_pre", 2)])
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from rich.progress import Progress
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.dataset import WORD_IDX_KEYS, IOIDataset

ALL_POSITIONS = "all"
POSITION_CHOICES = (ALL_POSITIONS, *WORD_IDX_KEYS)
ABC_FLIP = "ABB->XYZ, BAB->XYZ"  # the ABC dataset: three fresh names in the name slots
# Hook points that hold [batch, head, query_pos, key_pos] attention, not a vector per token.
ATTENTION_MAPS = ("hook_pattern", "hook_attn_scores")


def ioi_and_abc(
    model: HookedTransformer, n: int, seed: int = 0, prepend_bos: bool = False
) -> list[IOIDataset]:
    """``n`` mixed IOI prompts for ``model``'s tokenizer and their ABC counterparts (2n prompts)."""
    ioi = IOIDataset(n, "mixed", seed=seed, tokenizer=model, prepend_bos=prepend_bos)
    return [ioi, ioi.gen_flipped_prompts(ABC_FLIP)]


def check_hook_names(model: HookedTransformer, hook_names: Sequence[str]) -> list[str]:
    """``hook_names`` as a list, each a hook point of ``model`` with one vector per token;
    ValueError with close names (or per-token choices, for attention weights) else."""
    if isinstance(hook_names, str):
        hook_names = [hook_names]
    names = list(hook_names)
    if not names:
        raise ValueError("give at least one hook name, e.g. get_act_name('resid_pre', 1)")
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"hook names must be strings, got {name!r} ({type(name).__name__})")
        if name not in model.hook_dict:
            close = difflib.get_close_matches(name, list(model.hook_dict), n=5, cutoff=0.5)
            hint = f"close names: {', '.join(close)}" if close else ""
            raise ValueError(
                f"{name!r} is not a hook point of the model; {hint or 'see model.hook_dict'} "
                "(build names with transformer_lens.utils.get_act_name)"
            )
        if name.rsplit(".", 1)[-1] in ATTENTION_MAPS:
            raise ValueError(
                f"{name!r} holds attention weights [batch, head, query, key], not one vector per "
                "token, so it has no SAE activations; use a per-token hook point such as "
                "hook_z, hook_attn_out, hook_mlp_out or hook_resid_pre/mid/post"
            )
    return names


def check_positions(positions: str | Sequence[str]) -> list[str]:
    """``positions`` as a list of choices from `POSITION_CHOICES`; ValueError listing them else."""
    chosen = [positions] if isinstance(positions, str) else list(positions)
    if not chosen:
        raise ValueError(f"give at least one position; choose from {', '.join(POSITION_CHOICES)}")
    for pos in chosen:
        if pos not in POSITION_CHOICES:
            raise ValueError(
                f"unknown position {pos!r}; choose {ALL_POSITIONS!r} (every token, padding "
                f"masked) or word positions from {', '.join(WORD_IDX_KEYS)}"
            )
    if ALL_POSITIONS in chosen and len(chosen) > 1:
        raise ValueError(f"{ALL_POSITIONS!r} already holds every position; pass it alone")
    return chosen


def iter_activations(
    model: HookedTransformer,
    datasets: IOIDataset | Sequence[IOIDataset],
    hook_names: Sequence[str],
    positions: str | Sequence[str] = ALL_POSITIONS,
    batch_size: int = 64,
    progress: bool = True,
) -> Iterator[dict[str, Float[Tensor, "token d"]]]:
    """Yield one ``{hook_name: [token, d]}`` chunk per ``batch_size`` prompts.

    Args:
        model: the model to read.
        datasets: IOI datasets (e.g. `ioi_and_abc`), read in order.
        hook_names: TransformerLens hook names (``transformer_lens.utils.get_act_name``).
        positions: ``"all"`` (every non-padding token, prompt by prompt) or word positions; for
            several words a chunk holds, per prompt, its vectors in the order given.
        batch_size: prompts per forward pass.
        progress: show a rich progress bar.

    Raises:
        ValueError: an unknown hook name or position, a non-positive batch size.
    """
    names = check_hook_names(model, hook_names)
    chosen = check_positions(positions)
    datasets = [datasets] if isinstance(datasets, IOIDataset) else list(datasets)
    if not datasets or not all(isinstance(d, IOIDataset) for d in datasets):
        raise TypeError("datasets must be an IOIDataset or a non-empty sequence of them")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    total = sum(len(d) for d in datasets)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("activations", total=total)
        for ds in datasets:
            for start in range(0, len(ds), batch_size):
                rows = slice(start, min(start + batch_size, len(ds)))
                yield _chunk(model, ds, rows, names, chosen)
                bar.advance(task, rows.stop - rows.start)


def collect_activations(
    model: HookedTransformer,
    datasets: IOIDataset | Sequence[IOIDataset],
    hook_names: Sequence[str],
    positions: str | Sequence[str] = ALL_POSITIONS,
    batch_size: int = 64,
    progress: bool = True,
    path: str | os.PathLike | None = None,
) -> dict[str, Float[Tensor, "token d"]]:
    """All of `iter_activations`'s chunks concatenated, ``{hook_name: [token, d]}``; also
    written to the safetensors file ``path`` when given (read it back with `load_activations`)."""
    parts: dict[str, list[Tensor]] = {}
    for chunk in iter_activations(model, datasets, hook_names, positions, batch_size, progress):
        for name, acts in chunk.items():
            parts.setdefault(name, []).append(acts)
    out = {name: torch.cat(chunks) for name, chunks in parts.items()}
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous().cpu() for k, v in out.items()}, os.fspath(path))
    return out


def load_activations(path: str | os.PathLike) -> dict[str, Float[Tensor, "token d"]]:
    """Activations written by `collect_activations` (``{hook_name: [token, d]}``)."""
    if not Path(path).is_file():
        raise ValueError(f"no activations file at {os.fspath(path)!r}")
    return load_file(os.fspath(path))


def _chunk(
    model: HookedTransformer, ds: IOIDataset, rows: slice, names: list[str], positions: list[str]
) -> dict[str, Tensor]:
    toks = ds.toks[rows].to(model.cfg.device)  # [batch, pos]
    with torch.no_grad():
        _, cache = model.run_with_cache(
            toks, names_filter=names, stop_at_layer=_last_block(model, names)
        )
    out = {}
    for name in names:
        act = cache[name]
        if act.ndim == 4:  # [batch, pos, head, d_head] -> [batch, pos, head * d_head]
            act = act.flatten(-2)
        out[name] = _select(act, ds, rows, positions)
    return out


def _last_block(model: HookedTransformer, names: list[str]) -> int | None:
    """The layer after the last block the names live in (the forward stops there), or None
    when one lies outside the blocks (``ln_final``, ``unembed``)."""
    layers = []
    for name in names:
        parts = name.split(".")
        if parts[0] != "blocks":
            return None
        layers.append(int(parts[1]))
    return max(layers) + 1


def _select(act: Tensor, ds: IOIDataset, rows: slice, positions: list[str]) -> Tensor:
    if positions == [ALL_POSITIONS]:
        lens = ds.seq_lens[rows].to(act.device)
        mask = torch.arange(act.shape[1], device=act.device)[None, :] < lens[:, None]
        return act[mask]  # [token, d], prompt by prompt
    batch = torch.arange(act.shape[0], device=act.device)
    picked = [act[batch, ds.word_idx[p][rows].to(act.device)] for p in positions]  # [batch, d]
    return torch.stack(picked, dim=1).flatten(0, 1)  # [batch * n_positions, d]
