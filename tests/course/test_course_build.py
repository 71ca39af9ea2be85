"""The course build: markers, module rules, and generated files in sync with the sources."""

from __future__ import annotations

import textwrap

import pytest

from ioi.course.build import (
    CourseBuildError,
    check,
    find_root,
    main,
    parse_section,
    split_cell,
)

SOLVED = textwrap.dedent(
    '''\
    def double(x):
        """Twice x."""
        # EXERCISE: multiply by two
        # EXERCISE: (or add x to itself)
        # SOLUTION
        y = x * 2
        return y
        # END SOLUTION
    '''
)


def test_generated_files_are_up_to_date(capsys) -> None:
    problems = check(find_root())
    assert not problems, "run `python -m ioi.course`:\n" + "\n".join(problems)
    assert main(["--check"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_reports_an_edited_file(tmp_path, capsys) -> None:
    root = find_root()
    copy = tmp_path / "repo"
    for folder in ("course", "exercises", "solutions", "notebooks"):
        for path in (root / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                target = copy / path.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(path.read_bytes())
    stub = copy / "exercises" / "part1_model_and_task.py"
    stub.write_text(stub.read_text() + "\nHAND_EDIT = 1\n")
    (copy / "solutions" / "part9_gone.py").write_text("")
    assert main(["--check", "--root", str(copy)]) == 1
    out = capsys.readouterr().out
    assert "out of date: exercises/part1_model_and_task.py" in out
    assert "stale (not built from any source): solutions/part9_gone.py" in out
    assert "+HAND_EDIT = 1" not in out and "-HAND_EDIT = 1" in out  # the diff shows the edit
    assert main(["--root", str(copy)]) == 0  # rebuilding repairs it
    assert main(["--check", "--root", str(copy)]) == 0


def test_split_cell_makes_a_stub_and_a_solution() -> None:
    cell = split_cell(SOLVED)
    assert cell.exercises == ["double"]
    assert "# SOLUTION" not in cell.solution and "EXERCISE" not in cell.solution
    assert "y = x * 2" in cell.solution
    assert "y = x * 2" not in cell.exercise
    assert (
        'raise NotImplementedError("hint: multiply by two (or add x to itself)")' in cell.exercise
    )
    namespace: dict = {}
    exec(cell.exercise, namespace)
    with pytest.raises(NotImplementedError, match="multiply by two"):
        namespace["double"](3)
    exec(cell.solution, namespace)
    assert namespace["double"](3) == 6


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def f():\n    # SOLUTION\n    return 1\n    # END SOLUTION", "must follow '# EXERCISE"),
        ("def f():\n    # EXERCISE: h\n    # SOLUTION\n    return 1", "not closed"),
        ("def f():\n    # EXERCISE: h\n    return 1", "followed by '# SOLUTION'"),
        ("# EXERCISE: h\n# SOLUTION\nx = 1\n# END SOLUTION", "not inside a top-level def"),
        ("def f():\n    # END SOLUTION\n    return 1", "without '# SOLUTION'"),
    ],
)
def test_marker_mistakes_are_reported(source: str, message: str) -> None:
    with pytest.raises(CourseBuildError, match=message):
        split_cell(source, "demo cell")


def test_module_cells_may_not_run_code(tmp_path) -> None:
    (tmp_path / "course").mkdir()
    source = tmp_path / "course" / "01_demo.py"
    source.write_text(
        '# %% [markdown]\n# # Demo\n\n# %% tags=["module"]\nimport torch\n\nmodel = load()\n'
    )
    with pytest.raises(CourseBuildError, match="only imports, defs, classes and constants"):
        parse_section(source)


def test_every_section_parses_and_has_exercises() -> None:
    from ioi.course.build import source_files

    sections = [parse_section(p) for p in source_files(find_root())]
    assert [s.number for s in sections] == sorted(s.number for s in sections)
    assert all(s.exercises for s in sections)


def test_the_course_has_at_least_36_exercises() -> None:
    from ioi.course.build import source_files

    names = [n for p in source_files(find_root()) for n in parse_section(p).exercises]
    assert len(names) >= 36, len(names)


def _section(tmp_path, body: str):
    (tmp_path / "course").mkdir(exist_ok=True)
    source = tmp_path / "course" / "01_demo.py"
    source.write_text("# %% [markdown]\n# # Demo\n" + body)
    return parse_section(source)


EXERCISE_CELL = (
    "\n# %%\ndef f():\n    # EXERCISE: nudge\n    # SOLUTION\n    return 1\n    # END SOLUTION\n"
)
QUESTIONS = (
    "\n# %% [markdown]\n"
    + "# **Predict, then run.** q?\n# <details><summary>Answer</summary> a </details>\n" * 2
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# Exercise\n", "Difficulty"),
        ("# **Difficulty:** ●○○○○ · **Time:** about 5 minutes\n", "two folded hints"),
        (
            "# **Difficulty:** ●○○○○ · **Time:** about 5 minutes\n"
            "# <details><summary>Hint 2: algorithm</summary> x </details>\n",
            "two folded hints",
        ),
    ],
)
def test_exercises_need_difficulty_time_and_graded_hints(tmp_path, text, message) -> None:
    from ioi.course.build import check_inquiry

    section = _section(tmp_path, "\n# %% [markdown]\n" + text + EXERCISE_CELL + QUESTIONS)
    with pytest.raises(CourseBuildError, match=message):
        check_inquiry(section)


def test_sections_need_predict_then_run_questions_with_answers(tmp_path) -> None:
    from ioi.course.build import check_inquiry

    unanswered = "\n# %% [markdown]\n# **Predict, then run.** q?\n"
    with pytest.raises(CourseBuildError, match="no '<details><summary>Answer"):
        check_inquiry(_section(tmp_path, unanswered + QUESTIONS))
    with pytest.raises(CourseBuildError, match="asks 0"):
        check_inquiry(_section(tmp_path, "\n# %% [markdown]\n# text\n"))
    check_inquiry(_section(tmp_path, QUESTIONS))  # two answered questions, no exercise: fine
