"""Nothing the user had is lost: ``--out`` is checked before any work, the report is written
beside it and moved in only when complete, and files in the folder that are not the report's
are never touched."""

from __future__ import annotations

import os
import stat

import pytest

import ioi.report.build as build
from ioi.cli import main
from ioi.report import Report, Section, Settings, check_out_dir, write_report


def _report(text: str) -> Report:
    return Report("toy", "cpu", Settings(n=8), [Section("s", "A section", text=[text])], 0.1)


def _contents(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_a_complete_report_replaces_only_the_reports_own_files(tmp_path):
    out = tmp_path / "rep"
    write_report(_report("first"), out, png=False)
    (out / "notes.txt").write_text("mine")
    (out / "figures").mkdir()
    (out / "figures" / "old.png").write_bytes(b"an earlier report's figure")
    write_report(_report("second"), out, png=False)
    files = _contents(out)
    assert b"second" in files["report.md"] and b"second" in files["report.html"]
    assert files["notes.txt"] == b"mine", "a file that is not the report's was touched"
    assert not any(name.startswith("figures/") for name in files), "stale figures were kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"], "a temporary folder was left"


@pytest.mark.parametrize("fail_in", ["render_markdown", "render_html", "export_pngs"])
def test_a_run_that_fails_half_way_leaves_the_earlier_report_as_it_was(
    tmp_path, monkeypatch, fail_in
):
    out = tmp_path / "rep"
    write_report(_report("first"), out, png=False)
    before = _contents(out)

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(build, fail_in, broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_report(_report("second"), out, png=True)
    assert _contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"], "a partial report was left"


def test_a_new_nested_folder_is_created(tmp_path):
    paths = write_report(_report("x"), tmp_path / "a" / "b", png=False)
    assert all(path.is_file() for path in paths.values())


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda tmp: (tmp / "f").write_text("x") and tmp / "f", "is a file"),
        (lambda tmp: (tmp / "f").write_text("x") and tmp / "f" / "sub", "which is a file"),
        (lambda tmp: "/proc/ioi_report", "not writable"),
        (lambda tmp: "/proc/self/nope/deeper", "not writable"),
    ],
    ids=["a file", "under a file", "/proc", "under /proc"],
)
def test_an_out_that_cannot_hold_a_report_fails_before_any_work(
    tmp_path, monkeypatch, capsys, make, pattern
):
    out = make(tmp_path)
    with pytest.raises(ValueError, match=pattern):
        check_out_dir(out)

    def no_work(*args, **kwargs):
        raise AssertionError("the analysis started although --out cannot be written")

    monkeypatch.setattr("ioi.models.load_model", no_work)
    monkeypatch.setattr("ioi.replicate.build_report", no_work)
    assert main(["replicate", "--model", "toy", "--n", "8", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and pattern in lines[0] and "Traceback" not in captured.err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(ValueError, match="not writable"):
            check_out_dir(folder)
        with pytest.raises(ValueError, match="not writable"):
            check_out_dir(folder / "new")
    finally:
        folder.chmod(stat.S_IRWXU)


def test_a_folder_that_refuses_writes_is_refused(tmp_path, monkeypatch):
    """The same check as above, where the tests run as root: the probe write fails."""
    (tmp_path / "existing").mkdir()

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(build.tempfile, "mkdtemp", refuse)
    for out in (tmp_path / "existing", tmp_path / "new"):
        with pytest.raises(ValueError, match=r"not writable \(Permission denied\)"):
            check_out_dir(out)


def test_more_prompts_than_fit_in_memory_are_refused_before_any_work(monkeypatch, capsys, tmp_path):
    """The estimate is the patching engine's (`bytes_per_copy`); here the free memory is set
    to 3 GB so that the bundled model's 9 MB or so per prompt allows a few hundred prompts."""
    import ioi.replicate as rep

    monkeypatch.setattr(rep, "free_memory", lambda device: 3 * 10**9)

    def no_work(*args, **kwargs):
        raise AssertionError("the analysis started although the prompts cannot fit")

    monkeypatch.setattr(rep, "build_report", no_work)
    for n in ("1000", "1000000000"):
        assert main(["replicate", "--model", "toy", "--n", n, "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--n {n} would need about" in err[0], err
        fits = int(err[0].rsplit("at most about ", 1)[1].split()[0])
        assert 100 < fits < 300, err
    assert not (tmp_path / "r").exists()


def test_one_prompt_is_refused_in_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import ioi.replicate as rep

    def no_work(*args, **kwargs):
        raise AssertionError("the analysis started with one prompt, which has no interval")

    monkeypatch.setattr(rep, "build_report", no_work)
    assert main(["replicate", "--model", "toy", "--n", "1", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "n must be at least 2" in err[0] and "standard error" in err[0], err
    assert not (tmp_path / "r").exists()
