"""Device selection: one place that turns ``"auto"`` into a real device."""

from __future__ import annotations

import torch

VALID_DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a concrete ``torch.device``; ``"auto"`` picks cuda, then mps, then cpu.

    Raises:
        ValueError: for an unknown device name, or one this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str) or device.split(":")[0] not in VALID_DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(VALID_DEVICES)}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but MPS is not available; use 'auto' or 'cpu'")
    return torch.device(device)
