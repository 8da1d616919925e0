"""`aggregator search` and `aggregator filters ...`: finding stored stories,
and what the filters hide."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aggregator.cli import main
from aggregator.cli.common import config_option, fail, load, opened

if TYPE_CHECKING:
    from aggregator.config import Config
    from aggregator.filters import RuleSet
    from aggregator.model import Article, FeedState


@main.command()
@config_option
@click.argument("query")
@click.option("--limit", default=20, show_default=True, help="How many stories.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per story.")
def search(config_path: Path | None, query: str, limit: int, as_json: bool) -> None:
    """Stories whose articles match QUERY (words, "phrases", OR, -word, source:NAME, tag:TAG; see README)."""
    from aggregator.query import QueryError, parse

    try:
        parsed = parse(query)
    except QueryError as exc:
        fail(f"cannot search for {query!r}: {exc}")
    config = load(config_path)
    with opened(config, readonly=True) as store:
        stories = store.latest(limit, limit, seqs=store.search_seqs(parsed, limit=limit * 10))
    for story in stories:
        a = story.article
        if as_json:
            outlets = [story.source.title, *(o.source.title for o in story.also)]
            click.echo(json.dumps({"id": a.id, "story_id": story.story_id, "title": a.title, "url": a.url,
                                   "source": story.source.title, "outlets": outlets,
                                   "published_at": a.published_at.isoformat() if a.published_at else None},
                                  ensure_ascii=False))  # fmt: skip
        else:
            also = f"  (+{len(story.also)} more outlets)" if story.also else ""
            click.echo(f"[{story.source.title}]  {a.title}  <{a.url or a.id}>{also}")
    if not stories and not as_json:
        click.echo("No stored story matches.")


@main.group()
def filters() -> None:
    """Try a filter rule on stored articles, or apply the current filters to them."""


@filters.command("test")
@config_option
@click.argument("rule")
@click.option("--keep", is_flag=True, help="Try it as a keep rule (only matching articles pass) instead of block.")
@click.option("--limit", default=20, show_default=True, help="How many of the articles it would hide to list.")
def filters_test(config_path: Path | None, rule: str, keep: bool, limit: int) -> None:
    """What RULE ('title: sponsored', 'text: re:casino|betting') would hide among stored articles."""
    from aggregator.filters import compile_rules
    from aggregator.publish.common import plain_text

    try:
        rules = compile_rules({"keep" if keep else "block": [rule]}, "test")
    except ValueError as exc:
        fail(f"cannot use the rule {rule!r}: {exc}")
    config = load(config_path)
    hidden: list[tuple[Article, FeedState]] = []
    total = 0
    with opened(config, readonly=True) as store:
        for batch in store.each_article():
            for article, feed in batch:
                total += 1
                if _verdict(article, plain_text(article), [rules]):
                    hidden.append((article, feed))
    click.echo(f"{rule}: would hide {len(hidden)} of {total} stored articles.")
    for article, feed in hidden[:limit]:
        click.echo(f"  [{feed.display_title}]  {article.title}  <{article.url or article.id}>")


@filters.command("apply")
@config_option
def filters_apply(config_path: Path | None) -> None:
    """Decide again, with the current filters, which stored articles are hidden (ids never change)."""
    from aggregator.filters import applicable
    from aggregator.publish.common import plain_text

    config = load(config_path)
    feed_rules = _feed_rules(config)
    settings = config.settings
    tag_rules = settings.tag_rules()

    def decide(article: Article, feed: FeedState) -> str | None:
        rules = applicable(settings.filters, tag_rules, feed_rules.get(feed.id), feed.tags)
        return _verdict(article, plain_text(article), rules) if rules else None

    def progress(done: int) -> None:
        if done % 10_000 == 0:
            click.echo(f"  {done} articles…", err=True)

    with opened(config) as store:
        changed = store.refilter(decide, progress)
    click.echo(f"Filters applied: {changed} article{'s' if changed != 1 else ''} changed visibility.")


def _verdict(article: Article, text: str, rules: list[RuleSet]) -> str | None:
    from aggregator.filters import hidden_by, subject_of

    return hidden_by(subject_of(article, text), rules)


def _feed_rules(config: Config) -> dict[str, RuleSet]:
    from aggregator.subscriptions import load_subscriptions

    return {s.feed_id: s.filters for s in load_subscriptions(config.feeds_dir).feeds if s.filters}
