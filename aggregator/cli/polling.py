"""`aggregator poll`: every subscribed feed once, with a progress bar and a summary."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aggregator.cli import main
from aggregator.cli.common import config_option, fail, known_feed, load, opened, synced

if TYPE_CHECKING:
    from aggregator.config import Config
    from aggregator.ingest import Poller
    from aggregator.model import FeedState, PollReport


@main.command()
@config_option
@click.option("--feed", "feed_url", metavar="URL", help="Poll only this subscribed feed.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def poll(config_path: Path | None, feed_url: str | None, progress: bool | None) -> None:
    """Poll every subscribed feed once, then print a summary."""
    from aggregator.ingest import Poller, make_parser
    from aggregator.model import FeedStatus, Outcome, utcnow

    config = load(config_path)
    show_progress = sys.stderr.isatty() if progress is None else progress
    _setup_logging(config, show_progress)
    with opened(config) as store:
        subs = synced(config, store)
        if feed_url:
            feeds = [
                known_feed(store, feed_url, f"{feed_url} is not subscribed; add it with: aggregator feeds add URL")
            ]
        else:
            feeds = store.feeds(FeedStatus.ACTIVE)
        if not feeds:
            click.echo(
                f"No feeds to poll: add some to {config.feeds_dir}/ (see README) or run: aggregator feeds add URL"
            )
            return
        # Claimed like the service claims them: a feed another poller holds right now is not polled twice.
        lease = config.settings.polling.lease
        store.release_orphaned_leases()  # a killed `poll` or service on this machine holds nothing
        taken = store.claim(store.node, [f.id for f in feeds], utcnow(), lease)
        busy = len(feeds) - len(taken)
        if busy:
            click.echo(
                f"note: {busy} feed(s) being polled by another poller (the service?) right now: skipped", err=True
            )
        if feed_url and busy:
            fail(f"{feed_url} is being polled by another poller right now; try again in a moment", 1)
        feeds = sorted(taken, key=lambda f: f.display_title.lower())
        started = time.monotonic()
        poller = Poller(store, config, parser=make_parser(config, len(feeds)))
        poller.set_subscriptions(subs.feeds)
        try:
            reports = _run_with_progress(poller, feeds, show_progress)
        finally:
            poller.close()
            store.release_leases(store.node)
        _print_summary(reports, time.monotonic() - started, {f.id: f for f in feeds})
    if any(r.outcome is Outcome.STORE_ERROR for r in reports):
        sys.exit(1)  # our side failed: the database could not take what was fetched
    if feed_url and reports and reports[0].outcome.is_error:
        sys.exit(1)


def _setup_logging(config: Config, progress: bool) -> None:
    from aggregator.logs import setup_logging

    level = config.settings.logging.level
    if progress:
        import logging

        from rich.logging import RichHandler

        from aggregator.progress import console

        # Feed lines go above the bar; only problems are worth showing there.
        # Rich prints the time and level itself: the message says the rest.
        handler = RichHandler(console=console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        setup_logging("warning" if level == "info" else level, "text", handler)
    else:
        setup_logging(level, config.settings.logging.format)


def _run_with_progress(poller: Poller, feeds: list[FeedState], show: bool) -> list[PollReport]:
    if not show:
        return poller.poll_many(feeds)
    from aggregator.progress import feed_progress

    with feed_progress(len(feeds)) as advance:
        return poller.poll_many(feeds, on_done=advance)


def _print_summary(reports: list[PollReport], seconds: float, feeds: dict[str, FeedState]) -> None:
    from aggregator.model import Outcome

    failed = [r for r in reports if r.outcome.is_error]
    new = sum(r.counts.new for r in reports)
    dups = sum(r.counts.duplicates for r in reports)
    updated = sum(r.counts.updated for r in reports)
    held = sum(r.counts.backfilled for r in reports)
    capped = sum(r.counts.capped for r in reports)
    folded = sum(sum(r.counts.folded.values()) for r in reports)
    not_modified = sum(r.outcome in (Outcome.NOT_MODIFIED, Outcome.UNCHANGED) for r in reports)
    extra = []
    if held:
        extra.append(f"{held} kept out of the outputs by a new feed's quiet first poll")
    if capped:
        extra.append(f"{capped} edits held back (a feed rewriting its entries too often)")
    if folded:
        extra.append(f"{folded} entries folded into articles we had")
    click.echo(
        f"Polled {len(reports)} feed{'s' if len(reports) != 1 else ''} in {seconds:.1f}s: "
        f"{len(reports) - len(failed)} ok ({not_modified} unchanged), {len(failed)} failed. "
        f"Articles: {new} new ({dups} of them duplicates of stories from other feeds), {updated} updated"
        + (f"; {'; '.join(extra)}." if extra else ".")
    )
    for report in sorted(failed, key=lambda r: r.url):
        feed = feeds.get(report.feed_id)
        name = feed.display_title if feed else report.url
        click.echo(f"  failed: {name} <{report.url}>: {report.error}")
