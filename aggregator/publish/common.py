"""What every renderer shares: the feed-level description of one output,
dates in the formats the standards ask for, and the "also reported by" note."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from aggregator import PROJECT_URL, __version__
from aggregator.httpdate import format_http_date
from aggregator.model import Story
from aggregator.publish.xmlutil import attr, text

GENERATOR = "aggregator"
GENERATOR_URI = PROJECT_URL
GENERATOR_VERSION = __version__
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class FeedMeta:
    """The merged feed as a whole (Latest, or one tag of it)."""

    title: str
    subtitle: str
    id: str  # permanent Atom id
    base_url: str  # ends with /
    path: str  # "latest" or "tags/world": the outputs are <path>.atom|.rss|.json
    language: str | None = None

    def url(self, suffix: str) -> str:
        return f"{self.base_url}{quote(self.path, safe='/')}{suffix}"

    @property
    def home_url(self) -> str:
        return self.base_url


def entry_updated(story: Story) -> datetime:
    article = story.article
    return article.updated_at or article.published_at or article.first_seen_at


def entry_published(story: Story) -> datetime:
    article = story.article
    return article.published_at or article.first_seen_at


def newest_update(stories: Sequence[Story]) -> datetime:
    """The feed's own updated time: the newest entry's, never the clock, so an
    unchanged feed renders to identical bytes."""
    return max((entry_updated(s) for s in stories), default=EPOCH)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc822(moment: datetime) -> str:
    """RFC 822 date with English day and month names whatever the locale."""
    return format_http_date(moment)


def also_reported_html(story: Story) -> str:
    """'Also reported by A, B.' with links, appended to the content."""
    if not story.also:
        return ""
    links = []
    for other in story.also:
        name = text(other.source.title)
        links.append(f'<a href="{attr(other.url)}">{name}</a>' if other.url else name)
    return f"<p>Also reported by {', '.join(links)}.</p>"


def body_html(story: Story) -> str:
    article = story.article
    return (article.content or article.summary or "") + also_reported_html(story)
