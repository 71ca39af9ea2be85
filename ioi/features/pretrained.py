"""Load SAEs: the ones shipped for the bundled toy model, a local directory of SAELens SAEs, or a
published release such as GPT-2 small's residual-stream SAEs (``"gpt2-small-res-jb"``).

A release is looked up in SAELens's directory of pretrained SAEs and loaded with
``SAE.from_pretrained`` from the local Hugging Face cache, or from the hub if it can be reached.
When neither holds, `load_pretrained_saes` fails at once with `ioi.models.ModelUnavailableError`
(the error `ioi.models.load_model` raises for missing weights), saying how to get them.

GPT-2 small's residual SAEs were trained on TransformerLens's GPT-2 with centred writing
weights; the processing of `ioi.models.load_model` (LayerNorm folded, writing weights centred,
value biases folded, attention refactored) leaves the residual stream the same, so they splice
into ``load_model("gpt2-small")`` as they are.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from pathlib import Path

from sae_lens import SAE

from ioi.device import resolve_device
from ioi.models import ModelUnavailableError, _hub_reachable

SAE_CONFIG_FILE = "cfg.json"  # SAELens's config file in an SAE's folder
TOY_SAE_DIR = Path(__file__).resolve().parent.parent / "data" / "saes"


def load_toy_saes(device: str = "auto") -> dict[str, SAE]:
    """The SAEs shipped for the bundled toy model, ``{hook_name: SAE}``, on ``device`` (``"auto"``
    picks the device `ioi.models.load_model` does); ``python -m ioi.features train`` reproduces
    them."""
    return load_saes_dir(TOY_SAE_DIR, device=device)


def load_saes_dir(path: str | os.PathLike, device: str = "auto") -> dict[str, SAE]:
    """SAELens SAEs saved on disk (``sae.save_model``): ``path`` holds one SAE (its ``cfg.json``)
    or one folder per SAE. Keyed by each SAE's recorded hook name, else its folder's name."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"no directory at {os.fspath(path)!r}")
    folders = (
        [root]
        if (root / SAE_CONFIG_FILE).is_file()
        else sorted(p for p in root.iterdir() if (p / SAE_CONFIG_FILE).is_file())
    )
    if not folders:
        raise ValueError(
            f"{os.fspath(path)!r} holds no SAE: expected {SAE_CONFIG_FILE} and the weights "
            "(sae.save_model writes them) in it or in its sub-folders"
        )
    saes = {}
    for folder in folders:
        sae = SAE.load_from_disk(folder, device=str(resolve_device(device))).eval()
        saes[sae.cfg.metadata.hook_name or folder.name] = sae
    return saes


def load_pretrained_saes(
    release: str | os.PathLike = "gpt2-small-res-jb",
    sae_ids: Sequence[str] | None = None,
    device: str = "auto",
) -> dict[str, SAE]:
    """Published SAEs from a SAELens release, or SAEs in a local directory, ``{hook_name: SAE}``.

    Args:
        release: a SAELens release id (e.g. ``"gpt2-small-res-jb"``) or a local directory
            (`load_saes_dir`).
        sae_ids: which SAEs of the release (for ``gpt2-small-res-jb`` the hook names,
            ``"blocks.8.hook_resid_pre"``, ...); None for all of them.
        device: where to load them: ``"auto"`` (cuda, then mps, then cpu, as
            `ioi.models.load_model` chooses), ``"cpu"``, ``"cuda"`` or ``"mps"``.

    Raises:
        ValueError: an unknown release or SAE id (the valid ones listed).
        ModelUnavailableError: the SAEs are not cached and the hub cannot be reached.
    """
    if Path(release).is_dir():
        return load_saes_dir(release, device=device)
    release = os.fspath(release)
    if isinstance(release, str) and (os.sep in release or release.startswith(("~", "."))):
        raise ValueError(
            f"no directory at {release!r}: give a directory of SAEs saved by SAELens, or a "
            "SAELens release id such as 'gpt2-small-res-jb'"
        )
    lookup = _release(release)
    ids = list(lookup.saes_map) if sae_ids is None else list(sae_ids)
    unknown = [i for i in ids if i not in lookup.saes_map]
    if unknown:
        raise ValueError(
            f"release {release!r} has no SAE {unknown[0]!r}; choose from {', '.join(lookup.saes_map)}"
        )
    missing = [i for i in ids if not _cached(lookup.repo_id, lookup.saes_map[i])]
    if missing and not _hub_reachable():
        raise ModelUnavailableError(
            f"the SAEs {missing} of release {release!r} (hub repo {lookup.repo_id}) are not in the "
            "local Hugging Face cache and the hub cannot be reached. Run "
            f'`python -c "from ioi.features import load_pretrained_saes; '
            f'load_pretrained_saes({release!r})"` once on a machine with internet access (it '
            "fills ~/.cache/huggingface), or pass a local directory of SAEs saved by SAELens; "
            "for the toy model use ioi.features.load_toy_saes()"
        )
    saes = {}
    for sae_id in ids:
        sae = SAE.from_pretrained(release, sae_id, device=str(resolve_device(device))).eval()
        saes[sae.cfg.metadata.hook_name or sae_id] = sae
    return saes


def _release(release: str):
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = difflib.get_close_matches(release, list(directory), n=5, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ValueError(
            f"unknown SAE release {release!r}{hint}: give a SAELens release id such as "
            "'gpt2-small-res-jb' (see sae_lens.loading.pretrained_saes_directory) or a local "
            "directory of SAEs"
        )
    return directory[release]


def _cached(repo_id: str, folder: str) -> bool:
    """True if the SAE's config is in the local Hugging Face cache (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, f"{folder}/{SAE_CONFIG_FILE}"), str)
