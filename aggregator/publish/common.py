"""What every renderer shares: the feed-level description of one output,
dates in the formats the standards ask for, and the "also reported by" note."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import quote

from aggregator import PROJECT_URL, __version__
from aggregator.httpdate import format_http_date
from aggregator.model import AlsoReported, Article, Author, Enclosure, Source, Story, iso
from aggregator.publish.xmlutil import attr, text
from aggregator.sanitize import sanitize_html, to_text

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
    empty_updated: datetime | None = None  # an empty feed's updated time: the last poll

    def url(self, suffix: str) -> str:
        return f"{self.base_url}{quote(self.path, safe='/')}{suffix}"

    @property
    def home_url(self) -> str:
        return self.base_url


def entry_updated(story: Story) -> datetime:
    """When the entry last changed: the article's own update, or the moment
    another outlet joined its story (its "also reported by" grew)."""
    article = story.article
    own = article.updated_at or article.published_at or article.first_seen_at
    return max(own, story.joined_at) if story.joined_at else own


def entry_published(story: Story) -> datetime:
    article = story.article
    return article.published_at or article.first_seen_at


def newest_update(stories: Sequence[Story], empty: datetime | None = None) -> datetime:
    """The feed's own updated time: the newest entry's, never the clock, so an
    unchanged feed renders to identical bytes. An empty feed says ``empty``
    (the last poll), else the epoch."""
    return max((entry_updated(s) for s in stories), default=empty or EPOCH)


# RFC 3339 in UTC to the second: the format every stored and served time uses (one formatter for all).
rfc3339 = iso


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


# --- bounds: no feed can make an output huge (every field capped, then the document) -----

MAX_TITLE = 1000
MAX_SOURCE_TITLE = 200
MAX_URL = 2000
MAX_NAME = 200
MAX_CATEGORY = 100
MAX_CATEGORIES = 20
MAX_ENCLOSURES = 10
MAX_TYPE = 100
MAX_BODY = 100_000  # characters of an entry's HTML
MAX_SUMMARY = 20_000
MAX_DOCUMENT = 10 * 1000**2  # bytes an output document aims to stay under (one entry's worth over at most)


def shorten(value: str | None, limit: int) -> str | None:
    if value is None or len(value) <= limit:
        return value
    return value[: limit - 1].rstrip() + "…"


def _url(value: str | None) -> str | None:
    """A URL too long to be real is dropped rather than cut into a wrong one."""
    return value if value is None or len(value) <= MAX_URL else None


def _html(value: str | None, limit: int, base: str | None) -> str | None:
    if value is None or len(value) <= limit:
        return value
    # Cut, then sanitised again: the cleaner closes whatever the cut left open.
    return sanitize_html(value[:limit], base)


def _source(source: Source) -> Source:
    return replace(
        source,
        title=shorten(source.title, MAX_SOURCE_TITLE) or "",
        feed_url=_url(source.feed_url) or "",
        site_url=_url(source.site_url),
    )


def bound(story: Story) -> Story:
    """The story with every field that reaches an output capped."""
    a = story.article
    article = replace(
        a,
        title=shorten(a.title, MAX_TITLE) or "",
        url=_url(a.url),
        image=_url(a.image),
        summary=_html(a.summary, MAX_SUMMARY, a.url),
        content=_html(a.content, MAX_BODY, a.url),
        authors=tuple(
            Author(shorten(x.name, MAX_NAME), shorten(x.email, MAX_NAME), _url(x.url))
            for x in a.authors[:MAX_CATEGORIES]
        ),
        categories=tuple(c for c in (shorten(c, MAX_CATEGORY) for c in a.categories[:MAX_CATEGORIES]) if c),
        enclosures=tuple(
            Enclosure(e.url, shorten(e.type, MAX_TYPE), e.length)
            for e in a.enclosures[:MAX_ENCLOSURES]
            if _url(e.url) is not None
        ),
    )
    also = [AlsoReported(_source(o.source), _url(o.url), shorten(o.title, MAX_TITLE) or "") for o in story.also]
    return replace(story, article=article, source=_source(story.source), also=also)


def _weight(story: Story) -> int:
    """About how many bytes a story takes in an output (escaping included)."""
    a = story.article
    size = 2000 + len(a.title) + len(a.content or "") + len(a.summary or "") + 300 * len(story.also)
    return size * 5 // 4


def fit(stories: Sequence[Story], budget: int = MAX_DOCUMENT) -> list[Story]:
    """The stories, bounded, as many as the document's budget holds (all, for any real feed)."""
    out: list[Story] = []
    used = 0
    for story in stories:
        bounded = bound(story)
        used += _weight(bounded)
        if out and used > budget:
            break
        out.append(bounded)
    return out


def plain_text(article: Article) -> str:
    """A stored article's summary and content as plain text (what filters and searches read)."""
    return to_text(" ".join(part for part in (article.summary, article.content) if part))[:20_000]
