"""`aggregator feeds ...`: list, add, import and export subscriptions (kept in feeds/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aggregator.cli import main
from aggregator.cli.common import config_option, fail, is_url, load, opened, synced

if TYPE_CHECKING:
    from aggregator.model import FeedState


@main.group()
def feeds() -> None:
    """List, add, import and export subscriptions (kept in feeds/)."""


@feeds.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per feed.")
def feeds_list(config_path: Path | None, as_json: bool) -> None:
    """Every feed: title, URL, tags, last status, last fetch, articles, next poll, last error."""
    config = load(config_path)
    with opened(config, readonly=True) as store:
        synced(config, store)
        rows = store.feeds()
    if as_json:
        for feed in rows:
            click.echo(json.dumps(feed_json(feed), ensure_ascii=False))
        return
    from aggregator.progress import feeds_table

    feeds_table(rows)


def feed_json(feed: FeedState) -> dict[str, Any]:
    """The documented `feeds list --json` record. URLs never carry credentials."""
    from aggregator.model import iso

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
        "last_poll_counts": feed.last_counts,
        "parse_path": feed.parse_path,
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
    from aggregator.ingest import make_parser
    from aggregator.model import FetchOptions
    from aggregator.subscriptions import append_feed, load_subscriptions
    from aggregator.validation import without_userinfo

    config = load(config_path)
    if not is_url(url):
        fail(f"{url!r} is not an http:// or https:// URL")
    fetcher = Fetcher(FetchLimits.from_settings(config.settings.polling))
    parser = make_parser(config, 1)  # the same parser, limits and errors as polling
    public, user, password = without_userinfo(url)
    try:
        found = discover(fetcher, public, parser, FetchOptions(username=user, password=password))
    except DiscoveryError as exc:
        fail(str(exc), 1)
    finally:
        fetcher.close()
        parser.close()
    already = load_subscriptions(config.feeds_dir).by_url(found.url)
    if already is not None:
        click.echo(f"Already subscribed: {found.url} ({already.source})")
        return
    target = file_path or config.feeds_dir / "added.yaml"
    # The file keeps the credentials the person typed (feeds/ is theirs); nothing else shows them.
    append_feed(target, url if found.url == public else found.url, title, list(tags))
    via = f" (found on {found.via})" if found.via else ""
    click.echo(f"Added {found.title or found.url} <{found.url}>{via}, {found.entries} entries now, to {target}")


@feeds.command("import")
@config_option
@click.argument("opml_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def feeds_import(config_path: Path | None, opml_file: Path) -> None:
    """Add the feeds of an OPML file (categories become tags) to feeds/<name>.yaml, all or nothing."""
    from aggregator.subscriptions import add_feeds, load_opml_feeds, load_subscriptions, plan_import

    config = load(config_path)
    loaded = load_opml_feeds(opml_file)
    for error in loaded.errors:
        click.echo(f"warning: {error}", err=True)
    if not loaded.feeds:
        fail(f"{opml_file}: no feeds found in this OPML file")
    plan = plan_import(loaded.feeds, load_subscriptions(config.feeds_dir).feeds)
    target = config.feeds_dir / f"{opml_file.stem}.yaml"
    try:
        add_feeds(target, plan.new)
    except OSError as exc:
        fail(f"{target}: nothing imported: {exc.strerror or exc}")
    click.echo(f"Imported {len(plan.new)} feed{'s' if len(plan.new) != 1 else ''} into {target}" + plan.notes())


@feeds.command("export")
@config_option
def feeds_export(config_path: Path | None) -> None:
    """Print the subscriptions as OPML (without credentials: see README)."""
    from aggregator.publish.opml import render_opml
    from aggregator.subscriptions import load_subscriptions

    config = load(config_path)
    subs = load_subscriptions(config.feeds_dir)
    for error in subs.errors:
        click.echo(f"warning: {error}", err=True)
    titles: dict[str, str] = {}
    sites: dict[str, str] = {}
    if config.database_path.exists():
        with opened(config, readonly=True) as store:
            for feed in store.feeds():
                if feed.title:
                    titles[feed.id] = feed.title
                if feed.site_url:
                    sites[feed.id] = feed.site_url
    sys.stdout.buffer.write(render_opml(subs.feeds, f"{config.settings.output.title}: subscriptions", titles, sites))
