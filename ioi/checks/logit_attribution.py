"""Checkers for section 2, logit attribution: directions, the final layer norm, layers, heads, attention.

Expected values come from `ioi.heads`. The known mistakes are recomputed here from
TransformerLens's cache methods with one thing changed each (no scale, the wrong position, ...).
"""

from __future__ import annotations

from collections.abc import Callable

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import ActivationCache

from ioi import heads
from ioi.checks.core import Exercise, exercise, rounding_atol, toy_sized, without_last_layer
from ioi.checks.fixtures import (
    IOIBatch,
    fresh_cache,
    ioi_batch,
    other_ioi_model,
    other_model_batch,
    patched_run_cache,
)
from ioi.checks.other_sizes import (
    describe_other_ioi_model,
    expect_on_other_sizes,
    toy_grid_axes,
)


def at_positions(
    stack: Float[Tensor, "*comp batch pos d"], positions: Int[Tensor, " batch"] | None
) -> Float[Tensor, "*comp batch d"]:
    """Each prompt's row at its own position (the last position when None)."""
    if positions is None:
        return stack[..., -1, :]
    return stack[..., torch.arange(stack.shape[-3]), positions, :]


def final_ln_scale(
    cache: ActivationCache, positions: Int[Tensor, " batch"] | None
) -> Float[Tensor, "batch 1"]:
    """The final layer norm's scale at each prompt's position (the last one if None)."""
    return at_positions(cache["ln_final.hook_scale"], positions)


def final_ln_variant(
    stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    positions: Int[Tensor, " batch"] | None,
    how: str = "cached",
) -> Float[Tensor, "*comp batch d_model"]:
    """The final layer norm applied to each component, right (``"cached"``) or as a mistake.

    ``"no_scale"``: centred only; ``"not_centred"``: divided only; ``"times_scale"``:
    multiplied by the scale; ``"per_component"``: ``model.ln_final`` on each component (its
    own norm, not the stream's); ``"last_scale"``: the scale of the padded batch's last column.
    """
    centred = stack - stack.mean(-1, keepdim=True)
    if how == "per_component":
        return cache.model.ln_final(stack)
    if how == "no_scale":
        return centred
    scale = final_ln_scale(cache, None if how == "last_scale" else positions)
    if how == "not_centred":
        return stack / scale
    return centred * scale if how == "times_scale" else centred / scale


def to_logit_diff(
    stack: Float[Tensor, "*comp batch d_model"],
    cache: ActivationCache,
    directions: Float[Tensor, "batch d_model"],
    positions: Int[Tensor, " batch"] | None,
    *,
    scale: bool = True,
    reduce: str = "mean",
    how: str = "cached",
) -> Float[Tensor, "..."]:
    """Attribution with switches for the mistakes: the layer norm ``how`` (see
    `final_ln_variant`; ``scale=False`` is ``how="no_scale"``), ``reduce="none"/"sum"``."""
    scaled = final_ln_variant(stack, cache, positions, how if scale else "no_scale")
    per = einops.einsum(scaled, directions, "... batch d_model, batch d_model -> ... batch")
    return {"mean": per.mean(-1), "sum": per.sum(-1), "none": per}[reduce]


LN_DIAGNOSES = {
    "no_ln_scale": "you did not divide by the final layer norm's scale; the logits see the "
    "residual stream only after ln_final",
    "ln_per_component": "you applied model.ln_final to each component: that divides each one "
    "by its *own* norm. The layer norm divides the whole stream by one scale, so every "
    "component must be divided by the stream's cached scale, cache['ln_final.hook_scale']",
    "multiplied_by_scale": "you multiplied by the layer norm's scale; the layer norm divides by it",
}
"""The layer-norm mistakes every attribution exercise can make (declared by each)."""


def ln_mistakes(
    stack: Tensor, cache: ActivationCache, positions: Tensor | None, attribute: Callable
) -> dict[str, Callable[[], Tensor]]:
    """``LN_DIAGNOSES`` mistakes: ``attribute(normed)`` turns the normed stack into the result."""
    return {
        key: (lambda how=how: attribute(final_ln_variant(stack, cache, positions, how)))
        for key, how in (
            ("no_ln_scale", "no_scale"),
            ("ln_per_component", "per_component"),
            ("multiplied_by_scale", "times_scale"),
        )
    }


def _directions(b: IOIBatch) -> Float[Tensor, "batch d_model"]:
    with torch.no_grad():
        return heads.logit_diff_directions(b.model, b.answer_tokens)


def _expect_values_and_labels(
    ex: Exercise, got: object, expected: tuple, call: str, mistakes: dict
) -> None:
    """For functions returning ``(values, labels)``: check the pair, then each part."""
    if not (isinstance(got, tuple) and len(got) == 2):
        ex.fail(
            "wrong_type",
            call=call,
            expected="a tuple (values, labels)",
            got=type(got).__name__,
            explanation="return both the [component] tensor and the list of labels",
            hint="pass return_labels=True to the cache method to get the labels.",
        )
    ex.expect_tensor(got[0], expected[0], call=call + "[0]", mistakes=mistakes)
    if list(got[1]) != list(expected[1]):
        ex.fail(
            "wrong_values",
            call=call + "[1]",
            expected=repr(list(expected[1])),
            got=repr(got[1]),
            explanation="the labels differ",
            hint="return the labels the cache method gives with return_labels=True.",
        )


# ---- logit_diff_directions ------------------------------------------------------------------

DIRECTIONS = exercise(
    "logit_diff_directions",
    hint="model.W_U[:, token] is the residual direction that raises a token's logit (or use "
    "model.tokens_to_residual_directions); subtract the S direction from the IO direction.",
    diagnoses={
        "wrong_sign": "you returned S minus IO; the logit difference is IO minus S",
        "embedding_not_unembedding": "you used the embedding W_E; the direction that moves a "
        "logit is the token's unembedding column W_U[:, token]",
        "not_subtracted": "you returned both directions ([batch, 2, d_model]); subtract them",
        "normalised_directions": "you scaled the directions to unit length; the logit "
        "difference is the dot product with the unnormalised difference W_U[:, IO] - W_U[:, S]",
        "io_direction_only": "you returned the IO's direction alone; subtract the S's, or the "
        "attribution measures the IO logit instead of the IO - S difference",
        "transposed": "the result is [d_model, batch]: W_U[:, ids] puts the tokens in the "
        "columns; transpose it (.T) so each prompt's direction is a row",
        "added_unembed_bias": "you added the unembedding bias b_U to the direction; b_U adds a "
        "constant to each logit and is no direction in the residual stream, so it stays out",
        "halved": "the result is half the expected one: (IO - S) / 2, or IO minus the mean of "
        "the two answers' directions; the logit difference direction is W_U[:, IO] - "
        "W_U[:, S] itself",
        "indexed_batch_axis": "you indexed the first axis of the [batch, 2, d_model] answer "
        "directions ([0] - [1]: prompts 0 and 1); the IO and S are the second axis: "
        "dirs[:, 0] - dirs[:, 1]",
        "averaged_over_prompts": "you returned one direction, the mean over prompts "
        "([d_model]); each prompt has its own IO and S, so return one row per prompt "
        "[batch, d_model]",
        "first_prompt_for_all": "every row is the first prompt's direction; prompt i's row "
        "uses its own answer_tokens[i]",
        "added_not_subtracted": "you added the two directions (IO + S); the logit difference "
        "is IO minus S",
        "indexed_unembedding_rows": "you indexed W_U's rows with token ids (W_U[ids]); W_U is "
        "[d_model, d_vocab], so a token's direction is its column W_U[:, id] (or W_U.T[id])",
    },
)


def test_logit_diff_directions(logit_diff_directions_fn: Callable) -> None:
    """Check ``logit_diff_directions(model, answer_tokens) -> [batch, d_model]``."""
    ex, b = DIRECTIONS, ioi_batch()
    model, answers = b.model, b.answer_tokens
    call = f"logit_diff_directions(model, answer_tokens)  [{b.describe()}]"
    d_model = model.cfg.d_model

    def raised_as(err: Exception) -> str | None:
        # W_U[ids] runs token ids (past d_model) into W_U's first axis, of size d_model.
        rows = isinstance(err, IndexError) and f"dimension 0 with size {d_model}" in str(err)
        return "indexed_unembedding_rows" if rows else None

    got = ex.call(
        logit_diff_directions_fn,
        model,
        answers.clone(),
        call=call,
        model=model,
        raised_as=raised_as,
    )
    expected = _directions(b)
    mistakes = {
        "wrong_sign": lambda: -expected,
        "embedding_not_unembedding": lambda: model.W_E[answers[:, 0]] - model.W_E[answers[:, 1]],
        "not_subtracted": lambda: model.tokens_to_residual_directions(answers),
        "normalised_directions": lambda: expected / expected.norm(dim=-1, keepdim=True),
        "io_direction_only": lambda: model.W_U[:, answers[:, 0]].T,
        "transposed": lambda: expected.T,
        "added_unembed_bias": lambda: (
            expected + (model.b_U[answers[:, 0]] - model.b_U[answers[:, 1]])[:, None]
        ),
        "halved": lambda: expected / 2,
        "averaged_over_prompts": lambda: expected.mean(0),
        "first_prompt_for_all": lambda: expected[:1].expand_as(expected),
        "added_not_subtracted": lambda: model.tokens_to_residual_directions(answers).sum(1),
        "indexed_batch_axis": lambda: [
            (both := model.tokens_to_residual_directions(answers))[0] - both[1],
            model.W_U[:, answers[0]].T - model.W_U[:, answers[1]].T,
        ],
    }
    ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    ex.passed()


# ---- apply_final_ln -------------------------------------------------------------------------

FINAL_LN = exercise(
    "apply_final_ln",
    hint="subtract each vector's mean over d_model, then divide by cache['ln_final.hook_scale'] "
    "([batch, pos, 1]) read at each prompt's position.",
    diagnoses={
        **LN_DIAGNOSES,
        "not_centred": "you did not subtract the mean over d_model first (the layer norm centres "
        "before it scales)",
        "scale_at_last_position": "you took the scale at the last position of the padded batch, "
        "not at each prompt's `positions`",
        "wrong_layer_norm_scale": "you divided by the scale of another layer norm "
        "(a block's ln1 or ln2); the logits are computed after the *final* one, "
        "cache['ln_final.hook_scale']",
        "centred_wrong_axis": "you subtracted a mean over another axis (the batch or the "
        "components); the layer norm centres each vector over d_model (mean(-1))",
        "position_off_by_one": "you took the scale one position away from `positions`",
        "sqrt_of_scale": "you divided by the square root (or the square) of the scale; "
        "cache['ln_final.hook_scale'] already is the standard deviation sqrt(var + eps): "
        "divide by it as it is",
        "recomputed_scale": "you recomputed the scale from the residual stream with .std(): "
        "torch's std is the unbiased one (divides by d_model - 1) and leaves out eps, so it "
        "is not the layer norm's scale. Divide by the cached cache['ln_final.hook_scale']",
    },
    shared=("batch_by_batch_indexing", "same_position_for_all_prompts", "first_position_for_none"),
)


def test_apply_final_ln(apply_final_ln_fn: Callable) -> None:
    """Check ``apply_final_ln(residual_stack, cache, positions=None) -> same shape``."""
    ex, b = FINAL_LN, ioi_batch()
    cache = b.clean_cache
    full = cache.decompose_resid(layer=-1)  # [component, batch, pos, d_model]
    # The model's components are already nearly centred (centre_writing_weights), so add one
    # random component that is not, or forgetting to centre would go unnoticed.
    extra = torch.randn(1, *full.shape[1:], generator=torch.Generator().manual_seed(0)) + 1.0
    full = torch.cat([full, extra])
    other_scales = [n for n in cache.keys() if n.endswith("hook_scale") and "ln_final" not in n]
    for positions in (b.end, None):
        stack = at_positions(full, positions)
        where = "None" if positions is None else "end"
        call = (
            f"apply_final_ln(stack, cache, positions={where})  where stack = the decomposed "
            f"residual stream at {where} plus one random uncentred component, shape "
            f"{list(stack.shape)}  [{b.describe()}]"
        )
        given = fresh_cache(cache)
        got = ex.call(
            apply_final_ln_fn,
            stack.clone(),
            given,
            None if positions is None else positions.clone(),
            call=call,
            read_only={"cache": given},
        )
        centred = stack - stack.mean(-1, keepdim=True)
        rows = torch.arange(stack.shape[-2])

        def other_scale(centred=centred, positions=positions, rows=rows):
            return [
                centred / (cache[n][:, -1] if positions is None else cache[n][rows, positions])
                for n in other_scales
            ]

        scale = final_ln_scale(cache, positions)
        final_resid = at_positions(
            cache[f"blocks.{b.model.cfg.n_layers - 1}.hook_resid_post"], positions
        )
        mistakes = {
            **ln_mistakes(stack, cache, positions, lambda normed: normed),
            "not_centred": lambda s=stack, p=positions: s / final_ln_scale(cache, p),
            "wrong_layer_norm_scale": other_scale,
            "sqrt_of_scale": lambda c=centred, k=scale: [c / k.sqrt(), c / k**2],
            "recomputed_scale": lambda c=centred, r=final_resid: [
                c / r.std(-1, keepdim=True),
                c / (r - r.mean(-1, keepdim=True)).norm(dim=-1, keepdim=True),
            ],
        }
        mistakes["centred_wrong_axis"] = lambda s=stack, k=scale: [
            (s - s.mean(axis, keepdim=True)) / k for axis in range(s.ndim - 1)
        ]
        if positions is not None:
            mistakes["scale_at_last_position"] = lambda c=centred: c / final_ln_scale(cache, None)
            n_pos = cache["ln_final.hook_scale"].shape[1]
            mistakes["position_off_by_one"] = lambda c=centred, p=positions, n=n_pos: [
                c / final_ln_scale(cache, (p + d).clamp(0, n - 1)) for d in (1, -1)
            ]
            grid = cache["ln_final.hook_scale"][:, positions, 0]  # [batch, batch]
            mistakes["batch_by_batch_indexing"] = lambda c=centred, g=grid: [
                c / g.mean(1, keepdim=True),
                c / g.mean(0)[:, None],
            ]
            mistakes["same_position_for_all_prompts"] = lambda c=centred, g=grid: c / g[:, :1]
        else:
            mistakes["first_position_for_none"] = lambda c=centred: (
                c / final_ln_scale(cache, torch.zeros_like(b.end))
            )
        expected = heads.apply_final_ln(stack, cache, positions)
        # a scale recomputed with another LayerNorm eps is a right answer too
        atol = rounding_atol(expected)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=atol)
    ex.passed()


# ---- residual_stack_to_logit_diff -----------------------------------------------------------

SCALE_AT_LAST = (
    "you took the layer-norm scale at the last position of the padded batch, not at each "
    "prompt's `positions` (pass `positions` on to apply_final_ln / residual_stack_to_logit_diff)"
)
NORMALISED_DIRECTIONS = (
    "you scaled the directions to unit length (or divided by their norm); the logit "
    "difference is the dot product with the directions as given"
)

STACK = exercise(
    "residual_stack_to_logit_diff",
    hint="apply_final_ln(residual_stack, cache, positions), dot with the directions over "
    "d_model (einops.einsum), and average over the batch.",
    diagnoses={
        **LN_DIAGNOSES,
        "scale_at_last_position": SCALE_AT_LAST,
        "returned_per_prompt": "you returned one value per prompt; average over the batch",
        "normalised_directions": NORMALISED_DIRECTIONS,
        "averaged_components": "you averaged over the components as well; return one value "
        "per component (average over the batch only)",
        "all_pairs_of_prompts": "you dotted every prompt's vector with every prompt's "
        "direction (a [batch, batch] product, `@ directions.T`) and averaged all the pairs; "
        "pair each prompt with its own direction: einops.einsum(scaled, directions, '... "
        "batch d, batch d -> ... batch'), then average over the batch",
        "mean_over_wrong_axis": "you averaged over the first axis (the components) and kept "
        "the prompts; average over the batch, the last axis of the per-prompt values",
    },
    shared=("sum_not_mean",),
)


def test_residual_stack_to_logit_diff(residual_stack_to_logit_diff_fn: Callable) -> None:
    """Check ``residual_stack_to_logit_diff(residual_stack, cache, logit_diff_directions, positions=None)``."""
    ex, b = STACK, ioi_batch()
    dirs, cache = _directions(b), b.clean_cache
    full = cache.accumulated_resid(layer=-1, incl_mid=True)  # [component, batch, pos, d_model]
    for positions in (b.end, None):
        stack = at_positions(full, positions)
        where = "None" if positions is None else "end"
        call = (
            f"residual_stack_to_logit_diff(stack, cache, logit_diff_directions, positions={where})"
            f"  where stack = the accumulated residual stream at {where}, shape "
            f"{list(stack.shape)}  [{b.describe()}]"
        )
        given = fresh_cache(cache)
        got = ex.call(
            residual_stack_to_logit_diff_fn,
            stack.clone(),
            given,
            dirs.clone(),
            positions=None if positions is None else positions.clone(),
            call=call,
            read_only={"cache": given},
        )

        def wrong(s=stack, p=positions, **how):
            return lambda: to_logit_diff(s, cache, dirs, p, **how)

        def dot(normed):
            return einops.einsum(normed, dirs, "... batch d, batch d -> ... batch").mean(-1)

        mistakes = {
            **ln_mistakes(stack, cache, positions, dot),
            "returned_per_prompt": wrong(reduce="none"),
            "sum_not_mean": wrong(reduce="sum"),
            "normalised_directions": lambda s=stack, p=positions: [
                to_logit_diff(s, cache, dirs / dirs.norm(dim=-1, keepdim=True), p),
                to_logit_diff(s, cache, dirs, p) / dirs.norm(dim=-1).mean(),
            ],
            "averaged_components": lambda s=stack, p=positions: to_logit_diff(
                s, cache, dirs, p
            ).mean(),
            "all_pairs_of_prompts": lambda s=stack, p=positions: (
                final_ln_variant(s, cache, p) @ dirs.T
            ).mean((-1, -2)),
            "mean_over_wrong_axis": lambda s=stack, p=positions: to_logit_diff(
                s, cache, dirs, p, reduce="none"
            ).mean(0),
        }
        if positions is not None:
            mistakes["scale_at_last_position"] = wrong(p=None)
        expected = heads.residual_stack_to_logit_diff(stack, cache, dirs, positions)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    final = float(
        heads.residual_stack_to_logit_diff(at_positions(full, b.end), cache, dirs, b.end)[-1]
    )
    b_u = b.model.b_U.detach()
    bias = float((b_u[b.answer_tokens[:, 0]] - b_u[b.answer_tokens[:, 1]]).mean())
    ex.passed(
        f"final residual stream gives {final:.3f}, + unembedding bias {bias:.3f} = the model's "
        f"logit diff {b.clean_logit_diff:.3f}"
    )


# ---- accumulated_resid_logit_diffs and per_layer_logit_diffs --------------------------------


def _attribution_on_other_sizes(
    ex: Exercise,
    fn: Callable,
    name: str,
    library: Callable,
    axes: dict[int, int],
    compare: Callable | None = None,
) -> None:
    """``fn(model, cache, answer_tokens, positions=end)`` on `other_model_batch` (a random model
    of more layers and heads), compared with ``library`` of the same signature: the toy's
    sizes at ``axes`` written in are ``hard_coded_size``."""
    other = other_model_batch()
    call = f"{name}(model, cache, answer_tokens, positions=end)  [{other.describe()}]"
    expected = library(other.model, other.clean_cache, other.answer_tokens, other.end)
    expect_on_other_sizes(
        ex,
        fn,
        other.model,
        fresh_cache(other.clean_cache),
        other.answer_tokens.clone(),
        other.end.clone(),
        call=call,
        model=other.model,
        expected=expected,
        axes=axes,
        compare=compare,
    )


def _check_resid_attribution(
    ex: Exercise, fn: Callable, name: str, library: Callable, stacks: dict[str, Tensor]
) -> None:
    """The body both residual-stream exercises share: call, then check values and labels,
    on the toy and then on a random model of other sizes.

    ``library`` is the library's function of the exercise's signature. ``stacks`` maps a
    mistake to the [component, batch, pos, d_model] stack it reads (the right one under
    ``"right"``); layer-norm and position mistakes are added here.
    """
    b = ioi_batch()

    def expected(positions):
        return library(b.model, b.clean_cache, b.answer_tokens, positions)

    dirs, cache, end = _directions(b), b.clean_cache, b.end
    first = torch.zeros_like(end)
    for positions in (end, None):
        where = "end" if positions is not None else "None"
        call = f"{name}(model, cache, answer_tokens, positions={where})  [{b.describe()}]"
        given = fresh_cache(cache)
        got = ex.call(
            fn,
            b.model,
            given,
            b.answer_tokens.clone(),
            None if positions is None else positions.clone(),
            call=call,
            model=b.model,
            raised_as=None if positions is not None else "none_branch_raised",
        )
        right = at_positions(stacks["right"], positions)

        def dot(normed):
            return einops.einsum(normed, dirs, "... batch d, batch d -> ... batch").mean(-1)

        mistakes = {
            key: (
                lambda stack=stack, p=positions: to_logit_diff(
                    at_positions(stack, p), cache, dirs, p
                )
            )
            for key, stack in stacks.items()
            if key != "right"
        }
        mistakes.update(ln_mistakes(right, cache, positions, dot))
        want = expected(positions)
        mistakes["layer_norm_twice"] = lambda r=right, p=positions: [
            to_logit_diff(final_ln_variant(r, cache, p, how), cache, dirs, p)
            for how in ("cached", "per_component")
        ]
        mistakes["missed_last_layer"] = lambda v=want[0]: [v[:-2], v[:-1]]
        mistakes["wrong_sign"] = lambda v=want[0]: -v
        mistakes["returned_per_prompt"] = lambda r=right, p=positions: to_logit_diff(
            r, cache, dirs, p, reduce="none"
        )
        mistakes["sum_not_mean"] = lambda r=right, p=positions: to_logit_diff(
            r, cache, dirs, p, reduce="sum"
        )
        mistakes["averaged_components"] = lambda r=right, p=positions: [
            to_logit_diff(r, cache, dirs, p, reduce="none").mean(0),
            to_logit_diff(r, cache, dirs, p).mean(),
        ]
        if positions is None:
            mistakes["first_position_for_none"] = lambda: to_logit_diff(
                at_positions(stacks["right"], first), cache, dirs, first
            )
        else:
            mistakes["ignored_positions"] = lambda: to_logit_diff(
                at_positions(stacks["right"], None), cache, dirs, None
            )
            mistakes["stack_at_last_position"] = lambda p=positions: to_logit_diff(
                at_positions(stacks["right"], None), cache, dirs, p
            )
            mistakes["positions_not_passed_on"] = lambda r=right: to_logit_diff(
                r, cache, dirs, None
            )
            last = stacks["right"].shape[-2] - 1
            mistakes["position_off_by_one"] = lambda p=positions, last=last: [
                to_logit_diff(at_positions(stacks["right"], q), cache, dirs, r)
                for q in ((p - 1).clamp(0, last), (p + 1).clamp(0, last))
                for r in (q, p)
            ]
            # stack[:, :, positions] keeps every prompt's row at every prompt's position
            grid = stacks["right"][:, :, positions]  # [comp, batch, batch, d_model]
            mistakes["position_grid"] = lambda g=grid, p=positions: [
                heads.residual_stack_to_logit_diff(g, cache, dirs, p),
                heads.residual_stack_to_logit_diff(g, cache, dirs, p).mean(-1),
            ]
        _expect_values_and_labels(ex, got, want, call, mistakes)
    _attribution_on_other_sizes(
        ex,
        fn,
        name,
        library,
        {0: len(want[1])},  # one entry per toy component
        compare=lambda got, want, call, mistakes: _expect_values_and_labels(
            ex, got, want, call, mistakes
        ),
    )


RESID_DIAGNOSES = {
    "ignored_positions": "you read the last position of the padded batch, not `positions`",
    "stack_at_last_position": "you read the residual stream at the last column of the padded "
    "batch but the layer-norm scale at `positions`; read both at each prompt's position",
    "layer_norm_twice": "the final layer norm was applied twice: once by the cache "
    "(apply_ln=True) and again by residual_stack_to_logit_diff; apply it once",
    "wrong_sign": "every value has the wrong sign: you measured S minus IO. answer_tokens[:, 0] "
    "is the IO and [:, 1] the S, and the direction is W_U[:, IO] - W_U[:, S]",
    "returned_per_prompt": "you returned one value per component *and prompt* ([component, "
    "batch]); average over the batch (the last axis) to get one value per component",
    "averaged_components": "you averaged over the components (or over everything); keep one "
    "value per component and average over the prompts only",
    "positions_not_passed_on": "you read the stream at `positions` but did not pass "
    "`positions` on to residual_stack_to_logit_diff, which then divides by the layer-norm "
    "scale of the last column (its default); pass the same positions to both",
    "position_grid": "stack[:, :, positions] reads *every* prompt at *every* prompt's "
    "position (a [batch, batch] grid); index the prompts and their positions together: "
    "stack[:, torch.arange(batch), positions]",
    "position_off_by_one": "you read one position away from `positions` (positions + 1 or "
    "- 1): `positions` already holds the position that predicts the answer, use it as it is",
}
"""Mistakes both residual-stream attribution exercises invite (declared by each)."""


ACCUMULATED = exercise(
    "accumulated_resid_logit_diffs",
    hint="cache.accumulated_resid(layer=-1, incl_mid=True, return_labels=True) gives "
    "[component, batch, pos, d_model] and labels; take each prompt's position, then use "
    "residual_stack_to_logit_diff with logit_diff_directions.",
    diagnoses={
        **LN_DIAGNOSES,
        "ln_per_component": LN_DIAGNOSES["ln_per_component"]
        + " (cache.accumulated_resid(..., apply_ln=True) does the same: for the final stream "
        "it recomputes the norm of each entry)",
        "missing_mid": "you have one entry per layer: include the residual stream between "
        "attention and MLP too (incl_mid=True), giving 2 * n_layers + 1 entries",
        "decomposed_not_accumulated": "these are the decomposed values (what each part added); "
        "this exercise wants the running total before each sub-layer (accumulated_resid)",
        "missing_first_entry": "the first entry, the stream before layer 0 (the embeddings, "
        "blocks.0.hook_resid_pre), is missing: a stack built from each layer's resid_mid and "
        "resid_post starts one entry late; start from resid_pre of layer 0, or use "
        "cache.accumulated_resid(layer=-1, incl_mid=True)",
        **RESID_DIAGNOSES,
    },
    shared=(
        "first_position_for_none",
        "missed_last_layer",
        "none_branch_raised",
        "sum_not_mean",
        "hard_coded_size",
    ),
)


def test_accumulated_resid_logit_diffs(accumulated_resid_logit_diffs_fn: Callable) -> None:
    """Check ``accumulated_resid_logit_diffs(model, cache, answer_tokens, positions=None) -> (values, labels)``."""
    cache = ioi_batch().clean_cache
    right = cache.accumulated_resid(layer=-1, incl_mid=True)
    stacks = {
        "right": right,
        "missing_first_entry": right[1:],
        "missing_mid": cache.accumulated_resid(layer=-1, incl_mid=False),
        "decomposed_not_accumulated": cache.decompose_resid(layer=-1),
    }
    _check_resid_attribution(
        ACCUMULATED,
        accumulated_resid_logit_diffs_fn,
        "accumulated_resid_logit_diffs",
        heads.accumulated_resid_logit_diffs,
        stacks,
    )
    ACCUMULATED.passed("positions=end and None; the toy and a model of other sizes")


PER_LAYER = exercise(
    "per_layer_logit_diffs",
    hint="cache.decompose_resid(layer=-1, return_labels=True) splits the final residual stream "
    "into what each part wrote (embeddings, each attention and MLP output); take each prompt's "
    "position, then use residual_stack_to_logit_diff.",
    diagnoses={
        **LN_DIAGNOSES,
        "accumulated_not_decomposed": "these are the accumulated (running-total) values; this "
        "exercise wants what each layer's attention and MLP *added* (decompose_resid)",
        "missing_embeds": "the token and position embeddings are missing (incl_embeds=True)",
        "missing_mlps": "the MLPs are missing (mode='attn'); decompose into embeddings, "
        "attention and MLP outputs (mode='all')",
        **RESID_DIAGNOSES,
    },
    shared=(
        "first_position_for_none",
        "missed_last_layer",
        "none_branch_raised",
        "sum_not_mean",
        "hard_coded_size",
    ),
)


def test_per_layer_logit_diffs(per_layer_logit_diffs_fn: Callable) -> None:
    """Check ``per_layer_logit_diffs(model, cache, answer_tokens, positions=None) -> (values, labels)``."""
    cache = ioi_batch().clean_cache
    stacks = {
        "right": cache.decompose_resid(layer=-1, mode="all", incl_embeds=True),
        "accumulated_not_decomposed": cache.accumulated_resid(layer=-1, incl_mid=True),
        "missing_embeds": cache.decompose_resid(layer=-1, mode="all", incl_embeds=False),
        "missing_mlps": cache.decompose_resid(layer=-1, mode="attn"),
    }
    _check_resid_attribution(
        PER_LAYER,
        per_layer_logit_diffs_fn,
        "per_layer_logit_diffs",
        heads.per_layer_logit_diffs,
        stacks,
    )
    PER_LAYER.passed("positions=end and None; the toy and a model of other sizes")


# ---- head_results_at and per_head_logit_diffs -----------------------------------------------

B_O_DIAGNOSIS = (
    "you added b_O to every head's output: b_O belongs to the attention layer and is added "
    "once to the sum of its heads, so it is no head's own contribution"
)

HEAD_RESULTS = exercise(
    "head_results_at",
    hint="for each layer, read cache['z', layer] ([batch, pos, head, d_head]) at each prompt's "
    "position and multiply by model.W_O[layer] ([head, d_head, d_model]) with einops.einsum, "
    "keeping the head axis; stack the layers.",
    diagnoses={
        "z_not_output": "you returned z, the heads' value-weighted sums (d_head wide); a head's "
        "output is z @ W_O (d_model wide)",
        "wrong_layout": "the right numbers in the wrong axis order; return [layer, head, batch, d_model]",
        "ignored_positions": "you read the last position of the padded batch, not `positions`",
        "summed_heads": "you summed over heads (that is the attention layer's output, minus its "
        "bias); keep one vector per head",
        "added_b_O": B_O_DIAGNOSIS,
        "wrong_layer_weights": "every layer's z was multiplied by one layer's W_O (say "
        "model.W_O[0]); layer `layer`'s heads write through their own model.W_O[layer]",
        "position_off_by_one": "you read z one position away from `positions` (positions + 1 "
        "or - 1): `positions` already holds the position that predicts the answer",
        "v_not_z": "you multiplied v (each position's value vectors, before the attention "
        "pattern mixes them) by W_O; a head's output is its z (hook_z, the pattern-weighted "
        "sum of the values) times W_O",
    },
    shared=(
        "missed_last_layer",
        "first_position_for_none",
        "hard_coded_size",
        "none_branch_raised",
    ),
)


LAYOUTS = ((0, 2, 1, 3), (2, 0, 1, 3), (1, 0, 2, 3), (2, 1, 0, 3))  # wrong axis orders seen


def test_head_results_at(head_results_at_fn: Callable) -> None:
    """Check ``head_results_at(model, cache, positions) -> [layer, head, batch, d_model]``."""
    ex, b, other = HEAD_RESULTS, ioi_batch(), other_model_batch()
    toy = {0: b.model.cfg.n_layers, 1: b.model.cfg.n_heads}
    cases = (
        (b.model, b.clean_cache, b.end, "end", b.describe()),
        (b.model, b.clean_cache, None, "None", b.describe()),
        (other.model, other.clean_cache, other.end, "end", other.describe()),
    )
    for model, cache, positions, where, setting in cases:
        call = f"head_results_at(model, cache, positions={where})  [{setting}]"
        got = ex.call(
            head_results_at_fn,
            model,
            fresh_cache(cache),
            None if positions is None else positions.clone(),
            call=call,
            model=model,
            raised_as="none_branch_raised" if positions is None else None,
        )
        expected = heads.head_results_at(model, cache, positions).detach()
        rows = torch.arange(cache["z", 0].shape[0])
        at = (lambda t: t[:, -1]) if positions is None else (lambda t, p=positions, r=rows: t[r, p])
        z = torch.stack([at(cache["z", layer]) for layer in range(model.cfg.n_layers)])
        w_o = model.W_O.detach()

        def through(zs, weights):
            return einops.einsum(zs, weights, "l b h d, l h d m -> l h b m")

        def z_at(p, name="z", c=cache, m=model, r=rows):
            picked = (lambda t: t[:, -1]) if p is None else (lambda t: t[r, p])
            return torch.stack([picked(c[name, layer]) for layer in range(m.cfg.n_layers)])

        def same_numbers_other_layout(expected=expected, got=got):
            shape = tuple(getattr(got, "shape", ()))
            return [expected.permute(*o) for o in LAYOUTS if expected.permute(*o).shape == shape]

        mistakes = {
            "z_not_output": lambda z=z: z.permute(0, 2, 1, 3),  # [layer, head, batch, d_head]
            "summed_heads": lambda e=expected: e.sum(1),
            "added_b_O": lambda e=expected, m=model: [
                e + m.b_O.detach()[:, None, None, :] / k for k in (1, m.cfg.n_heads)
            ],
            "missed_last_layer": lambda e=expected: without_last_layer(e),
            "wrong_layout": same_numbers_other_layout,
            "wrong_layer_weights": lambda z=z, w=w_o: [
                through(z, w[k : k + 1].expand_as(w)) for k in range(w.shape[0])
            ],
            "v_not_z": lambda p=positions, w=w_o: through(z_at(p, "v"), w),
        }
        if positions is not None:
            n_pos = cache["z", 0].shape[1]
            mistakes["position_off_by_one"] = lambda p=positions, w=w_o, n=n_pos: [
                through(z_at((p + d).clamp(0, n - 1)), w) for d in (1, -1)
            ]
        if positions is None:
            mistakes["first_position_for_none"] = lambda m=model, c=cache: heads.head_results_at(
                m, c, torch.zeros(c["z", 0].shape[0], dtype=torch.long)
            )
        else:
            mistakes["ignored_positions"] = lambda m=model, c=cache: heads.head_results_at(
                m, c, None
            )
        if model is other.model:
            mistakes = {"hard_coded_size": lambda e=expected: toy_sized(e, toy), **mistakes}
        atol = rounding_atol(expected)  # z @ W_O in float16 is a right answer too
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes, atol=atol)
    ex.passed("positions=end and None; the toy and a model of another size")


PER_HEAD = exercise(
    "per_head_logit_diffs",
    hint="head_results_at(model, cache, positions) gives [layer, head, batch, d_model]; pass it "
    "to residual_stack_to_logit_diff with logit_diff_directions(model, answer_tokens).",
    diagnoses={
        **LN_DIAGNOSES,
        "transposed": "the result is [head, layer]; the exercise asks for [layer, head]",
        "scrambled_layout": "the numbers are right but in the wrong cells: a [head, layer] "
        "result reshaped (not transposed) to [layer, head] mixes heads of different layers",
        "ignored_positions": "you read the last position of the padded batch, not `positions`",
        "stack_at_last_position": RESID_DIAGNOSES["stack_at_last_position"],
        "added_b_O": B_O_DIAGNOSIS,
        "scale_at_last_position": SCALE_AT_LAST,
        "normalised_directions": NORMALISED_DIRECTIONS,
        "wrong_sign": RESID_DIAGNOSES["wrong_sign"],
        "layer_split_evenly": "every head of a layer got the same value, the layer's "
        "attention output split evenly between its heads; attribute each head's own output "
        "(head_results_at) instead",
    },
    shared=(
        "missed_last_layer",
        "sum_not_mean",
        "first_position_for_none",
        "none_branch_raised",
        "hard_coded_size",
    ),
)


def test_per_head_logit_diffs(per_head_logit_diffs_fn: Callable) -> None:
    """Check ``per_head_logit_diffs(model, cache, answer_tokens, positions=None) -> [layer, head]``."""
    ex, b = PER_HEAD, ioi_batch()
    dirs, cache, end, model = _directions(b), b.clean_cache, b.end, b.model
    for positions in (end, None):
        where = "end" if positions is not None else "None"
        call = (
            f"per_head_logit_diffs(model, cache, answer_tokens, positions={where})  "
            f"[{b.describe()}]"
        )
        got = ex.call(
            per_head_logit_diffs_fn,
            model,
            fresh_cache(cache),
            b.answer_tokens.clone(),
            None if positions is None else positions.clone(),
            call=call,
            model=model,
            raised_as="none_branch_raised" if positions is None else None,
        )
        expected = heads.per_head_logit_diffs(model, cache, b.answer_tokens, positions).detach()
        results = heads.head_results_at(model, cache, positions).detach()

        def dot(normed):
            return einops.einsum(normed, dirs, "... batch d, batch d -> ... batch").mean(-1)

        def wrong(r=results, p=positions, **how):
            return lambda: to_logit_diff(r, cache, dirs, p, **how)

        first = torch.zeros_like(end)
        mistakes = {
            **ln_mistakes(results, cache, positions, dot),
            "transposed": lambda e=expected: e.T,
            "scrambled_layout": lambda e=expected: [
                e.T.reshape(e.shape),
                e.reshape(e.shape[::-1]).T,
            ],
            "added_b_O": lambda r=results, p=positions: [
                to_logit_diff(r + model.b_O.detach()[:, None, None, :] / k, cache, dirs, p)
                for k in (1, model.cfg.n_heads)
            ],
            "sum_not_mean": wrong(reduce="sum"),
            "missed_last_layer": lambda e=expected: without_last_layer(e),
            "normalised_directions": lambda r=results, p=positions: [
                to_logit_diff(r, cache, dirs / dirs.norm(dim=-1, keepdim=True), p),
                to_logit_diff(r, cache, dirs, p) / dirs.norm(dim=-1).mean(),
            ],
            "wrong_sign": lambda e=expected: -e,
            "layer_split_evenly": lambda r=results, p=positions, e=expected: [
                to_logit_diff(r.sum(1) + model.b_O.detach()[:, None, :] * k, cache, dirs, p)[
                    :, None
                ].expand_as(e)
                / model.cfg.n_heads
                for k in (0, 1)
            ],
        }
        if positions is None:
            mistakes["first_position_for_none"] = lambda first=first, results=results: [
                heads.per_head_logit_diffs(model, cache, b.answer_tokens, first),
                to_logit_diff(results, cache, dirs, first),
                to_logit_diff(heads.head_results_at(model, cache, first), cache, dirs, None),
            ]
        else:
            mistakes["ignored_positions"] = lambda: heads.per_head_logit_diffs(
                model, cache, b.answer_tokens, None
            )
            mistakes["stack_at_last_position"] = lambda p=positions: to_logit_diff(
                heads.head_results_at(model, cache, None), cache, dirs, p
            )
            mistakes["scale_at_last_position"] = wrong(p=None)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    _attribution_on_other_sizes(
        ex,
        per_head_logit_diffs_fn,
        "per_head_logit_diffs",
        lambda *args: heads.per_head_logit_diffs(*args).detach(),
        toy_grid_axes(),
    )
    ex.passed("positions=end and None; the toy and a model of other sizes")


# ---- ioi_attention --------------------------------------------------------------------------

ATTENTION = exercise(
    "ioi_attention",
    hint="run the model with a cache if none is given; cache['pattern', layer] is [batch, "
    "head, query (dest), key (src)]: for each prompt read [i, :, word_idx[dest][i], "
    "word_idx[src][i]], average over prompts, stack over layers.",
    diagnoses={
        "swapped_dest_src": "you indexed the pattern as [..., src, dest]; the query (the token "
        "doing the attending, dest) comes before the key (src)",
        "scores_not_pattern": "you read the attention scores before the softmax "
        "(hook_attn_scores); read the probabilities, cache['pattern', layer]",
        "ignored_positions": "you used the last position of the padded batch as the query "
        "instead of word_idx[dest]",
        "wrong_word": "the values are the attention between other words than `dest` and "
        "`src` asked for: a word hard-coded, or the keys mixed up",
        "max_not_mean": "you took the maximum over prompts; average them",
        "position_off_by_one": "a query or key position is one away from the word asked for: "
        "word_idx already holds each word's own position",
    },
    shared=(
        "sum_not_mean",
        "same_position_for_all_prompts",
        "missed_last_layer",
        "ignored_given_cache",
        "hard_coded_size",
    ),
)


def attention_between(
    cache: ActivationCache,
    dest_pos: Int[Tensor, " batch"],
    src_pos: Int[Tensor, " batch"],
    name: str = "pattern",
    reduce: str = "mean",
) -> Float[Tensor, "layer head"]:
    """Mean (or sum, or max) over prompts of attention (or scores) from ``dest_pos`` to ``src_pos``."""
    rows = torch.arange(dest_pos.shape[0])
    layers = range(cache.model.cfg.n_layers)
    values = torch.stack([cache[name, layer][rows, :, dest_pos, src_pos] for layer in layers])
    return {"mean": values.mean(1), "sum": values.sum(1), "max": values.amax(1)}[reduce]


WORDS = ("IO", "S1", "S2", "end", "S1+1")


def test_ioi_attention(ioi_attention_fn: Callable) -> None:
    """Check ``ioi_attention(model, ds, dest, src, cache=None) -> [layer, head]``."""
    ex, b = ATTENTION, ioi_batch()
    plain, idx = b.clean_cache, b.ds.word_idx
    last = torch.full_like(idx["end"], plain["pattern", 0].shape[-1] - 1)
    n = int(last[0])
    cases = (("end", "S2", "cache"), ("S2", "IO", "None"), ("end", "IO", "cache"))
    for dest, src, given in cases + (("end", "IO", "patched"),):
        patched = given == "patched"
        cache = patched_run_cache(b, "clean") if patched else plain
        shown = "cache of a patched run" if patched else given
        call = f"ioi_attention(model, ds, {dest!r}, {src!r}, cache={shown})  [{b.describe()}]"
        passed = None if given == "None" else fresh_cache(cache)
        got = ex.call(
            ioi_attention_fn,
            b.model,
            b.ds,
            dest,
            src,
            cache=passed,
            call=call,
            model=b.model,
            read_only={"ds": b.ds} | ({} if passed is None else {"cache": passed}),
        )
        d, s = idx[dest], idx[src]
        mistakes = {
            "swapped_dest_src": lambda c=cache, d=d, s=s: attention_between(c, s, d),
            "scores_not_pattern": lambda c=cache, d=d, s=s: attention_between(
                c, d, s, "attn_scores"
            ),
            "sum_not_mean": lambda c=cache, d=d, s=s: attention_between(c, d, s, reduce="sum"),
            "max_not_mean": lambda c=cache, d=d, s=s: attention_between(c, d, s, reduce="max"),
            "position_off_by_one": lambda c=cache, d=d, s=s: [
                attention_between(c, (d + i).clamp(0, n), (s + j).clamp(0, n))
                for i in (-1, 0, 1)
                for j in (-1, 0, 1)
                if (i, j) != (0, 0)
            ],
            "same_position_for_all_prompts": lambda c=cache, d=d, s=s: attention_between(
                c, d[:1].expand_as(d), s[:1].expand_as(s)
            ),
            "missed_last_layer": lambda c=cache, d=d, s=s: without_last_layer(
                attention_between(c, d, s)
            ),
            "wrong_word": lambda c=cache, dest=dest, src=src: [
                attention_between(c, idx[x], idx[y])
                for x in WORDS
                for y in WORDS
                if (x, y) != (dest, src) and (x, y) != (src, dest)
            ],
        }
        if dest == "end":
            mistakes["ignored_positions"] = lambda c=cache, s=s: attention_between(c, last, s)
        if patched:
            mistakes["ignored_given_cache"] = lambda d=d, s=s: attention_between(plain, d, s)
        expected = heads.ioi_attention(b.model, b.ds, dest, src, cache=cache)
        ex.expect_tensor(got, expected, call=call, mistakes=mistakes)
    model = other_ioi_model()
    call = f"ioi_attention(model, ds, 'end', 'S2', cache=None)  [{describe_other_ioi_model()}]"
    expect_on_other_sizes(
        ex,
        ioi_attention_fn,
        model,
        b.ds,
        "end",
        "S2",
        None,
        call=call,
        model=model,
        expected=heads.ioi_attention(model, b.ds, "end", "S2"),
        axes=toy_grid_axes(),
    )
    ex.passed("the toy, and a random model of other sizes")
