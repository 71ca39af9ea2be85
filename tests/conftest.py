"""Shared fixtures. Every test runs offline: the hub is declared unreachable before anything loads."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # no test may try the network
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from ioi.testing import hook_count  # noqa: E402

# Under pytest-xdist each worker process takes one core: one torch thread each, not two threads
# per worker fighting over the same two cores.
torch.set_num_threads(
    1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads())
)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of many small ops (much faster on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def toy_model():
    """The bundled IOI model on the CPU, loaded once per test session."""
    from ioi.models import load_model

    return load_model("toy", device="cpu")


@pytest.fixture
def no_hooks_after():
    """Call with a model; asserts at teardown that the test left no hooks on it."""
    models = []
    yield models.append
    for model in models:
        assert hook_count(model) == 0, "a hook outlived the call that added it"
