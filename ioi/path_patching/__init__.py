"""Path patching: how much of a component's effect travels along one path.

Public API:
    get_path_patch_head_to_final_resid_post: every head -> logits, [layer, head].
    get_path_patch_mlp_to_final_resid_post: every MLP -> logits, [layer].
    get_path_patch_head_to_heads: every earlier head -> receivers' q/k/v, [layer, head].
    get_path_patch_mlp_to_heads: every earlier MLP -> receivers' q/k/v, [layer].
    path_patch: the generic engine over explicit `Sender`s and `Receiver`s.
    cache_for_path_patching, detect_readout: compute once, pass to many calls.
    plain_path_patch: the one-sender-per-pass reference implementation.
"""

from ioi.patching.readout import READOUT_CHOICES, Readout, detect_readout
from ioi.path_patching.activations import cache_for_path_patching
from ioi.path_patching.engine import (
    get_path_patch_head_to_final_resid_post,
    get_path_patch_head_to_heads,
    get_path_patch_mlp_to_final_resid_post,
    get_path_patch_mlp_to_heads,
    path_patch,
)
from ioi.path_patching.nodes import (
    RECEIVER_INPUTS,
    SENDER_KINDS,
    Receiver,
    Sender,
    all_head_senders,
    all_mlp_senders,
    make_receivers,
)
from ioi.path_patching.plain import plain_path_patch, plain_path_patch_head_to_final_resid_post

__all__ = [
    "READOUT_CHOICES",
    "RECEIVER_INPUTS",
    "SENDER_KINDS",
    "Readout",
    "Receiver",
    "Sender",
    "all_head_senders",
    "all_mlp_senders",
    "cache_for_path_patching",
    "detect_readout",
    "get_path_patch_head_to_final_resid_post",
    "get_path_patch_head_to_heads",
    "get_path_patch_mlp_to_final_resid_post",
    "get_path_patch_mlp_to_heads",
    "make_receivers",
    "path_patch",
    "plain_path_patch",
    "plain_path_patch_head_to_final_resid_post",
]
