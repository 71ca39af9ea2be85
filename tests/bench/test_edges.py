"""The edges benchmark's command line (its timings are not tested)."""

from __future__ import annotations

import pytest

from ioi import bench


@pytest.mark.parametrize("flag", ["--n", "--top", "--steps", "--plain-edges"])
def test_a_bad_count_is_one_line_and_exit_status_2(flag, capsys):
    assert bench.main(["edges", "--quick", flag, "0"]) == bench.EXIT_USAGE
    out = capsys.readouterr().out
    assert "must be >= 1" in out and "Traceback" not in out
