"""The site in a real browser: serve it with ``streamlit run``, open every page in headless
Chromium (Playwright), and check each one ran without an exception and drew its charts.

Uses the system Chromium (``/usr/bin/chromium``), never Playwright's own download. Without a
browser or Playwright the test skips, unless ``IOI_REQUIRE_BROWSER=1`` (CI) makes that a
failure. A screenshot of every page goes to pytest's temporary folder and, if set, to
``$IOI_SCREENSHOTS``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from ioi.cli import app_argv

APP = Path(__file__).resolve().parents[2] / "streamlit_app"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DEPLOY = '[data-testid="stAppDeployButton"]'  # hidden by ``--client.toolbarMode minimal``
# A page's first visit computes its (cached) live results. A hang guard, not a timing check: with
# the tests in two workers the other one may be busy (page 10 measured over 120 s beside the
# GPT-2-layout notebook run, which itself runs two kernels).
PAGE_TIMEOUT_S = 360
# Plotly charts each page draws at least; agrees with LIVE in test_app.py for pages 1-7.
CHARTS = {
    "Home.py": 1,
    "1": 1,
    "2": 4,
    "3": 2,
    "4": 2,
    "5": 5,
    "6": 2,
    "7": 2,
    "8": 1,
    "9": 1,
    "10": 1,
}


def url_path(script: Path) -> str:
    """Streamlit's URL path for a page script (``streamlit.source_util.page_icon_and_name``).

    The main script is served at ``/``. A script in ``pages/`` loses its leading number and
    the separators after it, runs of spaces and underscores become one ``_``, and ``.py``
    goes: ``pages/1_Model_and_task.py`` -> ``/Model_and_task``. (Leading emoji would be
    dropped too; our file names have none.)
    """
    if script.parent == APP:
        return ""
    from streamlit.source_util import page_icon_and_name

    return page_icon_and_name(script)[1]


def _scripts() -> list[Path]:
    return [APP / "Home.py", *sorted((APP / "pages").glob("[0-9]*.py"))]


def _chromium() -> str | None:
    path = "/usr/bin/chromium"
    return path if os.access(path, os.X_OK) else shutil.which("chromium")


def _missing(reason: str) -> None:
    if os.environ.get("IOI_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and IOI_REQUIRE_BROWSER=1 says the browser test must run")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"streamlit exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"streamlit did not answer at {url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    if executable is None:
        _missing("no Chromium at /usr/bin/chromium or on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def site(browser, tmp_path_factory):
    """The site served by a ``streamlit run`` subprocess; its URL. Killed on teardown."""
    if importlib.util.find_spec("streamlit") is None:
        _missing("streamlit is not installed (pip install -e '.[dev]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    argv = app_argv(APP / "Home.py", port, headless=True)  # exactly what `ioi app` runs
    with open(log, "w") as out:
        # its own process group, so teardown can stop it and anything it started
        server = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, server, log)
        yield url
    finally:
        _stop(server)


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> list[Path]:
    folders = [tmp_path_factory.mktemp("screenshots")]
    if os.environ.get("IOI_SCREENSHOTS"):
        folders.append(Path(os.environ["IOI_SCREENSHOTS"]))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return folders


def _drawn_charts(page) -> int:
    """Plotly charts that plotly.js has drawn (their ``.main-svg`` exists)."""
    return page.eval_on_selector_all(
        ".js-plotly-plot", "plots => plots.filter(p => p.querySelector('.main-svg')).length"
    )


@pytest.mark.slow
@pytest.mark.parametrize("script", _scripts(), ids=lambda p: p.stem)
def test_page_renders_in_a_browser(script, browser, site, screenshots):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{site}/{url_path(script)}", timeout=PAGE_TIMEOUT_S * 1000)
        # the script ran to its end: the app root says so, and no spinner is left
        page.wait_for_selector(
            '[data-testid="stApp"][data-test-script-state="notRunning"]',
            timeout=PAGE_TIMEOUT_S * 1000,
        )
        page.wait_for_selector('[data-testid="stMain"] h1', timeout=10_000)
        assert page.locator('[data-testid="stSpinner"]').count() == 0
        errors = page.locator('[data-testid="stException"]')
        assert errors.count() == 0, errors.all_inner_texts()

        assert page.locator(DEPLOY).count() == 0, "Streamlit's Deploy button is shown"
        want = CHARTS["Home.py" if script.name == "Home.py" else script.name.split("_")[0]]
        try:  # plotly.js draws after the script has finished
            page.wait_for_function(
                "n => [...document.querySelectorAll('.js-plotly-plot')]"
                ".filter(p => p.querySelector('.main-svg')).length >= n",
                arg=want,
                timeout=30_000,
            )
        except PlaywrightTimeout:
            pass
        drawn = _drawn_charts(page)
        assert drawn >= want, f"{script.name}: {drawn} plotly charts drawn, expected {want}+"
        # the viewport, not the full page: Streamlit scrolls inside its own container
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        for folder in screenshots:
            page.screenshot(path=str(folder / f"{script.stem}.png"))
    finally:
        page.close()
