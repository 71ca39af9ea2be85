"""The path-patching benchmark's command line (its timings are not tested)."""

from __future__ import annotations

import pytest

from ioi import bench


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["path", "--device", "tpu"], "unknown device"),
        (["path", "--n", "0"], "must be >= 1"),
        (["path", "--plain-senders", "0"], "must be >= 1"),
    ],
)
def test_bad_arguments_exit_with_status_2(argv, needle, capsys):
    assert bench.main(argv) == bench.EXIT_USAGE
    assert needle in capsys.readouterr().out


def test_both_benchmarks_are_sub_commands():
    parser = bench.build_parser()
    assert parser.parse_args(["path", "--quick"]).benchmark == "path"
    assert parser.parse_args(["patching", "--quick"]).benchmark == "patching"
    with pytest.raises(SystemExit):
        parser.parse_args(["bench_path"])
