"""The IOI dataset: prompts, tokens, answer ids and the positions of every word that matters.

A prompt is a template with its name slots filled. Three slots hold names before the answer:
``name1 and name2 ... S2 ... to [answer]``. In a BABA prompt the slots read (S, IO, S); in an
ABBA prompt (IO, S, S). The model must predict the IO at the last position, ``end``.

Example:
    >>> ds = IOIDataset(N=4, prompt_type="BABA", seed=0)
    >>> ds.toks.shape[0], sorted(ds.word_idx)[:3]
    (4, ['IO', 'IO+1', 'IO-1'])
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from jaxtyping import Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from ioi.templates import ABBA_TEMPLATES, BABA_TEMPLATES, NAMES, OBJECTS, PLACES
from ioi.tokenizer import gpt2_tokenizer

PROMPT_TYPES = ("BABA", "ABBA", "mixed")
WORD_IDX_KEYS = ("IO", "IO-1", "IO+1", "S1", "S1-1", "S1+1", "S2", "end", "starts")


@dataclass(frozen=True)
class IOIPrompt:
    """One filled template: which template, and the name in each of the four name slots."""

    template_idx: int  # index into ``IOIDataset.templates``
    slots: tuple[str, str, str]  # the names in slot 1, slot 2 and the S2 slot
    answer: str  # the name that ends the sentence (the IO for a true IOI prompt)
    place: str
    obj: str

    @property
    def pattern(self) -> str:
        """The slot pattern in letters: ``"BAB"`` for BABA, ``"ABB"`` for ABBA, ``"XYZ"`` if none repeats."""
        a, b, c = self.slots
        if a == c and a != b:
            return "BAB"
        if b == c and a != b:
            return "ABB"
        return "XYZ"


def _resolve_tokenizer(model_or_tokenizer) -> PreTrainedTokenizerBase:
    if model_or_tokenizer is None:
        return gpt2_tokenizer()
    if isinstance(model_or_tokenizer, PreTrainedTokenizerBase):
        return model_or_tokenizer
    tokenizer = getattr(model_or_tokenizer, "tokenizer", None)
    if isinstance(tokenizer, PreTrainedTokenizerBase):
        return tokenizer
    raise TypeError(
        "expected a HookedTransformer with a tokenizer, a Hugging Face tokenizer, or None "
        f"(GPT-2's tokenizer); got {type(model_or_tokenizer).__name__}"
    )


def single_token_names(
    names: Sequence[str], tokenizer: PreTrainedTokenizerBase
) -> tuple[list[str], list[str]]:
    """Split ``names`` into those that are one token with a leading space, and the rest."""
    good, bad = [], []
    for name in names:
        ids = tokenizer.encode(" " + name, add_special_tokens=False)
        (good if len(ids) == 1 else bad).append(name)
    return good, bad


MAX_PROMPTS = 200_000  # ~30 s and ~300 MB to build; the paper's analyses use a few hundred
_FORBIDDEN = set("{}[]")  # the templates' own markup


def _template_words() -> set[str]:
    """Every word of the templates' own text (not the slots): a name must be none of them."""
    text = " ".join(BABA_TEMPLATES + ABBA_TEMPLATES)
    text = re.sub(r"\[(A|B|PLACE|OBJECT)\]", " ", text)
    return set(re.findall(r"[A-Za-z']+", text))


MIN_NAMES = 5  # a flip draws 3 fresh names besides the prompt's IO and S


def _default_words(kind: str, default, tokenizer) -> tuple[list[str], list[str]]:
    """The paper's ``kind`` that are single tokens for ``tokenizer``, and those dropped.

    Another model's tokenizer may split some of them; IOI needs each to be one token, so
    those are left out (and reported), and too few left is an error.
    """
    good, bad = single_token_names(default, tokenizer)
    need = MIN_NAMES if kind == "names" else 1
    if len(good) < need:
        raise ValueError(
            f"only {len(good)} of the paper's {len(default)} {kind} are single tokens (with a "
            f"leading space) for this tokenizer ({good or 'none'}); IOI needs at least {need}. "
            f"Pass {kind}=[...] with words this tokenizer keeps whole"
        )
    return good, bad


def _checked_words(kind: str, words, tokenizer) -> list[str]:
    if isinstance(words, str) or not isinstance(words, Sequence):
        raise TypeError(f"{kind} must be a list of strings, got {type(words).__name__} {words!r}")
    words = list(words)
    wrong = [w for w in words if not isinstance(w, str)]
    if wrong:
        raise TypeError(f"{kind} must be strings; got {[type(w).__name__ for w in wrong]}: {wrong}")
    blank = [w for w in words if not w.strip() or w != w.strip() or _FORBIDDEN & set(w)]
    if blank:
        raise ValueError(
            f"{kind} must be non-empty words without surrounding spaces or the templates' "
            f"markup {{ }} [ ], got {blank}"
        )
    if len(set(words)) != len(words):
        raise ValueError(
            f"{kind} contain duplicates: {sorted(w for w in set(words) if words.count(w) > 1)}"
        )
    if kind == "names":
        clash = sorted(set(words) & _template_words())
        if clash:
            raise ValueError(
                f"these names are words of the templates themselves: {clash}; a name must not "
                "occur in the sentence except as a name, or its positions would be found wrong"
            )
        _, bad = single_token_names(words, tokenizer)
        if bad:
            raise ValueError(
                f"these names are not single tokens (with a leading space) for this tokenizer: {bad}; "
                "IOI needs every name to be exactly one token"
            )
    return words


def flip_seed(seed: int, flip: str) -> int:
    """A seed for a flipped dataset, from the original seed and the flip rule (stable across runs)."""
    digest = hashlib.sha256(f"{seed}|{flip.replace(' ', '')}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def parse_flip(flip: str) -> dict[str, str]:
    """Parse ``"ABB->XYZ, BAB->XYZ"`` into ``{"ABB": "XYZ", "BAB": "XYZ"}``.

    Left sides are slot patterns of the original prompt (A = IO, B = S): ``ABB`` (ABBA) or
    ``BAB`` (BABA). Right sides give a letter per slot: A and B keep the original IO and S;
    any other capital letter is a fresh name, one per letter.
    """
    if not isinstance(flip, str):
        raise TypeError(f"flip must be a string such as 'ABB->XYZ, BAB->XYZ', got {flip!r}")
    rules: dict[str, str] = {}
    for part in flip.split(","):
        match = re.fullmatch(r"\s*([AB]{3})\s*->\s*([A-Z]{3})\s*", part)
        if not match or match.group(1) not in ("ABB", "BAB"):
            raise ValueError(
                f"cannot read flip rule {part.strip()!r}; write rules like 'ABB->XYZ, BAB->XYZ' "
                "(left side ABB or BAB, right side three capital letters)"
            )
        right = match.group(2)
        if right[0] == right[1]:
            raise ValueError(
                f"flip rule {part.strip()!r} puts one name in both of the first two name slots, so "
                "IO and S would be the same name and every logit difference 0; the first two "
                "letters on the right must differ (e.g. 'ABB->XYZ', 'ABB->BAA')"
            )
        rules[match.group(1)] = right
    return rules


class IOIDataset:
    """IOI prompts, their tokens, answers and word positions.

    Args:
        N: number of prompts.
        prompt_type: ``"BABA"``, ``"ABBA"`` or ``"mixed"`` (alternating, so the two halves match).
        seed: seed of a local ``random.Random``; global RNG state is never touched.
        tokenizer: a ``HookedTransformer`` or Hugging Face tokenizer; None means GPT-2's.
        prepend_bos: put the tokenizer's BOS before every prompt (exactly once).
        names, places, objects: override the paper's lists; names must be single tokens.
            Left as None, the paper's words that are not single tokens (with a leading space)
            for this tokenizer are dropped (see ``dropped``).

    Attributes:
        sentences: the full sentences, ending with the answer name.
        toks: [N, seq] token ids, right-padded with the pad token.
        io_tokenIDs, s_tokenIDs: [N] ids of the IO and S names.
        word_idx: dict of [N] position tensors for ``WORD_IDX_KEYS``.
        template_idx: [N] index into ``templates`` for each prompt.
        groups: list of [k] index tensors, prompts that share a template.
        dropped: ``{"names": [...], "places": [...], "objects": [...]}``, the paper's words
            left out because this tokenizer splits them (empty lists for words passed in).
    """

    def __init__(
        self,
        N: int,
        prompt_type: str = "mixed",
        seed: int = 0,
        tokenizer=None,
        prepend_bos: bool = False,
        names: Sequence[str] | None = None,
        places: Sequence[str] | None = None,
        objects: Sequence[str] | None = None,
        *,
        _prompts: Sequence[IOIPrompt] | None = None,
        _word_idx: dict[str, Tensor] | None = None,
    ):
        for what, value in (("N", N), ("seed", seed)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
        if N <= 0:
            raise ValueError(f"N must be a positive integer, got {N!r}")
        if N > MAX_PROMPTS:
            raise ValueError(
                f"N={N:,} prompts is more than IOIDataset builds ({MAX_PROMPTS:,}, about 30 s and "
                f"300 MB; N={N:,} would take about {N * 1.5e-4 / 60:,.0f} min and "
                f"{N * 1.5e3 / 2**30:,.1f} GiB); the paper's analyses use a few hundred prompts. "
                "For more, build several datasets with different seeds"
            )
        if not isinstance(prepend_bos, bool):
            raise TypeError(f"prepend_bos must be True or False, got {prepend_bos!r}")
        if prompt_type not in PROMPT_TYPES:
            raise ValueError(f"unknown prompt_type {prompt_type!r}; choose one of {PROMPT_TYPES}")
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.N, self.prompt_type, self.seed, self.prepend_bos = N, prompt_type, seed, prepend_bos
        self.tokenizer = _resolve_tokenizer(tokenizer)
        self.dropped: dict[str, list[str]] = {}
        chosen = {}
        for kind, words, default in (
            ("names", names, NAMES),
            ("places", places, PLACES),
            ("objects", objects, OBJECTS),
        ):
            if words is None:
                chosen[kind], self.dropped[kind] = _default_words(kind, default, self.tokenizer)
            else:
                chosen[kind], self.dropped[kind] = _checked_words(kind, words, self.tokenizer), []
        self.names, self.places, self.objects = chosen["names"], chosen["places"], chosen["objects"]
        for kind, words in (("places", self.places), ("objects", self.objects)):
            shared = sorted(set(self.names) & set(words))
            if shared:
                raise ValueError(
                    f"{shared} are both names and {kind}: a name must occur in the sentence only "
                    "as a name, or word_idx would point at the wrong word"
                )
        if len(self.names) < MIN_NAMES:
            raise ValueError(
                f"need at least {MIN_NAMES} distinct names (flips draw 3 fresh ones), "
                f"got {len(self.names)}"
            )
        self.templates = list(BABA_TEMPLATES) + list(ABBA_TEMPLATES)
        self.prompts = list(_prompts) if _prompts is not None else self._sample_prompts()
        if len(self.prompts) != N:
            raise ValueError(f"got {len(self.prompts)} prompts for N={N}")
        self.sentences = [self._render(p) for p in self.prompts]
        self.toks, self.seq_lens = self._tokenize(self.sentences)
        self.io_tokenIDs = self._name_ids([_io_name(p) for p in self.prompts])
        self.s_tokenIDs = self._name_ids([_s_name(p) for p in self.prompts])
        same = torch.nonzero(self.io_tokenIDs == self.s_tokenIDs).flatten().tolist()
        if same:
            raise ValueError(
                f"{len(same)} prompts have the same IO and S name (first: "
                f"{self.sentences[same[0]]!r}); their logit difference would be 0"
            )
        self.word_idx = _word_idx if _word_idx is not None else self._find_word_idx()
        self.template_idx = torch.tensor([p.template_idx for p in self.prompts])
        self.groups = [
            torch.nonzero(self.template_idx == t).flatten()
            for t in sorted(set(self.template_idx.tolist()))
        ]

    # ---- construction -------------------------------------------------------------------

    def _sample_prompts(self) -> list[IOIPrompt]:
        rng = random.Random(self.seed)
        n_baba = len(BABA_TEMPLATES)
        prompts = []
        for i in range(self.N):
            baba = self.prompt_type == "BABA" or (self.prompt_type == "mixed" and i % 2 == 0)
            t = rng.randrange(n_baba)
            io, s = rng.sample(self.names, 2)
            slots = (s, io, s) if baba else (io, s, s)
            prompts.append(
                IOIPrompt(
                    template_idx=t if baba else n_baba + t,
                    slots=slots,
                    answer=io,
                    place=rng.choice(self.places),
                    obj=rng.choice(self.objects),
                )
            )
        return prompts

    def _render(self, p: IOIPrompt) -> str:
        template = self.templates[p.template_idx]
        # Slot order in every template: first name, second name, S2, answer.
        first_a, first_b = template.index("[A]"), template.index("[B]")
        first, second = ("[A]", "[B]") if first_a < first_b else ("[B]", "[A]")
        text = template.replace(first, "{0}", 1).replace(second, "{1}", 1)
        text = text.replace("[B]", "{2}", 1).replace("[A]", "{3}", 1)
        text = text.replace("[PLACE]", p.place).replace("[OBJECT]", p.obj)
        return text.format(*p.slots, p.answer)

    def _tokenize(
        self, sentences: list[str]
    ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
        rows = [self.tokenizer.encode(s, add_special_tokens=False) for s in sentences]
        if self.prepend_bos:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise ValueError("prepend_bos=True but this tokenizer has no BOS token")
            # encode() was told not to add special tokens, so BOS is added here exactly once.
            rows = [[bos, *r] for r in rows]
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else self.tokenizer.eos_token_id
        width = max(len(r) for r in rows)
        toks = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            toks[i, : len(r)] = torch.tensor(r)
        return toks, torch.tensor([len(r) for r in rows])

    def _name_ids(self, names: list[str]) -> Int[Tensor, " batch"]:
        return torch.tensor(
            [self.tokenizer.encode(" " + n, add_special_tokens=False)[0] for n in names]
        )

    def _find_word_idx(self) -> dict[str, Int[Tensor, " batch"]]:
        idx: dict[str, list[int]] = {k: [] for k in WORD_IDX_KEYS}
        for i, p in enumerate(self.prompts):
            row = self.toks[i, : self.seq_lens[i]].tolist()
            slot_ids = self._name_ids(list(p.slots)).tolist()
            # The three name slots are, in order, the first three name tokens of the sentence,
            # and a name token occurs nowhere else before the answer.
            found, start = [], 0
            for tid in slot_ids:
                start = row.index(tid, start) + 1
                found.append(start - 1)
            elsewhere = [j for j, t in enumerate(row[:-1]) if t in slot_ids and j not in found]
            if elsewhere:
                word = self.tokenizer.decode([row[elsewhere[0]]])
                raise ValueError(
                    f"the name {word.strip()!r} also occurs outside the name slots of "
                    f"{self.sentences[i]!r}; names must differ from every other word of the "
                    "sentence (places, objects and the templates' words)"
                )
            io_pos = found[0] if p.pattern == "ABB" else found[1]
            s1_pos = found[1] if p.pattern == "ABB" else found[0]
            end = int(self.seq_lens[i]) - 2  # the token right before the answer
            for key, value in (("IO", io_pos), ("S1", s1_pos), ("S2", found[2]), ("end", end)):
                idx[key].append(value)
            idx["starts"].append(1 if self.prepend_bos else 0)
        for base in ("IO", "S1"):
            idx[f"{base}-1"] = [v - 1 for v in idx[base]]
            idx[f"{base}+1"] = [v + 1 for v in idx[base]]
        return {k: torch.tensor(v) for k, v in idx.items()}

    # ---- flips --------------------------------------------------------------------------

    def gen_flipped_prompts(self, flip: str) -> IOIDataset:
        """A dataset whose name slots are rewritten by ``flip``, positions aligned with this one.

        ``"ABB->XYZ, BAB->XYZ"`` gives the ABC dataset (three fresh names); ``"ABB->BAA"``
        swaps IO and S in ABBA prompts. Prompts whose pattern has no rule are unchanged.
        Fresh names differ from each other and from the prompt's own names.
        """
        rules = parse_flip(flip)
        rng = random.Random(flip_seed(self.seed, flip))
        new_prompts = []
        for p in self.prompts:
            rule = rules.get(p.pattern)
            if rule is None:
                new_prompts.append(p)
                continue
            io, s = _io_name(p), _s_name(p)
            fresh_letters = sorted(set(rule) - {"A", "B"})
            pool = [n for n in self.names if n not in (io, s)]
            fresh = dict(zip(fresh_letters, rng.sample(pool, len(fresh_letters)), strict=True))
            letter_name = {"A": io, "B": s, **fresh}
            slots = tuple(letter_name[c] for c in rule)
            new = IOIPrompt(p.template_idx, slots, p.answer, p.place, p.obj)
            new_prompts.append(replace(new, answer=_io_name(new, fallback=p, rule=rule)))
        if all(a is b for a, b in zip(new_prompts, self.prompts, strict=True)):
            raise ValueError(
                f"flip {flip!r} matched no prompt: this dataset's patterns are "
                f"{sorted({p.pattern for p in self.prompts})}"
            )
        flipped = IOIDataset(
            self.N,
            self.prompt_type,
            self.seed,
            self.tokenizer,
            self.prepend_bos,
            self.names,
            self.places,
            self.objects,
            _prompts=new_prompts,
            _word_idx={k: v.clone() for k, v in self.word_idx.items()},
        )
        if flipped.toks.shape != self.toks.shape:
            raise AssertionError("flipped prompts lost token alignment")  # names are single tokens
        return flipped

    # ---- conveniences -------------------------------------------------------------------

    @property
    def answer_tokens(self) -> Int[Tensor, "batch 2"]:
        """[N, 2] ids of (correct, incorrect) = (IO, S), the layout the metrics take."""
        return torch.stack([self.io_tokenIDs, self.s_tokenIDs], dim=1)

    def __len__(self) -> int:
        return self.N

    def __repr__(self) -> str:
        return f"IOIDataset(N={self.N}, prompt_type={self.prompt_type!r}, seed={self.seed}, prepend_bos={self.prepend_bos})"


def _io_name(p: IOIPrompt, fallback: IOIPrompt | None = None, rule: str | None = None) -> str:
    if p.pattern == "ABB":
        return p.slots[0]
    if p.pattern == "BAB":
        return p.slots[1]
    if fallback is not None and rule is not None:
        # No repeated name (e.g. XYZ): the IO is whatever took the original IO's first slot.
        return p.slots[0] if fallback.pattern == "ABB" else p.slots[1]
    return p.answer


def _s_name(p: IOIPrompt) -> str:
    if p.pattern in ("ABB", "BAB"):
        return p.slots[2]
    # No repeated name: the S is the name in the other of the two first slots.
    return p.slots[1] if p.answer == p.slots[0] else p.slots[0]
