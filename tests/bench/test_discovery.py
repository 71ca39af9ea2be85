"""The discovery benchmark's command line (its timings are not tested)."""

from __future__ import annotations

from ioi import bench

BAD = {
    "--device tpu": "unknown device",
    "--n 0": "must be >= 1",
    "--d-model 100": "multiple of 12",  # 12 heads must split the width
    "--repeats 0": "must be >= 1",
}


def test_bad_arguments_exit_with_status_2_and_say_why(capsys):
    for flags, needle in BAD.items():
        status = bench.main(["discovery", *flags.split()])
        out = capsys.readouterr().out
        assert (status, needle in out) == (bench.EXIT_USAGE, True), (flags, out)


def test_discovery_is_a_sub_command_with_the_issue_s_model_by_default():
    args = bench.build_parser().parse_args(["discovery"])
    assert (args.benchmark, args.n, args.d_model, args.repeats) == ("discovery", 8, 96, 1)
