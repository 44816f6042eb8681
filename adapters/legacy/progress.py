"""A progress bar per entity with rows/s (rich); silent when quiet."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

__all__ = ["EntityProgress"]


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed_s = task.finished_time if task.finished else task.elapsed
        rate = task.completed / elapsed_s if elapsed_s else 0.0
        return Text(f"{rate:>10,.0f} rows/s", style="progress.data.speed")


class EntityProgress:
    def __init__(self, quiet: bool, console: Console | None = None) -> None:
        self._progress: Progress | None = None
        if not quiet:
            self._progress = Progress(
                TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                _RateColumn(), TimeElapsedColumn(), console=console)

    def __enter__(self) -> EntityProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def add(self, entity: str, total_rows: int) -> TaskID:
        if self._progress is None:
            return TaskID(0)
        return self._progress.add_task(entity, total=total_rows)

    def advance(self, task: TaskID, rows: int) -> None:
        if self._progress is not None:
            self._progress.advance(task, rows)
