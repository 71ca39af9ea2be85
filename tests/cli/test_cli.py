import importlib.util
import json
import sys
from pathlib import Path

import pytest

from ioi.cli import app_argv, build_parser, find_site, main


def test_replicate_happy_path_writes_results(tmp_path, capsys):
    assert (
        main(
            [
                "replicate",
                "--model",
                "toy",
                "--device",
                "cpu",
                "--n",
                "24",
                "--seed",
                "3",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "model: toy" in out and "IOI performance" in out
    results = json.loads((tmp_path / "results.json").read_text())
    perf = results["performance"]
    assert perf["n_prompts"] == 24
    assert set(perf) >= {"overall", "BABA", "ABBA", "per_template", "abc_logit_diff"}
    assert sum(t["n"] for t in perf["per_template"]) == 24
    assert perf["overall"]["logit_diff"] > perf["abc_logit_diff"]
    for name in ("report.html", "report.md", "results.json"):
        assert (tmp_path / name).is_file() and str(tmp_path / name) in out.replace("\n", "")
    found = results["sections"]["circuit"]["numbers"]
    if found.get("circuit"):  # the table names every class the report found
        assert "circuit found at threshold" in out
        assert all(name in out for name in found["circuit"]["heads"])


def test_default_model_says_why_it_chose_the_toy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ioi.models.cached_gpt2_dir", lambda: None)
    assert main(["replicate", "--n", "8", "--out", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "bundled IOI model is used" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["replicate", "--model", "nope"], "unknown model"),
        (["replicate", "--model", "/no/such/dir/weights.safetensors"], "not found"),
        (["replicate", "--n", "0"], "positive integer"),
        (["replicate", "--n", "many"], "positive integer"),
        (["replicate", "--seed", "-4"], "seed"),
        (["replicate", "--device", "tpu"], "unknown device"),
        (["replicate", "--device", "cpu:abc"], "unknown device"),
        (["replicate", "--device", "cpu:1"], "one cpu device"),
        (["replicate", "--model", "gpt2-small"], "cannot be reached"),
        (["replicate", "--max-heads", "0"], "positive integer or 'none'"),
        (["replicate", "--max-heads", "all"], "positive integer or 'none'"),
        ([], "required"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(argv, needle, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("ioi.models.cached_gpt2_dir", lambda: None)
    assert main([*argv, "--out", str(tmp_path)] if argv else argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_max_heads_parses_a_number_none_or_leaves_the_report_default(monkeypatch):
    parse = build_parser().parse_args
    assert parse(["replicate", "--max-heads", "7"]).max_heads == 7
    assert parse(["replicate", "--max-heads", "None"]).max_heads is None
    from ioi.cli import REPORT_DEFAULT
    from ioi.report.sections import Settings

    assert parse(["replicate"]).max_heads is REPORT_DEFAULT
    helps = {a.dest: a.help for a in build_parser()._subparsers._group_actions[0].choices[
        "replicate"]._actions}  # fmt: skip
    assert f"default {Settings.max_heads}," in helps["max_heads"]
    seen = {}
    results = {"sections": {"setup": {"numbers": {"dataset": {"words": None}}}}}
    monkeypatch.setattr("ioi.replicate.replicate", lambda *a, **k: seen.update(k) or results)
    monkeypatch.setattr("ioi.cli.print_summary", lambda *a: None)
    monkeypatch.setattr("ioi.cli.print_circuit", lambda *a: None)
    monkeypatch.setattr("ioi.report.sections.kept_words_text", lambda w: "")
    for argv, expected in ((["--max-heads", "none"], {"max_heads": None}), ([], {})):
        seen.clear()
        assert main(["replicate", "--model", "toy", "--n", "8", *argv]) == 0
        assert {k: v for k, v in seen.items() if k == "max_heads"} == expected


# ---- ioi app -----------------------------------------------------------------------------


def test_app_parses_port_and_headless():
    args = build_parser().parse_args(["app"])
    assert (args.command, args.port, args.headless) == ("app", 8501, False)
    args = build_parser().parse_args(["app", "--port", "9000", "--headless"])
    assert (args.port, args.headless) == (9000, True)


@pytest.mark.parametrize("port", ["0", "65536", "-1", "http"])
def test_app_bad_port_prints_one_line_and_exits_2(port, capsys):
    assert main(["app", "--port", port]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "port must be" in lines[0], captured.err
    assert captured.out == ""


def test_app_argv_runs_the_site_with_this_python():
    home = find_site()
    assert home == Path(__file__).resolve().parents[2] / "streamlit_app" / "Home.py"
    argv = app_argv(home, port=8600)
    assert argv[:5] == [sys.executable, "-m", "streamlit", "run", str(home)]
    assert argv[argv.index("--server.port") + 1] == "8600"
    assert "--server.headless" not in argv  # a desktop user gets a browser tab
    headless = app_argv(home, port=8600, headless=True)
    assert headless[headless.index("--server.headless") + 1] == "true"
    # localhost only unless asked; no telemetry; no Deploy button
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1"
    assert argv[argv.index("--browser.gatherUsageStats") + 1] == "false"
    assert argv[argv.index("--client.toolbarMode") + 1] == "minimal"
    everywhere = app_argv(home, port=8600, host="0.0.0.0")
    assert everywhere[everywhere.index("--server.address") + 1] == "0.0.0.0"


def test_app_help_says_localhost_and_the_default_host_is_loopback():
    parser = build_parser()
    args = parser.parse_args(["app"])
    assert args.host == "127.0.0.1"
    help_text = parser._subparsers._group_actions[0].choices["app"].format_help()
    assert "127.0.0.1" in help_text and "only this machine" in help_text


@pytest.mark.parametrize("host", ["", "  ", "local host"])
def test_app_bad_host_prints_one_line_and_exits_2(host, capsys):
    assert main(["app", "--host", host]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--host must be" in lines[0]


def test_app_host_that_does_not_resolve_prints_one_line_and_exits_2(monkeypatch, capsys):
    started = []
    monkeypatch.setattr("ioi.cli.subprocess.Popen", lambda argv: started.append(argv))
    assert main(["app", "--host", "no-such-host.invalid", "--headless"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "does not resolve to an address" in lines[0]
    assert "127.0.0.1" in lines[0] and started == [], "no server is started for it"


def test_app_starts_streamlit_and_returns_its_status(monkeypatch, capsys):
    started = []

    class FakeServer:
        def __init__(self, argv):
            started.append(argv)

        def wait(self, timeout=None):
            return 3

        def poll(self):
            return 3

    monkeypatch.setattr("ioi.cli.subprocess.Popen", FakeServer)
    assert main(["app", "--port", "8600", "--headless"]) == 3
    assert started == [app_argv(find_site(), 8600, headless=True)]
    assert "http://localhost:8600" in capsys.readouterr().out


def test_app_stops_the_server_when_it_is_interrupted(monkeypatch):
    events = []

    class FakeServer:
        returncode = None

        def __init__(self, argv):
            pass

        def wait(self, timeout=None):
            if self.returncode is None and not events:
                events.append("waiting")
                raise KeyboardInterrupt
            return self.returncode

        def poll(self):
            return self.returncode

        def terminate(self):
            events.append("terminate")
            self.returncode = -15

        def kill(self):  # pragma: no cover - only if terminate did not work
            events.append("kill")

    monkeypatch.setattr("ioi.cli.subprocess.Popen", FakeServer)
    assert main(["app", "--headless"]) == -15
    assert events == ["waiting", "terminate"]


def test_app_without_the_site_folder_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("ioi.cli.PACKAGE_PARENT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)
    assert main(["app"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot find streamlit_app/Home.py" in lines[0]


def test_app_without_streamlit_exits_2(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        "ioi.cli.importlib.util.find_spec", lambda name: None if name == "streamlit" else real(name)
    )
    assert main(["app"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "streamlit is not installed" in lines[0]
