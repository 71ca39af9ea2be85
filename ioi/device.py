"""Device selection: one place that turns ``"auto"`` (or ``"cuda:1"``) into a real device."""

from __future__ import annotations

import re

import torch

VALID_DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"
_DEVICE = re.compile(r"(?P<kind>cpu|cuda|mps)(?::(?P<index>\d+))?")


def check_device_name(device: str) -> str:
    """``device`` if it is spelled as a device this library accepts; no hardware is probed.

    Raises:
        TypeError: ``device`` is not a string.
        ValueError: an unknown kind (``"tpu"``), a malformed index (``"cpu:abc"``, ``"cuda:"``),
            or an index on a device that has only one (``"cpu:1"``, ``"mps:1"``).
    """
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a string ({DEVICE_FORMS}) or a torch.device, "
            f"got {type(device).__name__} {device!r}"
        )
    if device == "auto":
        return device
    match = _DEVICE.fullmatch(device)
    if match is None:
        raise ValueError(f"unknown device {device!r}; choose one of {DEVICE_FORMS}")
    if match["kind"] in ("cpu", "mps") and match["index"] not in (None, "0"):
        kind = match["kind"]
        raise ValueError(f"device {device!r}: torch has one {kind} device; use {kind!r}")
    return device


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a concrete ``torch.device``; ``"auto"`` picks cuda, then mps, then cpu.

    Raises:
        TypeError: ``device`` is neither a string nor a ``torch.device``.
        ValueError: an unknown or malformed device name, or one this machine does not have.
    """
    if isinstance(device, torch.device):
        if device.type not in VALID_DEVICES:
            raise ValueError(f"device {device} is not supported; choose one of {DEVICE_FORMS}")
        return _require_present(device)
    check_device_name(device)
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return _require_present(torch.device(device))


def _require_present(device: torch.device) -> torch.device:
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"device {str(device)!r} was asked for but no CUDA GPU is available; "
                "use 'auto' or 'cpu'"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {str(device)!r} was asked for but this machine has {count} CUDA "
                f"GPU(s): cuda:0 to cuda:{count - 1}"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but MPS is not available; use 'auto' or 'cpu'")
    return device
