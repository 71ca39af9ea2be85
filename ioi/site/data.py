"""What the Streamlit site computes about models, the course text and a typed prompt.

* `model_options`: which models the sidebar offers, and why one is missing.
* `course_pages`: the course text, read from the same jupytext sources as the notebooks.
* `check_prompt` / `analyse_prompt`: the "try your own prompt" box. A prompt is only ever
  tokenised and run through the model; nothing typed is executed.

Attention views are `ioi.site.attention`; the analysis steps the site shares with the report
are `ioi.report.analysis`, the figures `ioi.report.figures`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.head import Head
from ioi.heads import known_tokens, per_head_logit_diffs
from ioi.models import gpt2_small_available
from ioi.templates import NAMES

MAX_PROMPT_CHARS = 400
EXAMPLE_PROMPT = "When Mary and John went to the store, John gave a drink to"


# ---- models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelOption:
    """A model the site can run, whether it is on this machine, and how to get it if not."""

    name: str
    label: str
    available: bool
    note: str = ""


def model_options() -> list[ModelOption]:
    """The bundled toy (always there) and GPT-2 small (if its weights are cached locally)."""
    has_gpt2 = gpt2_small_available()
    return [
        ModelOption("toy", "bundled IOI model (3 layers x 4 heads)", True),
        ModelOption(
            "gpt2-small",
            "GPT-2 small",
            has_gpt2,
            ""
            if has_gpt2
            else "GPT-2 small's weights are not on this machine: run `ioi replicate --model "
            "gpt2-small` once with internet access to cache them, then restart the site.",
        ),
    ]


# ---- the course text ---------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A piece of a course page: ``"heading"`` (with level and anchor), ``"markdown"``,
    ``"details"`` (a folded answer or hint: ``summary`` is the line shown, ``text`` the body) or
    ``"code"`` (the solution text of a code cell)."""

    kind: str
    text: str
    level: int = 0
    anchor: str = ""
    summary: str = ""


@dataclass(frozen=True)
class CoursePage:
    """One course section as the site shows it."""

    number: int
    slug: str
    title: str
    blocks: tuple[Block, ...]

    def headings(self, max_level: int = 3) -> list[Block]:
        """The table of contents: headings below the title, down to ``max_level``."""
        return [b for b in self.blocks if b.kind == "heading" and 1 < b.level <= max_level]


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_DETAILS_OPEN = re.compile(r"^\s*<details>\s*<summary>(.*?)</summary>\s*$")
_DETAILS_CLOSE = re.compile(r"^\s*</details>\s*$")


def anchor_for(text: str) -> str:
    """A URL fragment for a heading: lower case, words joined by hyphens."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(words) or "section"


def split_markdown(text: str) -> list[Block]:
    """Split one markdown cell into headings, folded ``<details>`` parts and the text between
    them (code fences kept whole).

    A fold is the course's form: a line ``<details><summary>SUMMARY</summary>``, the body, and a
    line ``</details>``.

    Raises:
        ValueError: a ``<details>`` fold that is never closed, or a ``</details>`` with no fold.
    """
    blocks: list[Block] = []
    buffer: list[str] = []
    in_fence = False
    summary: str | None = None  # inside a fold: its summary line

    def flush() -> None:
        body = "\n".join(buffer).strip()
        if summary is not None:
            blocks.append(Block("details", body, summary=summary))
        elif body:
            blocks.append(Block("markdown", body))
        buffer.clear()

    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        if in_fence or line.lstrip().startswith(("```", "~~~")):
            buffer.append(line)
            continue
        opened, closed = _DETAILS_OPEN.match(line), _DETAILS_CLOSE.match(line)
        heading = None if summary is not None else _HEADING.match(line)
        if opened:
            if summary is not None:
                raise ValueError(f"a <details> fold opens inside another: {line.strip()!r}")
            flush()
            summary = opened.group(1).strip()
        elif closed:
            if summary is None:
                raise ValueError("a </details> line closes no fold")
            flush()
            summary = None
        elif heading:
            flush()
            title = heading.group(2)
            blocks.append(Block("heading", title, len(heading.group(1)), anchor_for(title)))
        else:
            buffer.append(line)
    if summary is not None:
        raise ValueError(f"the <details> fold {summary!r} is never closed (</details>)")
    flush()
    return blocks


def course_pages(root: Path) -> dict[int, CoursePage]:
    """Every course section under ``root/course``, by number, parsed as the course build does.

    Raises:
        ValueError: a source breaks the course's naming or marker rules (the message says where).
    """
    from ioi.course.build import parse_section, source_files  # needs jupytext

    pages = {}
    for path in source_files(root):
        section = parse_section(path)
        blocks: list[Block] = []
        for cell in section.cells:
            if cell.kind == "markdown":
                blocks += split_markdown(cell.solution)
            elif cell.solution.strip():
                blocks.append(Block("code", cell.solution.strip()))
        pages[section.number] = CoursePage(
            section.number, section.slug, _plain_title(section.title), tuple(blocks)
        )
    return pages


def _plain_title(title: str) -> str:
    match = _HEADING.match(title.strip().splitlines()[0]) if title.strip() else None
    return match.group(2) if match else title.strip()


# ---- try your own prompt -----------------------------------------------------------------


@dataclass(frozen=True)
class CheckedPrompt:
    """A prompt that passed `check_prompt`: its tokens and where the names are."""

    text: str
    tokens: Int[Tensor, " pos"]
    token_strs: tuple[str, ...]
    io: str
    s: str
    io_id: int
    s_id: int
    positions: dict[str, int]  # IO, S1, S2, end


def _name_words(text: str) -> list[tuple[str, int]]:
    """Capitalised words that are not the first word of a sentence, with their start offsets;
    plus known IOI names anywhere."""
    out = []
    for match in re.finditer(r"[A-Za-z]+", text):
        word = match.group()
        before = text[: match.start()].rstrip()
        sentence_start = before == "" or before.endswith((".", "!", "?"))
        if word in NAMES or (word[0].isupper() and not sentence_start):
            out.append((word, match.start()))
    return out


def check_prompt(text: str, model: HookedTransformer) -> CheckedPrompt:
    """Check that ``text`` is an IOI prompt this model can be asked about.

    The prompt must name two people, one of them twice (the subject, S) and the other once
    (the indirect object, IO), and stop right before the answer. Names must be single tokens
    (with a leading space), and the prompt must fit the model's context.

    Raises:
        ValueError: with a message meant for the person who typed the prompt.
    """
    text = (text or "").strip()
    if not text:
        raise ValueError(f"Type a sentence, for example: “{EXAMPLE_PROMPT}”.")
    if len(text) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"That is {len(text)} characters; keep the prompt under {MAX_PROMPT_CHARS}."
        )
    tokenizer = model.tokenizer
    words = _name_words(text)
    multi = sorted(
        {w for w, _ in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) != 1}
    )
    if multi:
        raise ValueError(
            f"{', '.join(multi)} {'is' if len(multi) == 1 else 'are'} not a single token for "
            "GPT-2's tokenizer, and IOI needs every name to be one token. Try common names "
            f"such as {', '.join(NAMES[:6])}."
        )
    counts: dict[str, int] = {}
    for word, _ in words:
        counts[word] = counts.get(word, 0) + 1
    _check_names(counts, text)
    s = next(w for w, c in counts.items() if c == 2)
    io = next(w for w, c in counts.items() if c == 1)
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) > model.cfg.n_ctx:
        raise ValueError(
            f"The prompt is {len(ids)} tokens; this model reads at most {model.cfg.n_ctx}."
        )
    _check_vocabulary(ids, model)
    io_id, s_id = (tokenizer.encode(" " + n, add_special_tokens=False)[0] for n in (io, s))
    io_pos = [i for i, t in enumerate(ids) if t == io_id]
    s_pos = [i for i, t in enumerate(ids) if t == s_id]
    if len(io_pos) != 1 or len(s_pos) != 2:
        raise ValueError(
            "Put a space before every name (and not at the very start), e.g. "
            f"“{EXAMPLE_PROMPT}”: the names must be read as whole words."
        )
    return CheckedPrompt(
        text=text,
        tokens=torch.tensor(ids),
        token_strs=tuple(tokenizer.decode([t]) for t in ids),
        io=io,
        s=s,
        io_id=io_id,
        s_id=s_id,
        positions={"IO": io_pos[0], "S1": s_pos[0], "S2": s_pos[1], "end": len(ids) - 1},
    )


def _check_names(counts: dict[str, int], text: str) -> None:
    names = sorted(counts)
    if len(names) < 2:
        found = f"only {names[0]}" if names else "no names"
        raise ValueError(
            f"I found {found}. An IOI prompt names two people, one of them twice, e.g. "
            f"“{EXAMPLE_PROMPT}”. Names are capitalised words (or names from the course's list)."
        )
    if len(names) > 2:
        raise ValueError(
            f"I found {len(names)} names ({', '.join(names)}); an IOI prompt has exactly two, "
            "one of them repeated. (Capitalised words inside a sentence count as names.)"
        )
    last = re.findall(r"[A-Za-z]+", text)[-1]
    if last in counts:
        raise ValueError(
            f"Stop the prompt just before the answer: remove the final “{last}” and let the "
            "model say who it is."
        )
    if sorted(counts.values()) != [1, 2]:
        detail = ", ".join(f"{n} {c}x" for n, c in sorted(counts.items()))
        raise ValueError(
            f"One name must appear twice (the subject) and the other once (the answer); "
            f"here: {detail}."
        )


def _check_vocabulary(ids: Sequence[int], model: HookedTransformer) -> None:
    """Reject tokens the model never learned (the bundled model knows ~150 GPT-2 tokens)."""
    known = set(known_tokens(model).tolist())
    unknown = sorted({model.tokenizer.decode([t]) for t in ids if t not in known})
    if unknown:
        shown = ", ".join(f"“{w.strip()}”" for w in unknown[:8])
        raise ValueError(
            f"This model never saw {shown}: the bundled model was trained only on the IOI "
            "templates' words, places, objects and names. Reword the prompt in that style, "
            "or pick GPT-2 small."
        )


@dataclass(frozen=True)
class PromptResult:
    """What the model does with one checked prompt."""

    logit_diff: float
    io_prob: float
    s_prob: float
    top_tokens: tuple[tuple[str, float], ...]
    per_head: Float[Tensor, "layer head"]
    top_heads: tuple[Head, ...]
    patterns: Float[Tensor, "top dest src"]  # attention of the top heads


@torch.no_grad()
def analyse_prompt(model: HookedTransformer, prompt: CheckedPrompt, k: int = 3) -> PromptResult:
    """Logit difference, probabilities, the top next tokens, per-head direct logit attribution
    and the attention patterns of the ``k`` heads with the largest |DLA|."""
    toks = prompt.tokens[None].to(model.cfg.device)
    logits, cache = model.run_with_cache(toks)
    final = logits[0, -1].float().cpu()
    probs = final.softmax(-1)
    top = probs.topk(5)
    answers = torch.tensor([[prompt.io_id, prompt.s_id]])
    end = torch.tensor([prompt.positions["end"]])
    per_head = per_head_logit_diffs(model, cache, answers, end).detach().cpu()
    flat = per_head.abs().flatten().argsort(descending=True)[:k]
    n_heads = model.cfg.n_heads
    heads = tuple(Head(int(i) // n_heads, int(i) % n_heads) for i in flat)
    patterns = torch.stack(
        [cache[get_act_name("pattern", layer)][0, head].cpu() for layer, head in heads]
    )
    return PromptResult(
        logit_diff=float(final[prompt.io_id] - final[prompt.s_id]),
        io_prob=float(probs[prompt.io_id]),
        s_prob=float(probs[prompt.s_id]),
        top_tokens=tuple(
            (model.tokenizer.decode([int(i)]), float(p))
            for p, i in zip(top.values, top.indices, strict=True)
        ),
        per_head=per_head,
        top_heads=heads,
        patterns=patterns,
    )
