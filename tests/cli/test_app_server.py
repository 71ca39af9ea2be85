"""``ioi app`` as a user runs it: a real Streamlit server, bound to localhost only, that stops
when ``ioi app`` is stopped (SIGTERM from a process manager, or Ctrl-C)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _outside_address() -> str | None:
    """This machine's address on its network (not loopback), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _wait_healthy(port: int, app: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert app.poll() is None, f"ioi app exited with {app.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the site did not answer on port {port} in {timeout:.0f} s")


def _state(pid: int) -> str:
    """A stuck process's state, signal masks and children, from /proc (for a failure message)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError as error:
        return f"no /proc entry: {error}"
    keep = ("State", "SigBlk", "SigIgn", "SigCgt", "Threads")
    lines = [line for line in status if line.startswith(keep)]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        lines.append(f"children: {children.read_text().strip() or 'none'}")
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_app_serves_localhost_only_and_stops_with_ioi_app(stop, tmp_path):
    if importlib.util.find_spec("streamlit") is None:
        pytest.skip("streamlit is not installed")
    port = _free_port()
    argv = [sys.executable, "-m", "ioi.cli", "app", "--headless", "--port", str(port)]
    # its own process group, so a leftover server can be cleaned up whatever happens
    log = tmp_path / "ioi_app.log"
    # As from a terminal, where Ctrl-C works: a test run started in the background (``pytest &``,
    # nohup, a CI runner) has SIGINT ignored, and an ignored signal stays ignored in children.
    # A handled one is reset to the default in the child, so handle it in here while starting.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with open(log, "w") as out:
            app = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        _wait_healthy(port, app)
        outside = _outside_address()
        if outside is not None:
            assert not _answers(outside, port), f"the site answers on {outside}, not only localhost"
        app.send_signal(stop)  # to ioi app alone, as a process manager does
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"ioi app did not stop within 30 s of {stop.name}:\n{_state(app.pid)}\n"
                f"its output:\n{log.read_text()[-3000:]}"
            )
        deadline = time.monotonic() + 10
        while _answers("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _answers("127.0.0.1", port), "the Streamlit server outlived ioi app"
    finally:
        try:
            os.killpg(app.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
