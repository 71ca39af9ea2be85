# %% [markdown]
# # 1. The model and the task
#
# Read this sentence and finish it:
#
# > After John and Mary went to the store, John gave a bottle of milk to ...
#
# You said *Mary*. So does GPT-2 small, and Wang et al. (2022), *Interpretability in the
# Wild*, reverse-engineered how: a circuit of 26 attention heads in 7 classes. This course
# rebuilds their analysis method by method. In this first section you meet the task, the
# model, and the one number every later section measures: the **logit difference**.
#
# **Vocabulary.** The sentence names two people. The one mentioned once is the **indirect
# object (IO)**, here Mary, and it is the answer. The one mentioned twice is the **subject
# (S)**; its first mention is **S1**, its second **S2**. The token right before the answer
# (here `to`) is **end**: the model must predict the IO from there. A prompt whose first two
# names read S, IO is a *BABA* prompt; IO, S is *ABBA*.
#
# **Why this task?** Nothing in one sentence's words says *Mary*: the model has to notice
# which name repeats and output the *other* one. That is an algorithm, it is run by a small
# number of heads, and it can be tested by changing names, which is what makes IOI the
# standard first circuit to study.
#
# **Which model?** Every notebook reads the environment variable `IOI_MODEL`:
#
# - `toy` (the default): a 3-layer, 4-heads-per-layer transformer bundled with this package,
#   trained only on IOI prompts, using GPT-2's token ids. It is small enough for a laptop CPU.
# - `gpt2-small`: the model of the paper, if its weights are on your machine (run
#   `ioi replicate --model gpt2-small` once with internet access). Use a GPU if you have one.
#
# The toy model solves IOI, but **its circuit is not GPT-2 small's**: with three layers it
# cannot have GPT-2's seven head classes spread over twelve layers. The methods are the same,
# and each section prints the published GPT-2 small figures (shipped in
# `ioi/data/gpt2_small_ioi.json`) beside the toy's, each with its source and the corruption
# that produced it. Treat the toy as a microscope slide for practising technique, and GPT-2
# small as the real specimen.
#
# **How the exercises work.** An exercise is a function with a docstring and a body for you
# to write. Each says how hard it is and about how long it takes, and offers two folded
# hints: a nudge first, the whole algorithm second. Right after it, a cell calls a checker,
# e.g. `checks.test_logits_to_ave_logit_diff(logits_to_ave_logit_diff)`. The checker runs your
# function on the toy model with a few prompts, compares with the library, and either prints a
# tick or tells you the call, what it expected, what it got, the likely mistake and a hint.
# You can also write the functions in `exercises/part1_model_and_task.py` and run
# `pytest tests/checks`.
#
# *Predict, then run.* Before each key result the course asks what you expect. Write your
# guess down, run the cell, and only then open the folded answer: being wrong in writing is
# how intuition gets calibrated.

# %% tags=["module"]
from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from ioi.dataset import IOIDataset

# %%
import os

import plotly.express as px
from transformer_lens.utilities import test_prompt

import ioi.checks as checks
from ioi.evaluate import evaluate_ioi
from ioi.models import load_model
from ioi.reference import provenance, reference_figures

torch.set_grad_enabled(False)  # this section only runs the model forward
MODEL_NAME = os.environ.get("IOI_MODEL", "toy")
model = load_model(MODEL_NAME, device="auto")
REFERENCE = reference_figures()  # published GPT-2 small numbers
print(
    f"{MODEL_NAME}: {model.cfg.n_layers} layers x {model.cfg.n_heads} heads, "
    f"d_model={model.cfg.d_model}, on {model.cfg.device}"
)

# %% [markdown]
# ## A first look
#
# `test_prompt` runs one prompt and shows where the answer ranks among all tokens, with its
# logit and probability, and the top few competitors. Try your own sentences: change the names,
# swap their order, repeat the other name. (The toy model only ever saw the paper's templates,
# places and objects, so it can fail on sentences built differently. Finding out where a
# model's competence ends is part of the job.)

# %%
test_prompt("After John and Mary went to the store, John gave a ring to", " Mary", model, top_k=5)

# %% [markdown]
# ## The logit difference
#
# We need one number that says how well the model does IOI on a prompt. The paper uses the
# **logit difference**: the IO's logit minus the S's logit at `end`,
#
# $$\text{logit diff} = \text{logit}(\text{IO}) - \text{logit}(\text{S}).$$
#
# Why logits and not probabilities? The logits are a *linear* function of the final residual
# stream (after the last layer norm), so the logit difference splits exactly into a sum of
# what each head and MLP wrote: section 2 is built on that. And it only compares the two names
# that matter, ignoring everything else in the vocabulary.
#
# We store the answers of a batch as `answer_tokens`, a `[batch, 2]` tensor of token ids whose
# first column is the correct answer (IO) and second the incorrect one (S).
#
# **Positions.** Prompts in a batch have different lengths. Our datasets pad on the right, and
# each prompt's tokens run *through its answer*: `ds.toks` holds "... gave a ring to Mary", so
# the answer is predicted at the position before it, `end`, which differs from prompt to
# prompt. Every function in this course that reads "the predicting position" therefore takes
# `positions`, a `[batch]` tensor of each prompt's predicting position. `None` means "the last
# column", which is only right for tokens that stop at the predicting token (a single prompt
# cut just before its answer, say); for `IOIDataset` tokens the last column is an answer or
# padding, never a predicting position. The cell after the dataset below checks this.
#
# ### Exercise: `logits_to_ave_logit_diff`
#
# **Difficulty:** ●○○○○ · **Time:** about 10 minutes
#
# Return the logit difference at each prompt's predicting position, averaged over the batch
# (or one value per prompt when `per_prompt=True`).
#
# <details><summary>Hint 1: a nudge</summary>
#
# First get a `[batch, d_vocab]` tensor: each prompt's logits at its own position. Then pick
# two columns per row.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `rows = torch.arange(batch)`; `final = logits[rows, positions]` (or `logits[:, -1]`);
# `picked = final.gather(1, answer_tokens)` is `[batch, 2]`; the difference is
# `picked[:, 0] - picked[:, 1]`; return it, or its mean. Beware `final[:, answer_tokens[:, 0]]`:
# it picks every prompt's answer for every prompt, a `[batch, batch]` grid.
#
# </details>


# %%
def logits_to_ave_logit_diff(
    logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
    per_prompt: bool = False,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, "*batch"]:
    """Logit of the correct answer minus the incorrect one, at each prompt's predicting position.

    Args:
        logits: the model's output.
        answer_tokens: [batch, 2] ids of (correct, incorrect), e.g. (IO, S).
        per_prompt: return the [batch] differences instead of their mean.
        positions: [batch] index of each prompt's predicting token; None means the last position.
    """
    # EXERCISE: one row per prompt, at its own position; then the two answer columns.
    # SOLUTION
    if positions is None:
        final = logits[:, -1]  # [batch, d_vocab]
    else:
        rows = torch.arange(logits.shape[0], device=logits.device)
        final = logits[rows, positions.to(logits.device)]  # [batch, d_vocab]
    picked = final.gather(1, answer_tokens.to(logits.device))  # [batch, 2]
    diff = picked[:, 0] - picked[:, 1]
    return diff if per_prompt else diff.mean()
    # END SOLUTION


# %%
checks.test_logits_to_ave_logit_diff(logits_to_ave_logit_diff)

# %% [markdown]
# ### Exercise: `io_probability`
#
# **Difficulty:** ●○○○○ · **Time:** about 5 minutes
#
# The logit difference is what we analyse, but a probability is easier to feel. Return, for
# each prompt, the probability the model gives the IO at its predicting position.
#
# <details><summary>Hint 1: a nudge</summary>
#
# A probability over *what*? The model chooses among all `d_vocab` tokens, not between the two
# names.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# Take each prompt's predicting logits as before, `softmax(dim=-1)` over the vocabulary, then
# `.gather(1, answer_tokens[:, :1]).squeeze(1)`.
#
# </details>


# %%
def io_probability(
    logits: Float[Tensor, "batch pos d_vocab"],
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, " batch"]:
    """Probability of the correct answer (column 0 of ``answer_tokens``), per prompt."""
    # EXERCISE: a softmax, then one column per prompt.
    # SOLUTION
    if positions is None:
        final = logits[:, -1]
    else:
        rows = torch.arange(logits.shape[0], device=logits.device)
        final = logits[rows, positions.to(logits.device)]
    probs = final.float().softmax(dim=-1)  # [batch, d_vocab]
    return probs.gather(1, answer_tokens[:, :1].to(probs.device)).squeeze(1)
    # END SOLUTION


# %%
checks.test_io_probability(io_probability)

# %% [markdown]
# ## The IOI dataset
#
# One sentence proves little. `IOIDataset` fills the paper's 15 templates (and their ABBA
# versions) with random names, places and objects. Everything later sections need comes with it:
#
# - `ds.toks`: `[N, seq]` tokens, right-padded;
# - `ds.answer_tokens`: `[N, 2]` ids of (IO, S);
# - `ds.word_idx`: a dict of `[N]` position tensors: `"IO"`, `"S1"`, `"S2"`, `"end"`, and the
#   neighbours `"S1+1"`, `"IO-1"`, ...
#
# `prompt_type="mixed"` alternates BABA and ABBA prompts, so neither order dominates.

# %%
N = 32
ds = IOIDataset(N=N, prompt_type="mixed", seed=1, tokenizer=model)
for sentence in ds.sentences[:4]:
    print(sentence)

# %%
# Where the words of prompt 0 sit: every token with the word_idx names that point at it.
tokens = model.to_str_tokens(ds.toks[0])
labels = {int(v[0]): k for k, v in ds.word_idx.items() if k in ("IO", "S1", "S2", "end")}
print(" ".join(f"{t!r}<{labels[i]}>" if i in labels else repr(t) for i, t in enumerate(tokens)))
end = ds.word_idx["end"]
last_column_predicts = int((end == ds.toks.shape[1] - 1).sum())
print(f"prompts whose predicting position is the last column: {last_column_predicts} of {N}")

# %% [markdown]
# **Predict, then run.** The model has seen nothing but IOI prompts. Across these prompts, what
# fraction will have a positive logit difference, and roughly how large will the mean be,
# compared with GPT-2 small's published 3.56?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# The cell prints the mean and draws the histogram; the comparison table further down prints
# the fraction with IO above S. On the toy every prompt in this batch is positive and the mean
# is several times GPT-2 small's (a test of the course, `tests/course/test_claims.py`, checks
# both on this dataset): a model trained on one task only is far more confident than a
# general language model.
#
# </details>

# %%
clean_logits = model(ds.toks)
clean_logit_diff = logits_to_ave_logit_diff(clean_logits, ds.answer_tokens, positions=end)
per_prompt = logits_to_ave_logit_diff(
    clean_logits, ds.answer_tokens, per_prompt=True, positions=end
)
print(f"mean logit diff on {N} IOI prompts: {clean_logit_diff.item():.3f}")
print(f"prompts with IO above S: {int((per_prompt > 0).sum())} of {N}")
px.histogram(
    x=per_prompt.cpu().numpy(),
    nbins=20,
    title="Logit difference per prompt",
    labels={"x": "logit(IO) - logit(S)"},
).show()

# %% [markdown]
# ### The corrupted baseline
#
# Is the model really using the repeated name, or does it just like certain names? Replace
# all three names with three fresh, unrelated ones (the **ABC** dataset: `"ABB->XYZ, BAB->XYZ"`)
# and score the result against the *original* answers. Sections 3 and 4 use these prompts as
# the *corrupted* run of every patching experiment: they differ from the clean prompts in the
# names only, so the positions line up token for token. (Section 3 measures why this
# corruption, and not the "flipped subject" one some tutorials use.)
#
# **Predict, then run.** On the ABC prompts the original IO and S do not appear at all. What
# logit difference do you expect: about the same, about zero, or negative?
#
# <details><summary>Answer (open after running the next cell)</summary>
#
# Close to zero next to the clean value (the cell prints both; on the toy the ABC value is
# below a tenth of the clean one, checked by `tests/course/test_claims.py`). Without a
# repeated name there is no signal for either original name, so neither is preferred much.
#
# </details>

# %%
abc = ds.gen_flipped_prompts("ABB->XYZ, BAB->XYZ")
print(ds.sentences[0])
print(abc.sentences[0])
corrupted_logits = model(abc.toks)
corrupted_logit_diff = logits_to_ave_logit_diff(corrupted_logits, ds.answer_tokens, positions=end)
print(
    f"clean: {clean_logit_diff.item():.3f}   ABC (same answers): {corrupted_logit_diff.item():.3f}"
)

# %% [markdown]
# ### Exercise: `prompt_scores`
#
# **Difficulty:** ●●○○○ · **Time:** about 15 minutes
#
# Put it together: for a model and a dataset, return four `[N]` tensors in a dict:
#
# - `"logit_diff"`: logit(IO) - logit(S) at `end`;
# - `"io_over_s"`: 1.0 where the IO's logit beats the S's, else 0.0;
# - `"io_top1"`: 1.0 where the IO is the model's top prediction over the whole vocabulary;
# - `"io_prob"`: the IO's probability.
#
# You may use your two functions above.
#
# <details><summary>Hint 1: a nudge</summary>
#
# One forward pass gives everything; every score is read at `ds.word_idx["end"]`.
#
# </details>
#
# <details><summary>Hint 2: the algorithm</summary>
#
# `logits = model(ds.toks)`; `logit_diff` from your first function with `per_prompt=True,
# positions=end`; `io_over_s = (logit_diff > 0).float()`; `io_top1` compares
# `logits[rows, end].argmax(-1)` with `ds.io_tokenIDs`; `io_prob` from your second function.
#
# </details>


# %%
def prompt_scores(model: HookedTransformer, ds: IOIDataset) -> dict[str, Tensor]:
    """Per-prompt logit difference, IO-over-S, IO-top-1 and IO probability at ``word_idx['end']``."""
    # EXERCISE: one forward pass; every score at the predicting position.
    # SOLUTION
    logits = model(ds.toks)
    end = ds.word_idx["end"]
    diff = logits_to_ave_logit_diff(logits, ds.answer_tokens, per_prompt=True, positions=end)
    rows = torch.arange(len(end), device=logits.device)
    top = logits[rows, end.to(logits.device)].argmax(-1)  # [batch]
    return {
        "logit_diff": diff.cpu(),
        "io_over_s": (diff > 0).float().cpu(),
        "io_top1": (top.cpu() == ds.io_tokenIDs).float(),
        "io_prob": io_probability(logits, ds.answer_tokens, positions=end).cpu(),
    }
    # END SOLUTION


# %%
checks.test_prompt_scores(prompt_scores)

# %%
scores = prompt_scores(model, ds)
print({k: round(float(v.mean()), 3) for k, v in scores.items()})

# %% [markdown]
# ## How does this compare with GPT-2 small?
#
# The library's `evaluate_ioi` reports the same scores per template family. Next to it are the
# paper's figures for GPT-2 small on the paper's own IOI distribution (not this dataset).

# %%
report = evaluate_ioi(model, ds, abc)
paper = REFERENCE["paper"]
rows = [
    ("mean logit diff", report["overall"]["logit_diff"], paper["mean_logit_diff_ioi_distribution"]),
    ("IO logit > S logit", report["overall"]["io_over_s"], paper["io_over_s_fraction"]),
    ("mean IO probability", report["overall"]["io_prob"], paper["mean_io_probability"]),
]
print(f"{'':24}{MODEL_NAME:>12}{'GPT-2 small':>14}")
for name, ours, published in rows:
    print(f"{name:24}{ours:>12.3f}{published:>14.3f}")
for family in ("BABA", "ABBA"):
    print(f"{family + ' logit diff':24}{report[family]['logit_diff']:>12.3f}")
print("GPT-2 small column:", provenance("paper"))
ratio = report["overall"]["logit_diff"] / paper["mean_logit_diff_ioi_distribution"]
print(f"{MODEL_NAME}'s mean logit diff is {ratio:.1f} times GPT-2 small's")

# %% [markdown]
# The last line prints how many times GPT-2 small's logit difference the toy's is: the toy was
# trained on nothing but this task, so it is far more confident. GPT-2 small gets IOI right
# 99.3% of the time but, by the paper's figures, spreads probability over many plausible
# continuations (mean IO probability 0.49). Keep that in mind when you compare absolute numbers
# across the two; *normalised* measures (section 3) travel better.
#
# **Summary.** You can now measure IOI: `answer_tokens` holds (IO, S), the logit difference is
# read at each prompt's `end`, and the ABC prompts give a baseline where the repeated-name
# signal is gone. Next, section 2 splits the logit difference into what each layer and head
# contributed.
