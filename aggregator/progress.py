"""Terminal output for the CLI (rich): the poll progress bar and tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aggregator.model import FeedState, PollReport

console = Console(stderr=True)


@contextmanager
def feed_progress(total: int) -> Iterator[Callable[[PollReport], None]]:
    columns = (
        TextColumn("[bold]polling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[last]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("poll", total=total, last="")

        def advance(report: PollReport) -> None:
            mark = "failed" if report.outcome.is_error else f"+{report.counts.new}"
            progress.update(task, advance=1, last=f"{mark} {report.url[:60]}")

        yield advance


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


FEED_COLUMNS = ("title", "url", "tags", "status", "last fetch", "articles", "next poll", "last error")


def _feed_row(feed: FeedState) -> tuple[str, ...]:
    active = feed.status.value == "active"
    status = f"{feed.last_status or ''} {feed.last_outcome or 'never polled'}".strip() if active else feed.status.value
    return (
        feed.display_title,
        feed.url,
        ", ".join(feed.tags),
        status,
        _when(feed.last_fetch_at),
        str(feed.article_count),
        _when(feed.next_poll_at) if active else "-",
        feed.last_error or "",
    )


def feeds_table(feeds: Sequence[FeedState]) -> None:
    """A table on a terminal; tab-separated lines (one per feed) in a pipe."""
    out = Console()
    if not out.is_terminal:
        print("\t".join(FEED_COLUMNS))
        for feed in feeds:
            print("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in _feed_row(feed)))
        return
    table = Table(show_lines=False, expand=True)
    for name in FEED_COLUMNS:
        table.add_column(name, overflow="fold")
    for feed in feeds:
        table.add_row(*_feed_row(feed))
    out.print(table)
