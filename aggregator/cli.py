"""The `aggregator` command. Each command mirrors a library call; `--config`
is accepted by every command, after the command name."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from aggregator import __version__
from aggregator.config import (
    Config,
    ConfigError,
    Subscriptions,
    append_feed,
    feed_id_for,
    load_config,
    load_opml_feeds,
    load_subscriptions,
)
from aggregator.logs import setup_logging
from aggregator.model import Article, FeedState, FeedStatus, Outcome, PollReport, iso, utcnow
from aggregator.store import Store, StoreError

if TYPE_CHECKING:
    from aggregator.ingest import Poller

log = logging.getLogger("aggregator")


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Path to config.yaml (default: ./config.yaml).",
    )(func)


def _fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _load(config_path: Path | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        _fail(str(exc))


@contextmanager
def _opened(config: Config) -> Iterator[Store]:
    try:
        store = Store(config.database_path)
    except StoreError as exc:
        _fail(str(exc))
    try:
        yield store
    finally:
        store.close()


def _subscriptions(config: Config, store: Store, quiet: bool = False) -> Subscriptions:
    subs = load_subscriptions(config.feeds_dir)
    if not quiet:
        for error in subs.errors:
            click.echo(f"warning: {error} (this entry is skipped; the others are loaded)", err=True)
    store.sync_subscriptions(subs.feeds, utcnow())
    return subs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="aggregator")
def main() -> None:
    """A news feed aggregator: polls feeds, removes duplicates, publishes one Latest feed."""


# --- poll ------------------------------------------------------------------------------


@main.command()
@config_option
@click.option("--feed", "feed_url", metavar="URL", help="Poll only this subscribed feed.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
def poll(config_path: Path | None, feed_url: str | None, progress: bool | None) -> None:
    """Poll every subscribed feed once, then print a summary."""
    from aggregator.ingest import Poller, make_parser

    config = _load(config_path)
    show_progress = sys.stderr.isatty() if progress is None else progress
    _setup_cli_logging(config, show_progress)
    with _opened(config) as store:
        _subscriptions(config, store)
        if feed_url:
            feeds = [
                _known_feed(store, feed_url, f"{feed_url} is not subscribed; add it with: aggregator feeds add URL")
            ]
        else:
            feeds = store.feeds(FeedStatus.ACTIVE)
        if not feeds:
            click.echo(
                f"No feeds to poll: add some to {config.feeds_dir}/ (see README) or run: aggregator feeds add URL"
            )
            return
        started = time.monotonic()
        poller = Poller(store, config, parser=make_parser(config, len(feeds)))
        try:
            reports = _run_with_progress(poller, feeds, show_progress)
        finally:
            poller.close()
        _print_summary(reports, time.monotonic() - started, {f.id: f for f in feeds})
        if feed_url and reports and reports[0].outcome.is_error:
            sys.exit(1)


def _known_feed(store: Store, url: str, message: str) -> FeedState:
    """The stored feed a URL (or its configured URL) names; exits with message when none does."""
    feed = store.feed(feed_id_for(url)) if _is_url(url) else None
    feed = feed or store.feed_by_url(url)
    if feed is None:
        _fail(message)
    return feed


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _setup_cli_logging(config: Config, progress: bool) -> None:
    level = config.settings.logging.level
    if progress:
        from rich.logging import RichHandler

        from aggregator.progress import console

        # Feed lines go above the bar; only problems are worth showing there.
        setup_logging(
            "warning" if level == "info" else level, "text", RichHandler(console=console, show_path=False, markup=False)
        )
    else:
        setup_logging(level, config.settings.logging.format)


def _run_with_progress(poller: Poller, feeds: list[FeedState], show: bool) -> list[PollReport]:
    if not show:
        return poller.poll_many(feeds)
    from aggregator.progress import feed_progress

    with feed_progress(len(feeds)) as advance:
        return poller.poll_many(feeds, on_done=advance)


def _print_summary(reports: list[PollReport], seconds: float, feeds: dict[str, FeedState]) -> None:
    failed = [r for r in reports if r.outcome.is_error]
    new = sum(r.counts.new for r in reports)
    dups = sum(r.counts.duplicates for r in reports)
    updated = sum(r.counts.updated for r in reports)
    not_modified = sum(r.outcome in (Outcome.NOT_MODIFIED, Outcome.UNCHANGED) for r in reports)
    click.echo(
        f"Polled {len(reports)} feed{'s' if len(reports) != 1 else ''} in {seconds:.1f}s: "
        f"{len(reports) - len(failed)} ok ({not_modified} unchanged), {len(failed)} failed. "
        f"Articles: {new} new ({dups} of them duplicates of stories from other feeds), {updated} updated."
    )
    for report in sorted(failed, key=lambda r: r.url):
        feed = feeds.get(report.feed_id)
        name = feed.display_title if feed else report.url
        click.echo(f"  failed: {name} <{report.url}>: {report.error}")


# --- feeds -------------------------------------------------------------------------------


@main.group()
def feeds() -> None:
    """List, add, import and export subscriptions (kept in feeds/)."""


@feeds.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per feed.")
def feeds_list(config_path: Path | None, as_json: bool) -> None:
    """Every feed: title, URL, tags, last status, last fetch, articles, next poll, last error."""
    config = _load(config_path)
    with _opened(config) as store:
        _subscriptions(config, store)
        rows = store.feeds()
    if as_json:
        for feed in rows:
            click.echo(json.dumps(_feed_json(feed), ensure_ascii=False))
        return
    from aggregator.progress import feeds_table

    feeds_table(rows)


def _feed_json(feed: FeedState) -> dict[str, Any]:
    return {
        "id": feed.id,
        "title": feed.display_title,
        "url": feed.url,
        "configured_url": feed.configured_url,
        "site_url": feed.site_url,
        "tags": list(feed.tags),
        "status": feed.status.value,
        "last_status": feed.last_status,
        "last_outcome": feed.last_outcome,
        "last_fetch_at": iso(feed.last_fetch_at),
        "articles": feed.article_count,
        "next_poll_at": iso(feed.next_poll_at),
        "error_count": feed.error_count,
        "last_error": feed.last_error,
        "redirect_url": feed.redirect_url,
    }


@feeds.command("add")
@config_option
@click.argument("url")
@click.option("--tag", "tags", multiple=True, help="Tag for the feed (repeatable).")
@click.option("--title", help="Title to show instead of the feed's own.")
@click.option(
    "--file",
    "file_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Subscription file to add it to (default: feeds/added.yaml).",
)
def feeds_add(
    config_path: Path | None, url: str, tags: tuple[str, ...], title: str | None, file_path: Path | None
) -> None:
    """Subscribe to URL (a feed, or a site page that links to its feed)."""
    from aggregator.discover import DiscoveryError, discover
    from aggregator.fetch import Fetcher, FetchLimits

    config = _load(config_path)
    if not _is_url(url):
        _fail(f"{url!r} is not an http:// or https:// URL")
    fetcher = Fetcher(FetchLimits.from_settings(config.settings.polling))
    try:
        found = discover(fetcher, url)
    except DiscoveryError as exc:
        _fail(str(exc), 1)
    finally:
        fetcher.close()
    existing = load_subscriptions(config.feeds_dir)
    if existing.by_url(found.url):
        click.echo(f"Already subscribed: {found.url} ({existing.by_url(found.url).source})")  # type: ignore[union-attr]
        return
    target = file_path or config.feeds_dir / "added.yaml"
    try:
        append_feed(target, found.url, title, list(tags))
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    via = f" (found on {found.via})" if found.via else ""
    click.echo(f"Added {found.title or found.url} <{found.url}>{via}, {found.entries} entries now, to {target}")


@feeds.command("import")
@config_option
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def feeds_import(config_path: Path | None, opml_file: Path) -> None:
    """Add the feeds of an OPML file (categories become tags) to feeds/<name>.yaml."""
    config = _load(config_path)
    loaded = load_opml_feeds(opml_file)
    for error in loaded.errors:
        click.echo(f"warning: {error}", err=True)
    if not loaded.feeds:
        _fail(f"{opml_file}: no feeds found in this OPML file")
    existing = load_subscriptions(config.feeds_dir)
    known = {s.feed_id for s in existing.feeds}
    target = config.feeds_dir / f"{opml_file.stem}.yaml"
    added = 0
    for sub in loaded.feeds:
        if sub.feed_id in known:
            continue
        append_feed(target, sub.url, sub.title, list(sub.tags))
        known.add(sub.feed_id)
        added += 1
    skipped = len(loaded.feeds) - added
    click.echo(
        f"Imported {added} feed{'s' if added != 1 else ''} into {target}"
        + (f" ({skipped} already subscribed)" if skipped else "")
    )


@feeds.command("export")
@config_option
def feeds_export(config_path: Path | None) -> None:
    """Print the subscriptions as OPML."""
    from aggregator.publish.opml import render_opml

    config = _load(config_path)
    subs = load_subscriptions(config.feeds_dir)
    for error in subs.errors:
        click.echo(f"warning: {error}", err=True)
    titles: dict[str, str] = {}
    sites: dict[str, str] = {}
    if config.database_path.exists():
        with _opened(config) as store:
            for feed in store.feeds():
                if feed.title:
                    titles[feed.id] = feed.title
                if feed.site_url:
                    sites[feed.id] = feed.site_url
    sys.stdout.buffer.write(render_opml(subs.feeds, f"{config.settings.output.title}: subscriptions", titles, sites))


# --- articles -------------------------------------------------------------------------------


@main.command()
@config_option
@click.option("--limit", default=20, show_default=True, help="How many (0: all).")
@click.option("--feed", "feed_url", metavar="URL", help="Only this feed's articles.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per article (see README).")
def articles(config_path: Path | None, limit: int, feed_url: str | None, as_json: bool) -> None:
    """Stored articles, newest first, duplicates included."""
    config = _load(config_path)
    with _opened(config) as store:
        feed_id = None
        if feed_url:
            feed_id = _known_feed(store, feed_url, f"{feed_url} is not a known feed (see: aggregator feeds list)").id
        rows = store.articles(limit=limit or None, feed_id=feed_id)
    for article, feed in rows:
        if as_json:
            click.echo(json.dumps(article_json(article, feed), ensure_ascii=False))
        else:
            when = (article.published_at or article.first_seen_at).strftime("%Y-%m-%d %H:%M")
            dup = "  (duplicate)" if article.duplicate_of else ""
            click.echo(
                f"{when}  [{feed.display_title}]  {article.title or '(untitled)'}  <{article.url or article.id}>{dup}"
            )


def article_json(article: Article, feed: FeedState) -> dict[str, Any]:
    """The documented `articles --json` record (README: "articles --json")."""
    return {
        "id": article.id,
        "feed_id": feed.id,
        "feed_url": feed.url,
        "feed_title": feed.display_title,
        "guid": article.guid,
        "url": article.url,
        "canonical_url": article.canonical_url,
        "title": article.title,
        "authors": [a.to_json() for a in article.authors],
        "summary": article.summary,
        "content": article.content,
        "categories": list(article.categories),
        "enclosures": [e.to_json() for e in article.enclosures],
        "image": article.image,
        "language": article.language,
        "published_at": iso(article.published_at),
        "updated_at": iso(article.updated_at),
        "first_seen_at": iso(article.first_seen_at),
        "duplicate_of": article.duplicate_of,
    }


# --- publish / serve ---------------------------------------------------------------------------


@main.command()
@config_option
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write to (default: output.dir from config).",
)
def publish(config_path: Path | None, out_dir: Path | None) -> None:
    """Write the outputs as static files (only files whose bytes changed, atomically)."""
    from aggregator.publish import Publisher, write_static

    config = _load(config_path)
    setup_logging(config.settings.logging.level, config.settings.logging.format)
    target = out_dir or config.output_dir
    with _opened(config) as store:
        _subscriptions(config, store)
        snapshot = Publisher(store, config).build()
    try:
        written = write_static(snapshot, target)
    except OSError as exc:
        _fail(f"{target}: cannot write the outputs: {exc.strerror or exc}", 1)
    click.echo(
        f"Published {len(snapshot.documents)} documents to {target}: {len(written)} changed"
        + (f" ({', '.join(written[:8])}{', ...' if len(written) > 8 else ''})" if written else "")
    )


@main.command()
@config_option
def serve(config_path: Path | None) -> None:
    """Serve the outputs over HTTP (host, port and base_url from config)."""
    from aggregator.service import serve_only
    from aggregator.web import WebServerError

    config = _load(config_path)
    setup_logging(config.settings.logging.level, config.settings.logging.format)
    with _opened(config) as store:
        try:
            serve_only(config, store)
        except WebServerError as exc:
            _fail(str(exc), 1)


# --- the service ---------------------------------------------------------------------------------


@main.command()
@config_option
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Override logging.format from config.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Override logging.level.")
def run(config_path: Path | None, log_format: str | None, log_level: str | None) -> None:
    """Run the service: poll on schedule, publish, serve (foreground; logs to stderr)."""
    from aggregator.service import AlreadyRunning, run_service
    from aggregator.web import WebServerError

    config = _load(config_path)
    setup_logging(log_level or config.settings.logging.level, log_format or config.settings.logging.format)
    try:
        code = run_service(config)
    except (AlreadyRunning, WebServerError) as exc:
        _fail(str(exc), 1)
    except StoreError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot start: {exc}", 1)
    sys.exit(code)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(config_path: Path | None, as_json: bool) -> None:
    """Is the service up; feeds due and failing; last publish."""
    from aggregator.service import InstanceLock

    config = _load(config_path)
    if not config.database_path.exists():
        _fail(f"{config.database_path}: no database yet (run `aggregator poll` or `aggregator run` first)", 1)
    pid = InstanceLock(config.database_path).holder()
    with _opened(config) as store:
        now = utcnow()
        health = store.feed_health(now)
        failing = [f for f in store.feeds(FeedStatus.ACTIVE) if f.error_count > 0]
        meta = {
            k: store.get_meta(f"service_{k}")
            for k in ("heartbeat_at", "last_dispatch_at", "last_publish_at", "started_at")
        }
        next_due = store.next_due_at()
    info = {
        "running": pid is not None,
        "pid": pid,
        **meta,
        "feeds": health,
        "next_poll_at": iso(next_due),
        "failing": [
            {
                "title": f.display_title,
                "url": f.url,
                "error": f.last_error,
                "errors_in_a_row": f.error_count,
                "next_poll_at": iso(f.next_poll_at),
            }
            for f in failing
        ],
    }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=1))
        return
    state = f"running (pid {pid})" if pid is not None else "not running"
    click.echo(f"Service: {state}; started {meta['started_at'] or '-'}, last heartbeat {meta['heartbeat_at'] or '-'}")
    click.echo(f"Last dispatch: {meta['last_dispatch_at'] or '-'}; last publish: {meta['last_publish_at'] or '-'}")
    click.echo(
        f"Feeds: {health['active']} active, {health['due']} due now, {health['failing']} failing, "
        f"{health['gone']} gone; next poll {iso(next_due) or '-'}"
    )
    for f in failing:
        click.echo(f"  failing: {f.display_title} <{f.url}>: {f.last_error} ({f.error_count} in a row)")
    if pid is None:
        sys.exit(3)


if __name__ == "__main__":
    main()
