"""`aggregator articles` and `aggregator stories ...`: what is stored, and the stories it forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from aggregator.cli import main
from aggregator.cli.common import config_option, known_feed, load, opened

if TYPE_CHECKING:
    from aggregator.config import Config
    from aggregator.model import Article, FeedState
    from aggregator.store import StoryView


@main.command()
@config_option
@click.option("--limit", default=20, show_default=True, help="How many (0: all).")
@click.option("--feed", "feed_url", metavar="URL", help="Only this feed's articles.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per article (see README).")
def articles(config_path: Path | None, limit: int, feed_url: str | None, as_json: bool) -> None:
    """Stored articles, newest first, duplicates and hidden ones included."""
    config = load(config_path)
    with opened(config, readonly=True) as store:
        feed_id = None
        if feed_url:
            feed_id = known_feed(store, feed_url, f"{feed_url} is not a known feed (see: aggregator feeds list)").id
        rows = store.articles(limit=limit or None, feed_id=feed_id)
    for article, feed in rows:
        if as_json:
            click.echo(json.dumps(article_json(article, feed), ensure_ascii=False))
        else:
            when = (article.published_at or article.first_seen_at).strftime("%Y-%m-%d %H:%M")
            dup = "  (duplicate)" if article.duplicate_of else ""
            hidden = "  (hidden)" if article.hidden_by or article.held else ""
            click.echo(
                f"{when}  [{feed.display_title}]  {article.title or '(untitled)'}  <{article.url or article.id}>"
                f"{dup}{hidden}"
            )


def article_json(article: Article, feed: FeedState) -> dict[str, Any]:
    """The documented `articles --json` record (README: "articles --json")."""
    from aggregator.model import iso

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
        "story_id": article.story_id or article.id,
        "story_score": article.story_score,
        "hidden_by": article.hidden_by,
        "backfill": article.held == "backfill",
        "full_text": article.full_text,
        "full_text_error": article.full_text_error,
    }


# --- stories ------------------------------------------------------------------------------------


@main.group(invoke_without_command=True)
@config_option
@click.option("--limit", default=20, show_default=True, help="How many stories.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per story.")
@click.pass_context
def stories(ctx: click.Context, config_path: Path | None, limit: int, as_json: bool) -> None:
    """The newest stories, each with its articles and the score that joined them."""
    if ctx.invoked_subcommand is not None:
        return
    config = load(config_path)
    with opened(config, readonly=True) as store:
        views = store.stories_overview(limit)
    for view in views:
        if as_json:
            click.echo(json.dumps(story_json(view), ensure_ascii=False))
            continue
        first = view.members[0].article
        click.echo(f"{first.title or '(untitled)'}  [{len(view.members)} article(s); story {view.id}]")
        for member in view.members:
            a = member.article
            why = f" ({a.story_rule}{_score(a)})" if a.story_rule and a.story_rule != "first" else ""
            shown = "" if not (a.hidden_by or a.held) else "  (hidden)"
            click.echo(f"  - {member.feed.display_title}: {a.title}  <{a.url or a.id}>  id {a.id}{why}{shown}")


def _score(article: Article) -> str:
    if article.story_score is None:
        return ""
    terms = f"; shared: {', '.join(article.story_why)}" if article.story_why else ""
    return f" {article.story_score:.2f}{terms}"


def story_json(view: StoryView) -> dict[str, Any]:
    from aggregator.model import iso

    return {
        "id": view.id,
        "size": len(view.members),
        "articles": [
            {
                "id": m.article.id,
                "title": m.article.title,
                "url": m.article.url,
                "feed_id": m.feed.id,
                "source": m.feed.display_title,
                "published_at": iso(m.article.published_at),
                "rule": m.article.story_rule,
                "score": m.article.story_score,
                "shared_terms": list(m.article.story_why),
                "visible": not (m.article.hidden_by or m.article.held),
            }
            for m in view.members
        ],
    }


@stories.command("split")
@config_option
@click.argument("article_id")
def stories_split(config_path: Path | None, article_id: str) -> None:
    """Take ARTICLE_ID out of its story: it stands alone from now on (ids already published stay)."""
    config = load(config_path)
    with opened(config) as store:
        story_id = store.split_article(article_id, _profile_builder(config))
    click.echo(f"{article_id} is now a story of its own ({story_id}).")


@stories.command("join")
@config_option
@click.argument("article_id")
@click.argument("other_id")
def stories_join(config_path: Path | None, article_id: str, other_id: str) -> None:
    """Make the stories of two articles one (the first seen keeps its id)."""
    config = load(config_path)
    with opened(config) as store:
        story_id = store.join_articles(article_id, other_id, _profile_builder(config))
    click.echo(f"One story now: {story_id}.")


def _profile_builder(config: Config) -> Any:
    from aggregator.ingest import cluster_settings, profile_builder

    return profile_builder(cluster_settings(config.settings.stories))
