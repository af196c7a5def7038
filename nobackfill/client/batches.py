"""Batching and the progress bar shared by the sync and async clients' bulk calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def batch_bounds(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    for lo in range(0, n, batch_size):
        yield lo, min(lo + batch_size, n)


def in_flight(ids: Sequence[str], concurrency: int) -> int:
    """How many batches of one bulk call may be in flight at once.

    Batches sent together can land in either order, so an id that appears in two batches would
    end with whichever landed last: such a call is sent one batch at a time, in order."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    return concurrency if len(set(ids)) == len(ids) else 1


@contextmanager
def progress_bar(show: bool, total: float, label: str) -> Iterator[Callable[..., None]]:
    """Yields `advance(amount, absolute=False)`; draws a rich bar on stderr when `show`."""
    if not show:
        yield lambda amount, absolute=False: None
        return
    columns = [TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn()]
    if total > 1:
        columns.insert(2, MofNCompleteColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(label, total=total)

        def advance(amount: float, absolute: bool = False) -> None:
            if absolute:
                bar.update(task, completed=amount)
            else:
                bar.advance(task, amount)

        yield advance


def summed(answers: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Totals of the integer fields of upsert answers (received, created, updated, kept)."""
    totals: dict[str, int] = {}
    for answer in answers:
        for key, value in answer.items():
            if isinstance(value, int) and not isinstance(value, bool):
                totals[key] = totals.get(key, 0) + value
    return totals
