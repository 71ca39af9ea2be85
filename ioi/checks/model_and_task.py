"""Checkers for section 1, the model and the task: logit difference, IO probability, per-prompt scores."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ioi.checks.core import SCALE_RTOL, AnyOf, exercise, rounding_atol
from ioi.checks.fixtures import ioi_batch
from ioi.dataset import IOIDataset
from ioi.evaluate import prompt_scores
from ioi.metrics import final_logits, io_probability


def reading_mistakes(
    logits: Float[Tensor, "batch pos d_vocab"],
    positions: Int[Tensor, " batch"] | None,
    score: Callable[[Tensor], Tensor],
) -> dict[str, Callable[[], list[Tensor]]]:
    """What reading the predicting logits at the wrong place gives, for any per-prompt score.

    ``score`` maps [batch, d_vocab] predicting logits to the exercise's result. Shared by every
    checker whose exercise reads each prompt's logits at ``positions``.
    """
    n_pos = logits.shape[1]
    if positions is None:  # the last column is asked for; the one before is off by one
        return {"position_off_by_one": lambda: [score(logits[:, -2])]}
    return {
        "same_position_for_all_prompts": lambda: [score(logits[:, int(positions[0])])],
        "ignored_positions": lambda: [score(logits[:, c]) for c in range(n_pos)],
        "position_off_by_one": lambda: [
            score(final_logits(logits, (positions + d).clamp(0, n_pos - 1))) for d in (1, -1)
        ],
    }


# ---- logits_to_ave_logit_diff ------------------------------------------------------------------

LOGIT_DIFF = exercise(
    "logits_to_ave_logit_diff",
    hint="take each prompt's predicting logits (logits[rows, positions], or logits[:, -1] when "
    "positions is None), gather the IO and S columns of answer_tokens, subtract IO - S, and "
    "average unless per_prompt.",
    diagnoses={
        "wrong_sign": "your answer is the expected one times -1: you computed S - IO. "
        "answer_tokens[:, 0] is the correct (IO) token and answer_tokens[:, 1] the incorrect (S) one",
        "ignored_positions": "your answer is the logit difference at one fixed column for every "
        "prompt: you ignored `positions`. Prompts are right-padded, so each prompt predicts at "
        "its own positions[i]",
        "position_off_by_one": "your answer is the logit difference one position away: "
        "positions[i] (word_idx['end']) is already the token *before* the answer, the one "
        "that predicts it",
        "returned_per_prompt": "you returned one value per prompt, but per_prompt=False asks "
        "for their mean",
        "ignored_per_prompt": "you returned the mean, but per_prompt=True asks for the [batch] "
        "values",
        "probabilities": "your answer is a difference of probabilities; the metric is a "
        "difference of logits (no softmax)",
        "absolute_value": "you took the absolute value of each prompt's difference; a prompt "
        "where the model prefers the S must count as negative",
        "median_not_mean": "you took the median over prompts; the metric is their mean",
    },
    shared=("batch_by_batch_indexing", "sum_not_mean", "same_position_for_all_prompts"),
)


def test_logits_to_ave_logit_diff(logits_to_ave_logit_diff_fn: Callable) -> None:
    """Check the learner's ``logits_to_ave_logit_diff(logits, answer_tokens, per_prompt, positions)``."""
    ex, b = LOGIT_DIFF, ioi_batch()
    answers, end = b.answer_tokens, b.end

    def diff_of(final: Tensor, per_prompt: bool) -> Tensor:
        picked = final.gather(1, answers)
        diff = picked[:, 0] - picked[:, 1]
        return diff if per_prompt else diff.mean()

    cases = [
        ("logits_to_ave_logit_diff(logits, answer_tokens, positions=end)", {"positions": end}),
        (
            "logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=True, positions=end)",
            {"per_prompt": True, "positions": end},
        ),
        ("logits_to_ave_logit_diff(logits, answer_tokens)", {}),
        ("logits_to_ave_logit_diff(logits, answer_tokens, per_prompt=True)", {"per_prompt": True}),
    ]
    for call, kwargs in cases:
        per_prompt, positions = kwargs.get("per_prompt", False), kwargs.get("positions")
        logits = b.clean_logits.clone()
        got = ex.call(
            logits_to_ave_logit_diff_fn,
            logits,
            answers.clone(),
            call=f"{call}  [{b.describe()}]",
            read_only={"logits": logits},
            **{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()},
        )
        final = final_logits(b.clean_logits, positions)
        expected = diff_of(final, per_prompt)
        grid = final[:, answers[:, 0]] - final[:, answers[:, 1]]  # [batch, batch]
        mistakes = {
            "wrong_sign": lambda e=expected: -e,
            "returned_per_prompt": lambda f=final: diff_of(f, True),
            "ignored_per_prompt": lambda f=final: diff_of(f, False),
            "sum_not_mean": lambda f=final: diff_of(f, True).sum(),
            "probabilities": lambda f=final, pp=per_prompt: diff_of(f.softmax(-1), pp),
            "absolute_value": lambda f=final, pp=per_prompt: (
                diff_of(f, True).abs()
                if pp
                else [diff_of(f, True).abs().mean(), diff_of(f, False).abs()]
            ),
            "median_not_mean": lambda f=final, pp=per_prompt: (
                None if pp else diff_of(f, True).median()
            ),
            "batch_by_batch_indexing": lambda g=grid: [g, g.mean(), g.mean(0), g.mean(1)],
            **reading_mistakes(b.clean_logits, positions, lambda f, pp=per_prompt: diff_of(f, pp)),
        }
        atol = rounding_atol(expected)  # logits in float16 are a right answer too
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=atol)
    ex.passed(f"{len(cases)} calls, clean logit diff {b.clean_logit_diff:.3f}")


# ---- io_probability ----------------------------------------------------------------------------

IO_PROB = exercise(
    "io_probability",
    hint="softmax the predicting logits over the vocabulary (dim=-1), then pick the column "
    "answer_tokens[:, 0] for each prompt.",
    diagnoses={
        "s_probability": "you returned the probability of the S token; the IO is answer_tokens[:, 0]",
        "no_softmax": "you returned the raw IO logit; a probability needs a softmax first",
        "log_probability": "you returned the log-probability (log_softmax); exponentiate, or use softmax",
        "softmax_wrong_dim": "the probabilities were normalised over the batch (dim=0), over "
        "the positions (dim=1 of [batch, pos, d_vocab]) or over the whole tensor, not over "
        "each prompt's vocabulary (softmax(dim=-1))",
        "not_normalised": "exp() or sigmoid() of the IO logit alone is no probability over the "
        "vocabulary: softmax divides exp(logit) by the sum of exp over all d_vocab tokens "
        "(logits.softmax(dim=-1))",
        "both_answers": "you returned the probabilities of both answers ([batch, 2]); the "
        "exercise asks for the IO's only, column answer_tokens[:, 0]: [batch]",
        "softmax_over_answers": "you normalised over the two answers only (IO vs S); the "
        "probability the model gives the IO is a softmax over the whole vocabulary",
        "ignored_positions": "you read one fixed column for every prompt, not positions[i]",
        "kept_column_dim": "the result is [batch, 1]: the values are right, but gather keeps "
        "the column dimension; squeeze it (`.squeeze(-1)`) to return [batch]",
        "max_probability": "you returned the probability of each prompt's top token, not of "
        "its IO token (answer_tokens[:, 0])",
    },
    shared=("batch_by_batch_indexing",),
)


def test_io_probability(io_probability_fn: Callable) -> None:
    """Check the learner's ``io_probability(logits, answer_tokens, positions=None) -> [batch]``."""
    ex, b = IO_PROB, ioi_batch()
    answers, end = b.answer_tokens, b.end

    def pick(values, column=0):
        return values.gather(1, answers[:, column : column + 1]).squeeze(1)

    for positions in (end, None):
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
        grid = final.softmax(-1)[:, answers[:, 0]]  # [batch, batch]
        over_positions = final_logits(b.clean_logits.softmax(1), positions)
        reading = reading_mistakes(b.clean_logits, positions, lambda f: pick(f.softmax(-1)))
        mistakes = {
            "s_probability": lambda f=final: pick(f.softmax(-1), 1),
            "no_softmax": lambda f=final: pick(f),
            "log_probability": lambda f=final: pick(f.log_softmax(-1)),
            "batch_by_batch_indexing": lambda g=grid: [g, g.mean(0), g.mean(1)],
            "softmax_wrong_dim": lambda f=final, o=over_positions: [
                pick(f.softmax(0)),
                pick(f.exp() / f.exp().sum()),
                pick(f.softmax(-1) / f.softmax(-1).sum()),
                pick(o),
            ],
            "not_normalised": lambda f=final: [pick(f).exp(), pick(f).sigmoid()],
            "both_answers": lambda f=final: [
                f.softmax(-1).gather(1, answers),
                f.softmax(-1).gather(1, answers).T,
            ],
            "kept_column_dim": lambda f=final: pick(f.softmax(-1))[:, None],
            "max_probability": lambda f=final: f.softmax(-1).max(-1).values,
            "softmax_over_answers": lambda f=final: f.gather(1, answers).softmax(-1)[:, 0],
            "ignored_positions": reading.get("ignored_positions", list),
        }
        expected = io_probability(b.clean_logits, answers, positions=positions)
        # a float16 softmax is right too: its error is relative to each probability (an
        # absolute atol would make a tiny S probability equal to a tiny log-probability)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=1e-5, rtol=SCALE_RTOL)
    ex.passed(
        f"mean IO probability {float(io_probability(b.clean_logits, answers, end).mean()):.3f}"
    )


# ---- prompt_scores -----------------------------------------------------------------------------

PROMPT_SCORES = exercise(
    "prompt_scores",
    hint="run the model on ds.toks, read each prompt's logits at ds.word_idx['end'], and "
    "build the four [N] tensors from them.",
    diagnoses={
        "missing_keys": "the dict lacks some of the keys logit_diff, io_over_s, io_top1, io_prob",
        "ignored_positions": "some scores are read at the last column of the padded batch; "
        "read each prompt at ds.word_idx['end']",
        "top1_over_answers": "io_top1 equals io_over_s: you compared the IO only with the S. "
        "io_top1 asks whether the IO beats *every* token in the vocabulary (argmax over d_vocab)",
        "s_probability": "io_prob is the probability of the S; the IO is answer_tokens[:, 0]",
        "log_probability": "io_prob is the log-probability (log_softmax); the probability is "
        "its exponential (softmax)",
        "wrong_sign": "logit_diff is S - IO (and io_over_s follows it): answer_tokens[:, 0] is "
        "the IO, the correct answer, and the difference is IO - S",
        "io_over_s_from_probability": "io_over_s reads the IO's probability against a "
        "threshold (io_prob > 0.5); it asks whether the IO's logit beats the S's (logit_diff > 0)",
        "counted_ties": "io_over_s counts a tie (logit_diff exactly 0) as the IO beating S: "
        "`>=` where 'beats' means strictly greater, logit_diff > 0",
        "io_over_s_without_s": "io_over_s looks at the IO alone (its logit or probability "
        "above 0); it asks whether the IO's logit beats the S's: logit_diff > 0",
        "top1_of_s": "io_top1 says whether the *S* is the top token; it asks about the IO, "
        "answer_tokens[:, 0] (ds.io_tokenIDs)",
        "softmax_wrong_dim": "io_prob was normalised over the batch (softmax(dim=0)) or the "
        "positions, not over each prompt's vocabulary (softmax(dim=-1) of the logits at end)",
        "reduced_to_mean": "a score is one number (its mean over prompts); every score is "
        "per prompt, a tensor of shape [N]",
        "top_k_not_top1": "io_top1 says whether the IO is among the model's top few tokens; "
        "it asks whether the IO *is* the top token (argmax over d_vocab equals the IO)",
    },
    shared=("swapped_fields", "same_position_for_all_prompts"),
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


def _ties_and_swaps(ds: IOIDataset) -> IOIDataset:
    """``ds`` with the IO set to the S on even rows (ties) and IO and S swapped on odd rows.

    No IO beats its S, so ``io_over_s`` is 0 everywhere; an answer that counts ties (``>=``)
    gives 1 on the even rows, one that reads the IO alone (logit or probability above 0) on
    other rows (on the checkers' batch one S logit is negative, so the three differ).
    """
    even = torch.arange(ds.N) % 2 == 0
    swapped = copy.copy(ds)
    swapped.io_tokenIDs = ds.s_tokenIDs.clone()
    swapped.s_tokenIDs = torch.where(even, ds.s_tokenIDs, ds.io_tokenIDs).clone()
    return swapped


def _runner_up(ds: IOIDataset, logits: Float[Tensor, "batch pos d_vocab"]) -> IOIDataset:
    """``ds`` with each IO replaced by the model's second choice at ``end``.

    Then no IO is the top token, but every IO is among the top two: ``io_top1`` must be 0
    everywhere, which an answer counting the top *k* tokens does not give.
    """
    final = final_logits(logits, ds.word_idx["end"])
    decoy = copy.copy(ds)
    decoy.io_tokenIDs = final.topk(2, dim=-1).indices[:, 1].clone()
    return decoy


def _scores_at(logits: Tensor, ds: IOIDataset, positions: Tensor) -> SimpleNamespace:
    """The four scores read at ``positions`` (right or wrong ones)."""
    final = final_logits(logits, positions)
    picked = final.gather(1, ds.answer_tokens)
    diff = picked[:, 0] - picked[:, 1]
    probs = final.softmax(-1)
    return SimpleNamespace(
        logit_diff=diff,
        io_over_s=(diff > 0).float(),
        io_top1=(final.argmax(-1) == ds.answer_tokens[:, 0]).float(),
        io_prob=probs.gather(1, ds.answer_tokens[:, :1])[:, 0],
        s_prob=probs.gather(1, ds.answer_tokens[:, 1:])[:, 0],
        io_logit=picked[:, 0],
        s_top1=(final.argmax(-1) == ds.answer_tokens[:, 1]).float(),
        batch_prob=final.softmax(0).gather(1, ds.answer_tokens[:, :1])[:, 0],
    )


def _in_top(logits: Tensor, ds: IOIDataset, k: int) -> Tensor:
    """Whether each IO is among the top ``k`` tokens at ``end`` (what a top-k answer gives)."""
    top = final_logits(logits, ds.word_idx["end"]).topk(k, dim=-1).indices
    return (top == ds.answer_tokens[:, :1]).any(-1).float()


def _with(record: SimpleNamespace, **fields) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(record), **fields})


def test_prompt_scores(prompt_scores_fn: Callable) -> None:
    """Check the learner's ``prompt_scores(model, ds) -> dict[str, Tensor]`` (four [N] tensors)."""
    ex, b = PROMPT_SCORES, ioi_batch()
    cases = (
        ("ds", b.ds, b.clean_logits),
        (
            "ties_and_swaps  (ds with IO set to S on even rows, IO and S swapped on odd rows)",
            _ties_and_swaps(b.ds),
            b.clean_logits,
        ),
        # runner_up before decoy: on the decoy prompts no IO logit is above 0 and no IO
        # probability above 0.5, so io_over_s read either way looks the same there.
        (
            "runner_up  (ds with each IO id replaced by the model's second choice at end)",
            _runner_up(b.ds, b.clean_logits),
            b.clean_logits,
        ),
        (
            "decoy  (ds with each IO id replaced by the likeliest name absent from the prompt)",
            _decoy(b.ds, b.clean_logits),
            b.clean_logits,
        ),
    )
    for name, ds, logits in cases:
        call = f"prompt_scores(model, {name})  [{b.describe()}]"
        got = ex.call(prompt_scores_fn, b.model, ds, call=call, model=b.model)
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
        end = ds.word_idx["end"]
        right = _scores_at(logits, ds, end)
        expected = SimpleNamespace(**prompt_scores(b.model, ds))

        def one_field_from(wrong: SimpleNamespace, right=right) -> AnyOf:
            """The record with one or all of its fields read the wrong way."""
            return AnyOf(
                [_with(right, **{k: getattr(wrong, k) for k in SCORE_KEYS})]
                + [_with(right, **{k: getattr(wrong, k)}) for k in SCORE_KEYS]
            )

        last = torch.full_like(end, ds.toks.shape[1] - 1)
        mistakes = {
            "top1_over_answers": lambda r=right: _with(r, io_top1=r.io_over_s),
            "s_probability": lambda r=right: _with(r, io_prob=r.s_prob),
            "log_probability": lambda r=right: _with(r, io_prob=r.io_prob.log()),
            "wrong_sign": lambda r=right: AnyOf(
                [
                    _with(r, logit_diff=-r.logit_diff),
                    _with(r, logit_diff=-r.logit_diff, io_over_s=(r.logit_diff < 0).float()),
                ]
            ),
            "io_over_s_from_probability": lambda r=right: _with(
                r, io_over_s=(r.io_prob > 0.5).float()
            ),
            "counted_ties": lambda r=right: _with(r, io_over_s=(r.logit_diff >= 0).float()),
            "io_over_s_without_s": lambda r=right: AnyOf(
                [_with(r, io_over_s=(v > 0).float()) for v in (r.io_logit, r.io_prob)]
            ),
            "top1_of_s": lambda r=right: _with(r, io_top1=r.s_top1),
            "softmax_wrong_dim": lambda r=right: _with(r, io_prob=r.batch_prob),
            "reduced_to_mean": lambda r=right: AnyOf(
                [_with(r, **{k: getattr(r, k).mean()}) for k in SCORE_KEYS]
            ),
            "top_k_not_top1": lambda r=right, lg=logits, d=ds: AnyOf(
                [_with(r, io_top1=_in_top(lg, d, k)) for k in (2, 3, 5)]
            ),
            "same_position_for_all_prompts": lambda e=end, lg=logits, d=ds: one_field_from(
                _scores_at(lg, d, e[:1].expand_as(e))
            ),
            "ignored_positions": lambda lg=logits, d=ds, e=last: one_field_from(
                _scores_at(lg, d, e)
            ),
        }
        ex.expect_record(SimpleNamespace(**got), expected, SCORE_KEYS, call=call, mistakes=mistakes)
    accuracy = float(prompt_scores(b.model, b.ds)["io_top1"].mean())
    ex.passed(f"accuracy {accuracy:.2f} on {b.ds.N} prompts")
