"""Path-patching effects for one model, dataset pair and metric, each computed once.

Discovery asks many overlapping questions ("which heads feed these heads' queries?", "at
which position?"); the oracle holds the caches, the metric's readout and the answers so far,
so a threshold sweep costs little more than one discovery. It is an explicit object the caller
owns, not a global cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache, HookedTransformer
from transformer_lens.utilities import get_act_name

from ioi.dataset import IOIDataset
from ioi.inputs import check_int_tensor, check_positions
from ioi.metrics import (
    Metric,
    _check_factory_inputs,
    _check_reduce,
    answer_logit_diffs,
    logits_to_ave_logit_diff,
    make_normaliser,
)
from ioi.path_patching import (
    Readout,
    Receiver,
    Sender,
    cache_for_path_patching,
    path_patch,
)
from ioi.path_patching.batched import PathQuery, Track, path_patch_queries

Request = tuple[Sequence[Sender], Sequence[Receiver] | None, str | None, str | None]
"""``(senders, receivers, sender_positions, receiver_positions)``: one `effects` call."""


def make_rows_ioi_metric(
    clean_logit_diff: float,
    corrupted_logit_diff: float,
    answer_tokens: Int[Tensor, "batch 2"],
    positions: Int[Tensor, " batch"],
    rows: Int[Tensor, " row"] | None = None,
    reduce: str = "mean",
) -> Metric:
    """The normalised IOI metric (1 = clean, 0 = corrupted) over a subset of the prompts.

    The metric takes logits of the whole batch and reads only ``rows`` (all if None), at each
    row's position, so one set of caches serves every subset (e.g. a template family).
    The logit difference is `ioi.metrics.answer_logit_diffs` and the normalisation
    `ioi.metrics.make_normaliser`, both as in `ioi.metrics.make_ioi_metric`; ``reduce="none"``
    gives one value per row ([row], in the order of ``rows``), as there.
    """
    per_prompt = _check_reduce(reduce)
    normalise = make_normaliser(clean_logit_diff, corrupted_logit_diff)
    _check_factory_inputs(answer_tokens, positions)
    batch = len(answer_tokens)
    if rows is not None:
        rows = check_int_tensor(rows, "rows", ndim=1)
        if rows.shape[0] == 0:
            raise ValueError("rows is empty: the metric would be the mean over no prompts")
        check_positions(rows, rows.shape[0], batch, "rows (prompt indices)")
    keep = torch.arange(batch) if rows is None else rows.cpu()

    def rows_ioi_metric(logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, "*row"]:
        diffs = answer_logit_diffs(logits, answer_tokens, positions, keep)
        return normalise(diffs if per_prompt else diffs.mean())

    return rows_ioi_metric


class PathPatchingOracle:
    """Memoised path-patching effects: ``metric(patched) - metric(clean)`` per sender.

    Effects are memoised per sender (and receivers and positions), so a request that shares
    senders with an earlier one (e.g. at a smaller threshold) computes only the new ones. The
    key holds only the receivers that can see the sender (above its layer), in one order: a
    sender's path into heads ``{5.1, 9.9}`` *is* its path into ``{9.9}`` if it sits in layer 5
    to 8, so discovery's groups of receivers, which change from threshold to threshold, share
    many answers.
    The memo keeps each prompt's effect (`per_prompt_many`); `effects` are their means (the
    normalisation is affine, so the mean of per-prompt values is the metric of the mean), and
    `ioi.statistics.bootstrap` of the per-prompt effects gives their intervals.

    With the normalised metric an effect of -1 means the sender alone carries the whole gap
    between the IOI and the ABC logit difference; effects near 0 mean no effect.
    """

    def __init__(
        self,
        model: HookedTransformer,
        ioi: IOIDataset,
        abc: IOIDataset,
        rows: Int[Tensor, " row"] | None = None,
        caches: tuple[ActivationCache, ActivationCache, ActivationCache] | None = None,
    ):
        self.model, self.ioi, self.abc = model, ioi, abc
        self.rows = torch.arange(ioi.N) if rows is None else rows.cpu()
        if caches is None:
            caches = (
                cache_for_path_patching(model, ioi.toks),
                cache_for_path_patching(model, abc.toks),
                _patterns(model, ioi.toks),
            )
        self.clean_cache, self.corrupted_cache, self.patterns = caches
        end, answers = ioi.word_idx["end"], ioi.answer_tokens
        clean = _logit_diff_from_cache(model, self.clean_cache, ioi, self.rows)
        corrupted = _logit_diff_from_cache(model, self.corrupted_cache, ioi, self.rows)
        self.clean_logit_diff, self.corrupted_logit_diff = clean, corrupted
        self.metric = make_rows_ioi_metric(clean, corrupted, answers, end, self.rows)
        self.per_prompt_metric = make_rows_ioi_metric(
            clean, corrupted, answers, end, self.rows, reduce="none"
        )
        # The metric reads each row's end position and the answer columns: no detection needed.
        self.readout = Readout(
            batch_idx=self.rows,
            pos_idx=end[self.rows],
            vocab_idx=answers[self.rows].flatten().unique(),
            shape=(ioi.N, ioi.toks.shape[1], model.cfg.d_vocab),
        )
        self.baseline = 1.0  # the normalised metric of the unpatched run, by construction
        self._memo: dict[tuple, Tensor] = {}  # (sender, receivers, positions) -> [row] effects
        self.track: Track | None = None  # wraps the engine's passes, e.g. with a progress bar

    def for_rows(self, rows: Int[Tensor, " row"]) -> PathPatchingOracle:
        """An oracle for a subset of the prompts, sharing this one's caches."""
        return PathPatchingOracle(
            self.model,
            self.ioi,
            self.abc,
            rows,
            (self.clean_cache, self.corrupted_cache, self.patterns),
        )

    def effects(
        self,
        senders: Sequence[Sender],
        receivers: Sequence[Receiver] | None = None,
        sender_positions: str | None = None,
        receiver_positions: str | None = None,
    ) -> Float[Tensor, " sender"]:
        """Path-patching effect of each sender (to the logits, or via the receivers)."""
        return self.effects_many([(senders, receivers, sender_positions, receiver_positions)])[0]

    def effects_many(self, requests: Sequence[Request]) -> list[Float[Tensor, " sender"]]:
        """`effects` for many ``(senders, receivers, sender_positions, receiver_positions)``
        requests at once: the means over prompts of `per_prompt_many`."""
        return [values.mean(-1) for values in self.per_prompt_many(requests)]

    def per_prompt_many(self, requests: Sequence[Request]) -> list[Float[Tensor, "sender row"]]:
        """Each prompt's effect (one column per row of the oracle, in the order of ``rows``) for
        many requests: each sender's effects are memoised on their own, and those not known yet
        are computed together, in as few stacked passes as the engine can make of them."""
        to_logits: dict[tuple, dict[Sender, None]] = {}  # positions -> senders (ordered set)
        to_heads: dict[tuple, PathQuery] = {}
        for senders, receivers, sp, rp in requests:
            for s in senders:
                key = _key(s, receivers, sp, rp)
                targets = key[1]
                if key in self._memo:
                    continue
                if targets:
                    to_heads[key] = PathQuery(s, targets, sp, rp)
                else:
                    to_logits.setdefault((sp, rp), {})[s] = None
        for (sp, rp), senders in to_logits.items():
            values = path_patch(
                self.model,
                self.per_prompt_metric,
                self.abc,
                self.ioi,
                list(senders),
                corrupted_cache=self.corrupted_cache,
                clean_cache=self.clean_cache,
                sender_positions=sp,
                receiver_positions=rp,
                readout=self.readout,
            )  # [sender, row]
            for s, v in zip(senders, values, strict=True):
                self._memo[(s, (), sp, rp)] = v - self.baseline
        if to_heads:
            values = path_patch_queries(
                self.model,
                self.per_prompt_metric,
                self.abc,
                self.ioi,
                list(to_heads.values()),
                corrupted_cache=self.corrupted_cache,
                clean_cache=self.clean_cache,
                readout=self.readout,
                track=self.track,
            )  # [query, row]
            for key, v in zip(to_heads, values, strict=True):
                self._memo[key] = v - self.baseline
        return [
            torch.stack([self._memo[_key(s, rs, sp, rp)] for s in senders])
            for senders, rs, sp, rp in requests
        ]

    def attention(
        self, head: tuple[int, int], dest: str, sources: Sequence[str]
    ) -> dict[str, float]:
        """Mean attention from ``word_idx[dest]`` to each source key and to the previous token."""
        layer, h = head
        cached = self.patterns[get_act_name("pattern", layer)]  # [batch, head, dest, src]
        pattern = cached[self.rows.to(cached.device), h].cpu()
        idx = self.ioi.word_idx
        rows = torch.arange(len(self.rows))
        d = idx[dest][self.rows]
        out = {src: float(pattern[rows, d, idx[src][self.rows]].mean()) for src in sources}
        out["previous"] = float(pattern[rows, d, (d - 1).clamp(min=0)].mean())
        return out


def _key(
    sender: Sender, receivers: Sequence[Receiver] | None, sp: str | None, rp: str | None
) -> tuple:
    """The memo key of a sender's effect: the receivers above its layer, sorted (those at or
    below it see no change, and the receivers are patched together, in no order); all of
    them where none is above, so that the engine refuses the question as before."""
    above = [r for r in receivers or () if r.layer > sender.layer] or list(receivers or ())
    order = sorted(set(above), key=lambda r: (r.layer, r.head, r.input))
    return (sender, tuple(order), sp, rp)


def _patterns(model: HookedTransformer, toks: Tensor) -> ActivationCache:
    names = [get_act_name("pattern", layer) for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(
            toks.to(model.cfg.device), names_filter=names, return_type=None
        )
    return cache


def _logit_diff_from_cache(
    model: HookedTransformer, cache: ActivationCache, ioi: IOIDataset, rows: Tensor
) -> float:
    """Mean IO - S logit difference over ``rows`` at ``end``, from a cached final residual."""
    final = cache[get_act_name("resid_post", model.cfg.n_layers - 1)]
    end = ioi.word_idx["end"][rows]
    with torch.no_grad():
        normed = model.ln_final(final[rows.to(final.device), end.to(final.device)][:, None])
        logits = normed @ model.W_U + model.b_U  # [row, 1, d_vocab]: a few rows only
    return float(logits_to_ave_logit_diff(logits, ioi.answer_tokens[rows]))
