"""Where graded functions come from: the learner's ``exercises/``, ``solutions/``, or stubs built in memory.

Modules are loaded from their files (never through ``sys.path``), each under a private name, so
``exercises.part1_model_and_task`` and ``solutions.part1_model_and_task`` never shadow one
another and a learner's latest edit is what gets graded.
"""

from __future__ import annotations

import importlib.util
import types
from pathlib import Path

from ioi.course.build import Section, parse_section, render_module, source_files

TARGETS = ("exercises", "solutions")


def load_file_module(path: Path, name: str) -> types.ModuleType:
    """Import the python file ``path`` as a fresh module called ``name``.

    Raises:
        ValueError: the file does not exist (the message says how to generate it).
    """
    if not path.is_file():
        raise ValueError(f"{path} does not exist; run `python -m ioi.course` to generate it")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_target(root: Path, target: str, stem: str) -> types.ModuleType:
    """The module ``<root>/<target>/<stem>.py``, e.g. target ``"solutions"``, stem ``"part1_model_and_task"``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    return load_file_module(root / target / f"{stem}.py", f"_ioi_graded.{target}.{stem}")


def stub_module(section: Section) -> types.ModuleType:
    """The exercise stubs of ``section``, built from its source in memory (not read from disk)."""
    module = types.ModuleType(f"_ioi_stubs.{section.stem}")
    module.__file__ = f"<stubs of {section.source.name}>"
    code = compile(render_module(section, "exercises"), module.__file__, "exec")
    exec(code, module.__dict__)  # the module text holds only imports and defs (the build checks)
    return module


def course_exercises(root: Path) -> list[tuple[Section, str]]:
    """Every (section, exercise name) of the course, in order."""
    return [(s, name) for s in map(parse_section, source_files(root)) for name in s.exercises]
