"""``ioi replicate``: run the IOI analysis on one model and write what it found."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset
from ioi.evaluate import evaluate_ioi, reference_figures
from ioi.models import GPT2_ALIASES, load_model

ABC_FLIP = "ABB->XYZ, BAB->XYZ"


def compare_with_reference(perf: dict) -> list[dict]:
    """Our GPT-2 small figures beside the published ones."""
    paper = reference_figures()["paper"]
    pairs = [
        (
            "mean logit diff (IO - S)",
            perf["overall"]["logit_diff"],
            paper["mean_logit_diff_ioi_distribution"],
        ),
        ("fraction IO > S", perf["overall"]["io_over_s"], paper["io_over_s_fraction"]),
        ("mean P(IO)", perf["overall"]["io_prob"], paper["mean_io_probability"]),
    ]
    return [{"figure": f, "ours": o, "published": p, "difference": o - p} for f, o, p in pairs]


def replicate(
    model: HookedTransformer | str,
    n: int = 200,
    seed: int = 1,
    out: Path | str = "ioi_report",
    console: Console | None = None,
    model_name: str | None = None,
) -> dict:
    """Build the IOI and ABC datasets, measure the model, write ``results.json`` to ``out``.

    Args:
        model: a loaded model, or a name for ``load_model`` (then ``model_name`` defaults to it).
    """
    console = console or Console(quiet=True)
    if isinstance(model, str):
        model_name = model_name or model
        model = load_model(model)
    model_name = model_name or model.cfg.model_name
    ds = IOIDataset(N=n, prompt_type="mixed", seed=seed, tokenizer=model)
    abc = ds.gen_flipped_prompts(ABC_FLIP)
    with console.status("measuring IOI performance"):
        perf = evaluate_ioi(model, ds, abc)
    results = {
        "model": str(model_name),
        "device": str(model.cfg.device),
        "dataset": {"N": n, "seed": seed, "prompt_type": "mixed", "abc_flip": ABC_FLIP},
        "performance": perf,
    }
    if str(model_name) in GPT2_ALIASES:
        results["reference"] = compare_with_reference(perf)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
