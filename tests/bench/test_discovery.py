"""The discovery benchmark's command line (its timings are not tested)."""

from __future__ import annotations

import pytest

from ioi import bench


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["discovery", "--device", "tpu"], "unknown device"),
        (["discovery", "--n", "0"], "must be >= 1"),
        (["discovery", "--d-model", "100"], "multiple of 12"),
    ],
)
def test_bad_arguments_exit_with_status_2(argv, needle, capsys):
    assert bench.main(argv) == bench.EXIT_USAGE
    assert needle in capsys.readouterr().out


def test_discovery_is_a_sub_command():
    args = bench.build_parser().parse_args(["discovery", "--n", "4"])
    assert (args.benchmark, args.n, args.d_model) == ("discovery", 4, 96)
