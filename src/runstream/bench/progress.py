"""Progress bars while the benchmark runs (rich), or nothing at all in tests."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

Advance = Callable[[int], None]


class Tracker:
    """One progress bar per measured run; `Tracker(None)` shows none."""

    def __init__(self, console: Console | None) -> None:
        self.progress: Progress | None = None
        if console is not None:
            self.progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TimeElapsedColumn(),
                console=console,
            )

    def __enter__(self) -> Tracker:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    @contextlib.contextmanager
    def task(self, workload: str, scenario: str, total: int | None) -> Iterator[Advance]:
        """A bar for `total` events (None: unknown); yields the function that advances it."""
        progress = self.progress
        if progress is None:
            yield _ignore
            return
        task_id = progress.add_task(f"{workload} {scenario}", total=total, unit="events")

        def advance(count: int) -> None:
            progress.advance(task_id, count)

        yield advance
        if total is None:
            completed = next(t.completed for t in progress.tasks if t.id == task_id)
            progress.update(task_id, total=completed)


def _ignore(_: int) -> None:
    return None
