"""A rich progress bar for long jobs, driven by a ``report(stage, fraction)`` callback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

Report = Callable[[str, float], None]


@contextmanager
def stage_progress(title: str) -> Iterator[Report]:
    """Yield a callback that moves one bar; stages name what is happening now."""
    progress = Progress(
        TextColumn("[bold]{task.fields[title]}[/]"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        task = progress.add_task("starting", total=1.0, title=title)

        def report(stage: str, fraction: float) -> None:
            progress.update(task, completed=max(0.0, min(1.0, fraction)), description=stage)

        yield report
        progress.update(task, completed=1.0, description="done")


def silent(stage: str, fraction: float) -> None:
    """A :data:`Report` that shows nothing (library calls without a progress display)."""
