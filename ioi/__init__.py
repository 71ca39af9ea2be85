"""ioi: Indirect Object Identification in GPT-2 small, and the methods that find its circuit."""

from ioi.device import resolve_device

__all__ = ["resolve_device"]
__version__ = "0.1.0"
