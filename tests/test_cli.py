import json

import pytest

from ioi.cli import main


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


def test_default_model_says_why_it_chose_the_toy(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ioi.models.gpt2_small_available", lambda: False)
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
        (["replicate", "--device", "tpu"], "invalid choice"),
        (["replicate", "--model", "gpt2-small"], "cannot be reached"),
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
