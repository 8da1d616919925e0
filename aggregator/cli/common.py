"""What the commands share: the --config option, loading the config, opening
the store, syncing feeds/ into it, and the error exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from aggregator.config import Config
    from aggregator.model import FeedState
    from aggregator.store import Store
    from aggregator.subscriptions import Subscriptions


def config_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Path to config.yaml (default: ./config.yaml).",
    )(func)


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load(config_path: Path | None, quiet: bool = False) -> Config:
    """The config, or exit 2 with its errors. Without --config and without a
    ./config.yaml, says so (the defaults put the database in this directory)."""
    from aggregator.config import load_config

    config = load_config(config_path)
    if config.path is None and not quiet:
        click.echo(
            f"note: no config.yaml in {Path.cwd()}: using the defaults (database {config.database_path}, "
            f"feeds in {config.feeds_dir}/); pass --config PATH to use another",
            err=True,
        )
    return config


@contextmanager
def opened(config: Config, readonly: bool = False) -> Iterator[Store]:
    """The store. ``readonly``: the command only reads, so a database this
    user may not write still serves it (opened read-only)."""
    from aggregator.errors import StoreError
    from aggregator.store import open_store

    path = config.database_path
    only_read = readonly and path.exists() and not os.access(path, os.W_OK)
    store = open_store(config.settings.database, config.root, readonly=only_read)
    try:
        yield store
    finally:
        # Syncing feeds/ records this process as a node of a cluster; a command
        # is not a running service, so `status` must not count it. (If the
        # database is away, the record expires by itself within a minute.)
        with suppress(StoreError):
            store.leave()
        store.close()


def synced(config: Config, store: Store, quiet: bool = False) -> Subscriptions:
    """feeds/ loaded (problems shown) and made the store's subscriptions."""
    from aggregator.model import utcnow
    from aggregator.subscriptions import interval_notes, load_subscriptions

    subs = load_subscriptions(config.feeds_dir)
    if not quiet:
        for error in subs.errors:
            click.echo(f"warning: {error}", err=True)
        for note in interval_notes(subs.feeds, config.settings.polling):
            click.echo(f"note: {note}", err=True)
    if getattr(store, "readonly", False):
        if not quiet:
            click.echo("note: the database is read-only here: showing it as it is, without syncing feeds/", err=True)
        return subs
    store.sync_subscriptions(subs.feeds, utcnow(), keep_files=subs.failed_files)
    return subs


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def known_feed(store: Store, url: str, message: str) -> FeedState:
    """The stored feed a URL (or its configured URL) names; exits with message when none does."""
    from aggregator.subscriptions import feed_id_for

    feed = store.feed(feed_id_for(url)) if is_url(url) else None
    feed = feed or store.feed_by_url(url)
    if feed is None:
        fail(message)
    return feed
