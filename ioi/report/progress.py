"""Rich progress bars for the report: one bar over the sections, one for the step in hand."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

T = TypeVar("T")


class Tracker:
    """Progress bars on ``console`` (silent on a quiet console). Use as a context manager."""

    def __init__(self, console: Console):
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._sections: TaskID | None = None

    def __enter__(self) -> Tracker:
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def sections(self, total: int) -> None:
        """Start the bar over the report's sections."""
        self._sections = self._progress.add_task("report", total=total)

    def section(self, title: str) -> None:
        """Name the section being computed."""
        if self._sections is not None:
            self._progress.update(self._sections, description=title)

    def section_done(self) -> None:
        """Advance the sections bar by one."""
        if self._sections is not None:
            self._progress.advance(self._sections)

    def steps(self, items: Iterable[T], description: str) -> Iterator[T]:
        """Iterate ``items`` with a bar of their own, removed when done."""
        items = list(items)
        task = self._progress.add_task(f"  {description}", total=len(items))
        try:
            for item in items:
                yield item
                self._progress.advance(task)
        finally:
            self._progress.remove_task(task)
