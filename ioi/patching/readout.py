"""Which logits the metric reads, and how to hand it a sender's logits.

Unembedding is the dearest step of a patched pass (d_vocab = 50257 columns for every token).
A patching metric such as the normalised IOI metric reads only two logits per prompt, at
``end``. `detect_readout` finds the entries a metric reads, so the engine unembeds only those
rows (positions) and columns (tokens); every other entry it passes to the metric is NaN, so a
metric that reads anything else returns NaN instead of a silently wrong number.

Detection: the gradient of the metric at the original logits marks candidate entries; the
candidates are accepted only if the metric gives *bitwise* the same value when every other
entry is NaN, and again when every other entry is replaced by unrelated values. Otherwise, or
for a metric without a gradient (argmax, ``.item()``), the engine computes all logits. A metric
that reads an entry where its gradient is zero *and* ignores NaN there *and* ignores its value
would fool the check; pass ``readout="all"`` for such a metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

Metric = Callable[[Tensor], Tensor | float]
READOUT_CHOICES = ("auto", "all")
_SAVING_FRACTION = 0.5  # below this share of entries, a partial readout is worth it
_PROBE_VALUE = 123.25  # fills unread entries in the second probe


class NaNLogits:
    """A NaN-filled [batch, pos, d_vocab] tensor, made once and lent to every pass of a sweep.

    A metric that declares its positions (and tokens) gets logits only there; every other entry
    is NaN. Within a sweep the declared entries never change, so each pass only overwrites the
    same ones, and the NaN fill (at GPT-2's vocabulary as costly as a layer of the model on a CPU)
    happens once. Metrics must not modify the logits they are given in place.
    """

    def __init__(self) -> None:
        self._tensor: Tensor | None = None

    def get(
        self, batch: int, n_pos: int, d_vocab: int, like: Tensor
    ) -> Float[Tensor, "batch pos d_vocab"]:
        shape = (batch, n_pos, d_vocab)
        t = self._tensor
        if t is None or t.shape != shape or t.dtype != like.dtype or t.device != like.device:
            self._tensor = t = like.new_full(shape, float("nan"))
        return t


@dataclass(frozen=True)
class Readout:
    """The logit entries computed for the metric: rows (batch, pos) times vocabulary columns.

    ``vocab_idx`` None means every column. Rows are listed as ``batch_idx[i], pos_idx[i]``.
    """

    batch_idx: Int[Tensor, " row"]
    pos_idx: Int[Tensor, " row"]
    vocab_idx: Int[Tensor, " col"] | None
    shape: tuple[int, int, int]  # (batch, pos, d_vocab) of the logits the metric expects
    # NaN-filled logits reused by every call that shares this readout; only the readout's own
    # entries are ever written, so it stays NaN everywhere else.
    _buffer: NaNLogits = field(default_factory=lambda: NaNLogits(), compare=False, repr=False)

    def nan_buffer(self, device: torch.device | str, dtype: torch.dtype) -> Tensor:
        """A [batch, pos, d_vocab] tensor, NaN outside the readout's entries, reused across calls."""
        return self._buffer.get(*self.shape, torch.empty((), device=device, dtype=dtype))

    @property
    def n_rows(self) -> int:
        return int(self.batch_idx.numel())

    @property
    def is_full(self) -> bool:
        """True when every logit is computed (rows in row-major order, all columns)."""
        return self.vocab_idx is None and self.n_rows == self.shape[0] * self.shape[1]


def full_readout(batch: int, n_pos: int, d_vocab: int) -> Readout:
    """Every position of every prompt, every token, in row-major order."""
    grid = torch.arange(batch * n_pos)
    return Readout(grid // n_pos, grid % n_pos, None, (batch, n_pos, d_vocab))


def _as_tensor(value: Tensor | float) -> Tensor:
    return value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))


def _same(a: Tensor | float, b: Tensor) -> bool:
    a = _as_tensor(a)
    return a.shape == b.shape and bool(torch.isfinite(a).all()) and torch.equal(a.cpu(), b.cpu())


def _candidate_rows_cols(metric: Metric, logits: Tensor) -> tuple[Tensor, Tensor] | None:
    """Rows [batch, pos] and columns [d_vocab] where the metric's gradient is non-zero."""
    try:
        with torch.enable_grad():
            x = logits.detach().requires_grad_(True)
            out = metric(x)
            if not isinstance(out, Tensor) or not out.requires_grad:
                return None
            (grad,) = torch.autograd.grad(out.float().sum(), x, allow_unused=True)
    except (RuntimeError, TypeError):
        return None
    if grad is None:
        return None
    rows = grad.abs().amax(-1) > 0  # [batch, pos]
    cols = (grad[rows] != 0).any(0)  # [d_vocab], only over the touched rows
    return rows, cols


def _detect(metric: Metric, orig_logits: Tensor) -> tuple[Readout, Tensor | None]:
    """`detect_readout`, also returning the NaN-filled logits buffer for `MetricOnEntries`."""
    batch, n_pos, d_vocab = orig_logits.shape
    full = full_readout(batch, n_pos, d_vocab)
    with torch.no_grad():
        base = _as_tensor(metric(orig_logits))
    found = _candidate_rows_cols(metric, orig_logits)
    if found is None or not bool(torch.isfinite(base).all()):
        return full, None
    rows, cols = found
    n_rows, n_cols = int(rows.sum()), int(cols.sum())
    if n_rows == 0 or n_rows * n_cols > _SAVING_FRACTION * orig_logits.numel():
        return full, None
    batch_idx, pos_idx = rows.nonzero(as_tuple=True)
    vocab_idx = cols.nonzero(as_tuple=True)[0]
    candidate = Readout(batch_idx.cpu(), pos_idx.cpu(), vocab_idx.cpu(), (batch, n_pos, d_vocab))
    kept = gather_entries(orig_logits, candidate)
    with torch.no_grad():
        probe = torch.full_like(orig_logits, float("nan"))
        scatter_entries(probe, candidate, kept)
        if not _same(metric(probe), base):  # reads a NaN entry
            return full, None
        probe.nan_to_num_(nan=_PROBE_VALUE)  # every other entry: an unrelated finite value
        same = _same(metric(probe), base)
        probe.fill_(float("nan"))
    return (candidate, probe) if same else (full, None)


def detect_readout(metric: Metric, orig_logits: Float[Tensor, "batch pos d_vocab"]) -> Readout:
    """The logit entries ``metric`` reads, or the full readout if that cannot be established.

    Compute it once and pass it as ``readout=`` to several path-patching calls that share
    the metric and the original dataset.

    Raises:
        TypeError: ``metric`` is not callable, or ``orig_logits`` is not a tensor.
        ValueError: ``orig_logits`` is not a floating [batch, pos, d_vocab] tensor.
    """
    if not callable(metric):
        raise TypeError(f"metric must be a function of the logits, got a {type(metric).__name__}")
    if not isinstance(orig_logits, Tensor):
        raise TypeError(
            f"orig_logits must be the model's logits, a [batch, pos, d_vocab] tensor, "
            f"got a {type(orig_logits).__name__}"
        )
    if orig_logits.ndim != 3 or not orig_logits.is_floating_point():
        raise ValueError(
            "orig_logits must be the model's logits, a floating [batch, pos, d_vocab] tensor, "
            f"got a {orig_logits.dtype} tensor of shape {tuple(orig_logits.shape)}"
        )
    return _detect(metric, orig_logits)[0]


def choose_readout(
    readout: str | Readout, metric: Metric, orig_logits: Tensor | None, shape: tuple[int, int, int]
) -> tuple[Readout, Tensor | None]:
    """``"auto"``: `detect_readout`; ``"all"``: every logit; a `Readout`: itself.

    Returns the readout and, when one was built, a NaN-filled logits buffer to reuse.
    """
    if isinstance(readout, Readout):
        if readout.shape != shape:
            raise ValueError(
                f"the readout was built for logits of shape {readout.shape}, these are {shape}"
            )
        return readout, None
    if readout not in READOUT_CHOICES:
        raise ValueError(
            f"unknown readout {readout!r}; choose one of {READOUT_CHOICES} or pass a Readout"
        )
    if readout == "all" or orig_logits is None:
        return full_readout(*shape), None
    return _detect(metric, orig_logits)


def gather_entries(logits: Tensor, readout: Readout) -> Tensor:
    """[row, col] values of ``logits`` at the readout's entries."""
    device = logits.device
    rows = logits[readout.batch_idx.to(device), readout.pos_idx.to(device)]  # [row, d_vocab]
    return rows if readout.vocab_idx is None else rows[:, readout.vocab_idx.to(device)]


def scatter_entries(target: Tensor, readout: Readout, values: Tensor) -> None:
    """Write [row, col] ``values`` into ``target`` [batch, pos, d_vocab] at the readout's entries."""
    device = target.device
    b = readout.batch_idx.to(device)[:, None]  # [row, 1] so it broadcasts against columns
    p = readout.pos_idx.to(device)[:, None]
    if readout.vocab_idx is None:
        target[b[:, 0], p[:, 0]] = values
    else:
        target[b, p, readout.vocab_idx.to(device)[None, :]] = values


def project_to_logits(
    model: HookedTransformer, resid: Float[Tensor, "sender row d_model"], readout: Readout
) -> Float[Tensor, "sender row col"]:
    """Final LayerNorm and unembedding of final residuals, only at the readout's columns."""
    # a model without normalisation (normalization_type=None) has no ln_final
    normed = model.ln_final(resid) if hasattr(model, "ln_final") else resid
    if readout.vocab_idx is None:
        return model.unembed(normed)
    cols = readout.vocab_idx.to(normed.device)
    return normed @ model.W_U[:, cols] + model.b_U[cols]


class MetricOnEntries:
    """Calls the metric on logits built from one sender's [row, col] values.

    For a full readout the values are reshaped into [batch, pos, d_vocab]; otherwise they are
    written into a NaN-filled tensor reused across senders (the same entries every time).

    Raises:
        ValueError: the metric returned NaN/inf on a partial readout: it reads logits outside
            the readout (pass ``readout="all"``).
    """

    def __init__(
        self,
        metric: Metric,
        readout: Readout,
        device: torch.device | str,
        dtype: torch.dtype,
        buffer: Tensor | None = None,
    ):
        self.metric, self.readout = metric, readout
        self.template = None
        if not readout.is_full:
            self.template = buffer if buffer is not None else readout.nan_buffer(device, dtype)

    def __call__(self, values: Float[Tensor, "row col"]) -> Tensor:
        if self.template is None:
            logits = values.reshape(self.readout.shape)  # rows are row-major: [batch, pos, vocab]
        else:
            scatter_entries(self.template, self.readout, values.to(self.template.dtype))
            logits = self.template
        out = _as_tensor(self.metric(logits)).float().cpu()
        if self.template is not None and not bool(torch.isfinite(out).all()):
            raise ValueError(
                "the metric returned a non-finite value on a partial readout: it reads logits "
                "outside the readout it was given; pass readout='all'"
            )
        return out
