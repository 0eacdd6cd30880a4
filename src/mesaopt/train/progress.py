"""The trainer's progress bar: its own rich bar on stderr, or a row on a caller's live ``Progress``."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainBar:
    """Own rich progress bar on stderr, or a task row on a caller's live ``Progress`` (nested runs)."""

    def __init__(self, progress: bool | Progress, total: int, start: int) -> None:
        self.external = isinstance(progress, Progress)
        self.enabled = self.external or bool(progress)
        if self.external:
            self.prog = progress
        else:
            self.prog = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), disable=not progress, transient=False)
        self.task = self.prog.add_task("train", total=total, completed=start, info="")

    def __enter__(self) -> TrainBar:
        if not self.external:
            self.prog.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.external:
            self.prog.remove_task(self.task)
        else:
            self.prog.__exit__(*exc)

    def update(self, step: int, info: str | None = None) -> None:
        if info is None:
            self.prog.update(self.task, completed=step)
        else:
            self.prog.update(self.task, completed=step, info=info)
