"""Checkers for section 1, the model and the task: logit difference, IO probability, per-prompt scores."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from ioi.checks.core import exercise
from ioi.checks.fixtures import ioi_batch
from ioi.dataset import IOIDataset
from ioi.evaluate import prompt_scores
from ioi.metrics import final_logits, io_probability, logits_to_ave_logit_diff

LOGIT_DIFF = exercise(
    "logits_to_ave_logit_diff",
    hint="take each prompt's predicting logits (logits[rows, positions], or logits[:, -1] when "
    "positions is None), gather the IO and S columns of answer_tokens, subtract IO - S, and "
    "average unless per_prompt.",
    diagnoses={
        "wrong_sign": "your answer is the expected one times -1: you computed S - IO. "
        "answer_tokens[:, 0] is the correct (IO) token and answer_tokens[:, 1] the incorrect (S) one",
        "ignored_positions": "your answer is the logit difference at the last position of the "
        "padded batch: you ignored `positions`. Prompts are right-padded, so for shorter prompts "
        "the last position is padding; each prompt predicts at its own positions[i]",
        "position_off_by_one": "your answer is the logit difference one position later: "
        "positions[i] (word_idx['end']) is already the token *before* the answer, the one "
        "that predicts it",
        "returned_per_prompt": "you returned one value per prompt, but per_prompt=False asks "
        "for their mean",
        "ignored_per_prompt": "you returned the mean, but per_prompt=True asks for the [batch] "
        "values",
        "probabilities": "your answer is a difference of probabilities; the metric is a "
        "difference of logits (no softmax)",
    },
)


def test_logits_to_ave_logit_diff(logits_to_ave_logit_diff_fn: Callable) -> None:
    """Check the learner's ``logits_to_ave_logit_diff(logits, answer_tokens, per_prompt, positions)``."""
    ex, b = LOGIT_DIFF, ioi_batch()
    answers, end = b.answer_tokens, b.end

    def ref(per_prompt=False, positions=None):
        return logits_to_ave_logit_diff(
            b.clean_logits, answers, per_prompt=per_prompt, positions=positions
        )

    def prob_diff(per_prompt, positions):
        probs = final_logits(b.clean_logits, positions).softmax(-1).gather(1, answers)
        diff = probs[:, 0] - probs[:, 1]
        return diff if per_prompt else diff.mean()

    cases = [
        ("logits_to_ave_logit_diff(logits, answer_tokens)", {}),
        ("logits_to_ave_logit_diff(logits, answer_tokens, positions=end)", {"positions": end}),
        (
            "logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=True, positions=end)",
            {"per_prompt": True, "positions": end},
        ),
    ]
    for call, kwargs in cases:
        per_prompt, positions = kwargs.get("per_prompt", False), kwargs.get("positions")
        got = ex.call(
            logits_to_ave_logit_diff_fn,
            b.clean_logits.clone(),
            answers.clone(),
            call=f"{call}  [{b.describe()}]",
            **{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()},
        )
        mistakes = {
            "wrong_sign": lambda pp=per_prompt, pos=positions: -ref(pp, pos),
            "returned_per_prompt": lambda pos=positions: ref(True, pos),
            "ignored_per_prompt": lambda pos=positions: ref(False, pos),
            "probabilities": lambda pp=per_prompt, pos=positions: prob_diff(pp, pos),
        }
        if positions is not None:
            mistakes["ignored_positions"] = lambda pp=per_prompt: ref(pp, None)
            mistakes["position_off_by_one"] = lambda pp=per_prompt, pos=positions: ref(pp, pos + 1)
        ex.expect_tensor(got, ref(per_prompt, positions), call=call, mistakes=mistakes)
    ex.passed(f"{len(cases)} calls, clean logit diff {b.clean_logit_diff:.3f}")


IO_PROB = exercise(
    "io_probability",
    hint="softmax the predicting logits over the vocabulary (dim=-1), then pick the column "
    "answer_tokens[:, 0] for each prompt.",
    diagnoses={
        "s_probability": "you returned the probability of the S token; the IO is answer_tokens[:, 0]",
        "no_softmax": "you returned the raw IO logit; a probability needs a softmax first",
        "log_probability": "you returned the log-probability (log_softmax); exponentiate, or use softmax",
        "softmax_wrong_dim": "the values sum to one across prompts: the softmax ran over the "
        "batch dimension instead of the vocabulary (dim=-1)",
        "ignored_positions": "you read the last position of the padded batch, not positions[i]",
    },
)


def test_io_probability(io_probability_fn: Callable) -> None:
    """Check the learner's ``io_probability(logits, answer_tokens, positions=None) -> [batch]``."""
    ex, b = IO_PROB, ioi_batch()
    answers, end = b.answer_tokens, b.end

    def pick(values, column=0):
        return values.gather(1, answers[:, column : column + 1]).squeeze(1)

    for positions in (None, end):
        call = "io_probability(logits, answer_tokens" + (
            ", positions=end)" if positions is not None else ")"
        )
        got = ex.call(
            io_probability_fn,
            b.clean_logits.clone(),
            answers.clone(),
            positions=None if positions is None else positions.clone(),
            call=f"{call}  [{b.describe()}]",
        )
        final = final_logits(b.clean_logits, positions)
        mistakes = {
            "s_probability": lambda f=final: pick(f.softmax(-1), 1),
            "no_softmax": lambda f=final: pick(f),
            "log_probability": lambda f=final: pick(f.log_softmax(-1)),
            "softmax_wrong_dim": lambda f=final: pick(f.softmax(0)),
        }
        if positions is not None:
            mistakes["ignored_positions"] = lambda: io_probability(b.clean_logits, answers)
        expected = io_probability(b.clean_logits, answers, positions=positions)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-5)
    ex.passed(
        f"mean IO probability {float(io_probability(b.clean_logits, answers, end).mean()):.3f}"
    )


PROMPT_SCORES = exercise(
    "prompt_scores",
    hint="run the model on ds.toks, read each prompt's logits at ds.word_idx['end'], and "
    "build the four [N] tensors from them.",
    diagnoses={
        "missing_keys": "the dict lacks some of the keys logit_diff, io_over_s, io_top1, io_prob",
        "ignored_positions": "the logit differences are read at the last position of the padded "
        "batch; read each prompt at ds.word_idx['end']",
        "top1_over_answers": "io_top1 equals io_over_s: you compared the IO only with the S. "
        "io_top1 asks whether the IO beats *every* token in the vocabulary (argmax over d_vocab)",
    },
)

SCORE_KEYS = ("logit_diff", "io_over_s", "io_top1", "io_prob")


def _decoy(ds: IOIDataset, logits: Float[Tensor, "batch pos d_vocab"]) -> IOIDataset:
    """``ds`` with each IO replaced by the name absent from its prompt that the model likes best.

    That name often beats the (suppressed) S without being the model's top token, so on these
    prompts ``io_top1`` and ``io_over_s`` differ, which real IOI prompts rarely show on the toy.
    """
    final = final_logits(logits, ds.word_idx["end"])  # [batch, d_vocab]
    ids = []
    for row, prompt in zip(final, ds.prompts, strict=True):
        absent = [n for n in ds.names if n not in prompt.slots]
        absent_ids = torch.tensor([ds.tokenizer.encode(" " + n)[0] for n in absent])
        ids.append(int(absent_ids[row[absent_ids].argmax()]))
    decoy = copy.copy(ds)
    decoy.io_tokenIDs = torch.tensor(ids)
    return decoy


def test_prompt_scores(prompt_scores_fn: Callable) -> None:
    """Check the learner's ``prompt_scores(model, ds) -> dict[str, Tensor]`` (four [N] tensors)."""
    ex, b = PROMPT_SCORES, ioi_batch()
    cases = (
        ("ds", b.ds, b.clean_logits),
        (
            "decoy  (ds with each IO id replaced by the likeliest name absent from the prompt)",
            _decoy(b.ds, b.clean_logits),
            b.clean_logits,
        ),
    )
    for name, ds, logits in cases:
        call = f"prompt_scores(model, {name})  [{b.describe()}]"
        got = ex.call(prompt_scores_fn, b.model, ds, call=call, model=b.model)
        expected = prompt_scores(b.model, ds)
        if not isinstance(got, dict):
            ex.fail(
                "wrong_type",
                call=call,
                expected=f"a dict with keys {SCORE_KEYS}",
                got=type(got).__name__,
                explanation="expected a dict of [N] tensors",
                hint=ex.hint,
            )
        missing = [k for k in SCORE_KEYS if k not in got]
        if missing:
            ex.fail(
                "missing_keys",
                call=call,
                expected=f"a dict with keys {SCORE_KEYS}",
                got=f"a dict with keys {tuple(got)}",
                explanation=f"{ex.diagnoses['missing_keys']} (missing: {missing})",
                hint=ex.hint,
            )
        last = logits_to_ave_logit_diff(logits, ds.answer_tokens, per_prompt=True)
        mistakes = {
            "logit_diff": {"ignored_positions": lambda last=last: last},
            "io_top1": {"top1_over_answers": lambda e=expected: e["io_over_s"]},
        }
        for key in SCORE_KEYS:
            ex.expect_tensor(
                got[key], expected[key], call=f"{call}[{key!r}]", mistakes=mistakes.get(key)
            )
    accuracy = float(prompt_scores(b.model, b.ds)["io_top1"].mean())
    ex.passed(f"accuracy {accuracy:.2f} on {b.ds.N} prompts")
