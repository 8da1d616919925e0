"""The HTML pages: a place to read the stories.

Pages: the Latest stories (the home page), one per tag and per saved search,
one per source (its newest stories), one per story (every outlet that
reported it), the archive (older stories by day, in pages with stable URLs),
and the table of sources. Every page has the same frame: the site's name, a
navigation bar, the search box (a plain GET form).

No JavaScript at all (the pages are served with a CSP forbidding scripts), no
clock: times are absolute (``<time datetime>``), so a page's bytes change only
when what it shows changes. Every value is escaped, and only text (never a
source's markup) from summaries is shown. Usable on a phone: one column, no
element wider than the screen, tap targets at least 44 px high, the sources
table turned into one block per source on narrow screens.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import quote

from aggregator.model import Article, FeedState, Story
from aggregator.publish.common import (
    GENERATOR,
    GENERATOR_VERSION,
    MAX_SOURCE_TITLE,
    MAX_TITLE,
    FeedMeta,
    bound,
    entry_published,
    rfc3339,
    shorten,
)
from aggregator.sanitize import strip_control, to_text
from aggregator.urls import absolute

STYLE = """
:root { color-scheme: light dark; --muted: #595959; --line: #d8d8d8; --accent: #0b57d0; }
@media (prefers-color-scheme: dark) { :root { --muted: #b0b0b0; --line: #444; --accent: #8ab4f8; } }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; text-size-adjust: 100%; }
body { font: 17px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans Arabic", sans-serif;
       margin: 0 auto; max-width: 46rem; padding: 0 1rem 3rem; overflow-wrap: break-word; }
a { color: var(--accent); }
.top { display: flex; flex-wrap: wrap; align-items: center; gap: 0 1rem; border-bottom: 1px solid var(--line);
       padding: 0.4rem 0; }
.top .site { font-weight: 700; text-decoration: none; color: inherit; margin-right: auto; }
.top a { display: inline-flex; align-items: center; min-height: 2.75rem; }
.top nav { display: flex; flex-wrap: wrap; gap: 0 1rem; }
form.search { display: flex; gap: 0.5rem; margin: 0.6rem 0; width: 100%; }
form.search input { flex: 1 1 auto; min-width: 0; min-height: 2.75rem; font: inherit; padding: 0.3rem 0.6rem;
                    border: 1px solid var(--muted); border-radius: 6px; background: Canvas; color: CanvasText; }
form.search button { flex: none; white-space: nowrap; min-height: 2.75rem; font: inherit; padding: 0.3rem 0.9rem;
                     border-radius: 6px;
                     border: 1px solid var(--accent); background: var(--accent); color: Canvas; cursor: pointer; }
h1 { font-size: 1.5rem; line-height: 1.25; margin: 1rem 0 0.2rem; overflow-wrap: anywhere; }
.intro { color: var(--muted); margin: 0.2rem 0; }
.feeds, .tags, .pages { margin: 0.3rem 0; }
.feeds a, .tags a, .pages a, .links a { display: inline-flex; align-items: center; min-height: 2.75rem;
                                         margin-right: 0.9rem; }
main { margin-top: 0.5rem; }
article { border-bottom: 1px solid var(--line); padding: 0.9rem 0; display: flow-root; }
article h2 { font-size: 1.15rem; line-height: 1.3; margin: 0 0 0.3rem; overflow-wrap: anywhere; }
article h2 a { text-decoration: none; }
article h2 a:hover { text-decoration: underline; }
.meta, .also { color: var(--muted); font-size: 0.9rem; margin: 0.2rem 0; }
.meta a, .also a { color: inherit; }
article img { float: right; width: 6rem; height: 4.5rem; object-fit: cover; margin: 0.2rem 0 0.4rem 0.8rem;
              border-radius: 4px; }
p.summary { margin: 0.4rem 0; }
.links { margin: 0.2rem 0 0; font-size: 0.95rem; }
.empty { padding: 1rem 0; }
ol.outlets { list-style: none; padding: 0; margin: 0; }
ol.outlets li { border-bottom: 1px solid var(--line); padding: 0.7rem 0; }
ol.outlets .title { font-size: 1.05rem; font-weight: 600; display: block; overflow-wrap: anywhere; }
ul.days { list-style: none; padding: 0; margin: 0; }
ul.days li { border-bottom: 1px solid var(--line); padding: 0.2rem 0; }
ul.days a { display: inline-flex; align-items: center; min-height: 2.75rem; margin-right: 0.7rem; }
table { border-collapse: collapse; width: 100%; font-size: 0.95rem; }
td, th { border-bottom: 1px solid var(--line); padding: 0.4rem; text-align: start; vertical-align: top; }
th { white-space: nowrap; }
td { overflow-wrap: anywhere; }
td a { display: inline-block; min-height: 2.75rem; padding-top: 0.5rem; }
.error { color: #b00020; }
@media (prefers-color-scheme: dark) { .error { color: #ff8a80; } }
@media (max-width: 40rem) {
  body { padding: 0 0.75rem 2rem; }
  table.sources thead { display: none; }
  table.sources, table.sources tbody, table.sources tr, table.sources td { display: block; width: 100%; }
  table.sources tr { border-bottom: 1px solid var(--line); padding: 0.4rem 0; }
  table.sources td { border: 0; padding: 0.1rem 0; }
  table.sources td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); }
}
""".strip()
# Sent in every page: whitespace that means nothing goes (about a quarter of it).
STYLE = re.sub(r"\s*([{};,])\s*", r"\1", re.sub(r"\s+", " ", STYLE))

# An archive page holds this many stories; a day with more is split in parts.
ARCHIVE_PAGE = 50
SUMMARY_CHARACTERS = 320
MAX_STORY_ARTICLES = 200  # articles listed on a story page (a story is bounded far below this in practice)

# "Read more" and its kin at the end of a summary: the page gives its own link
# on its own line. Checked on the last characters only (the pattern is linear).
_READ_MORE = re.compile(
    r"(?:^|[\s.:|(\[\-\u2013\u2014\u2026\u00bb])"
    r"(?:read more|read the (?:full|rest)\b[^.\u2026]{0,40}|continue reading\b[^.\u2026]{0,60}"
    r"|read full (?:story|article)|more\s*(?:\.\.\.|[\u2026\u00bb\u203a\u2192]))"
    r"\s*(?:[.)\]\u2026\u00bb\u203a\u2192]\s*)*$",
    re.IGNORECASE,
)
_ANCHOR = re.compile(r"<a\b", re.IGNORECASE)


@dataclass(frozen=True)
class Site:
    """What every page's frame needs: the site's name and where it lives."""

    title: str
    base_url: str  # ends with /
    language: str | None = None

    def url(self, path: str) -> str:
        """The absolute URL of one of our paths, given as it goes in a URL (a tag name quoted)."""
        return f"{self.base_url}{path}"


@dataclass(frozen=True)
class Links:
    """Where a list's entries may link: the sources and stories that have pages."""

    sources: frozenset[str] = frozenset()  # feed ids with a source page
    stories: frozenset[str] = frozenset()  # story ids with a story page


def source_path(feed_id: str) -> str:
    """A feed's page. Feed ids are 12 hexadecimal characters: safe in a path."""
    return f"sources/{feed_id}.html"


def story_path(story_id: str) -> str:
    """A story's page: its permanent id (an output id, any IRI) hashed into a file name."""
    return f"stories/{hashlib.sha256(story_id.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}.html"


def archive_path(day: str, part: int) -> str:
    """Day ``YYYY-MM-DD``'s archive page ``part`` (1 = its newest stories)."""
    return f"archive/{day}.html" if part == 1 else f"archive/{day}-{part}.html"


def _e(value: object) -> str:
    return escape(strip_control(str(value)), quote=True) if value is not None else ""


def _when(moment: datetime) -> str:
    return f'<time datetime="{rfc3339(moment)}">{moment:%Y-%m-%d %H:%M} UTC</time>'


def _page(site: Site, title: str, body: str, head_extra: str = "", query: str | None = None) -> bytes:
    lang = f' lang="{_e(site.language)}"' if site.language else ""
    frame = (
        f'<header class="top"><a class="site" href="{_e(site.base_url)}">{_e(site.title)}</a>'
        f'<nav aria-label="Site"><a href="{_e(site.base_url)}">Latest</a>'
        f'<a href="{_e(site.url("archive"))}">Archive</a><a href="{_e(site.url("feeds"))}">Sources</a></nav>'
        f"{_search_form(site, query)}</header>\n"
    )
    return (
        f'<!DOCTYPE html>\n<html{lang}>\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="{GENERATOR} {GENERATOR_VERSION}">\n'
        f"<title>{_e(title)}</title>\n{head_extra}<style>\n{STYLE}\n</style>\n</head>\n<body>\n{frame}{body}"
        "</body>\n</html>\n"
    ).encode()


def _search_form(site: Site, query: str | None) -> str:
    """A plain GET form: the search box works without JavaScript."""
    value = f' value="{_e(query[:200])}"' if query else ""
    return (
        f'<form class="search" role="search" method="get" action="{_e(site.url("search"))}">'
        f'<input type="search" name="q" maxlength="200" aria-label="Search the stories"'
        f' placeholder="Search the stories"{value}>'
        "<button>Search</button></form>"
    )


def _discovery_links(meta: FeedMeta) -> str:
    return (
        f'<link rel="alternate" type="application/atom+xml" title="{_e(meta.title)} (Atom)"'
        f' href="{_e(meta.url(".atom"))}">\n'
        f'<link rel="alternate" type="application/rss+xml" title="{_e(meta.title)} (RSS)"'
        f' href="{_e(meta.url(".rss"))}">\n'
        f'<link rel="alternate" type="application/feed+json" title="{_e(meta.title)} (JSON Feed)"'
        f' href="{_e(meta.url(".json"))}">\n'
    )


def _feed_links(meta: FeedMeta) -> str:
    return (
        f'<p class="feeds">Subscribe: <a href="{_e(meta.url(".atom"))}">Atom</a>'
        f'<a href="{_e(meta.url(".rss"))}">RSS</a><a href="{_e(meta.url(".json"))}">JSON Feed</a></p>'
    )


def _tag_links(site: Site, tags: Sequence[str]) -> str:
    if not tags:
        return ""
    links = "".join(f'<a href="{_e(site.url("tags/" + quote(t, safe="") + ".html"))}">#{_e(t)}</a>' for t in tags)
    return f'<p class="tags">Tags: {links}</p>'


def summary_text(article: Article, limit: int = SUMMARY_CHARACTERS) -> str:
    """The article's summary as plain text, at most ``limit`` characters cut at
    a word, without a trailing "Read more" (the page has its own link)."""
    html = article.summary or article.content or ""
    text = to_text(_ANCHOR.sub(" <a", html[:20_000]))  # a link's text never runs into the text before it
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:") + " …"
    tail = text[-120:]
    match = _READ_MORE.search(tail)
    if match:
        text = (text[: len(text) - len(tail)] + tail[: match.start()]).rstrip(" |:-\u2013\u2014\u2026")
    return text


def _source_link(site: Site, links: Links, feed_id: str, title: str) -> str:
    name = _e(shorten(title, MAX_SOURCE_TITLE))
    return f'<a href="{_e(site.url(source_path(feed_id)))}">{name}</a>' if feed_id in links.sources else name


def _entry(site: Site, story: Story, links: Links) -> str:
    a = story.article
    title = _e(a.title or a.url or "(untitled)")
    heading = f'<a href="{_e(a.url)}">{title}</a>' if a.url else title
    image = absolute(a.image, None)
    img = f'<img src="{_e(image)}" alt="" loading="lazy" width="96" height="72">' if image else ""
    summary = summary_text(a)
    source = story.source
    actions = []
    if a.url:
        actions.append(f'<a href="{_e(a.url)}">Read at {_e(shorten(source.title, 60))}</a>')
    if story.story_id in links.stories:
        actions.append(f'<a href="{_e(site.url(story_path(story.story_id)))}">All reports</a>')
    also = ""
    if story.also:
        names = ", ".join(
            f'<a href="{_e(o.url)}">{_e(o.source.title)}</a>' if o.url else _e(o.source.title) for o in story.also
        )
        also = f'<p class="also">Also reported by {names} ({len(story.also) + 1} outlets)</p>'
    return (
        f"<article>{img}<h2>{heading}</h2>"
        f'<p class="meta">{_source_link(site, links, source.feed_id, source.title)} · {_when(entry_published(story))}'
        "</p>"
        + (f'<p class="summary">{_e(summary)}</p>' if summary else "")
        + also
        + (f'<p class="links">{"".join(actions)}</p>' if actions else "")
        + "</article>\n"
    )


def _entries(site: Site, stories: Sequence[Story], links: Links, empty: str) -> str:
    items = "".join(_entry(site, bound(story), links) for story in stories)
    return items or f'<p class="empty">{_e(empty)}</p>\n'


def render_index(
    stories: Sequence[Story],
    meta: FeedMeta,
    site: Site,
    tags: Sequence[str] = (),
    links: Links = Links(),
    empty_note: str = "",
    query: str | None = None,
    feeds: bool = True,
    older: str | None = None,
) -> bytes:
    """Latest, a tag, a saved search or the search box's results. ``older``:
    the archive page that goes on from the last story shown."""
    pager = []
    if older:
        pager.append(f'<a rel="next" href="{_e(site.url(older))}">Older stories →</a>')
    if stories:
        pager.append(f'<a href="{_e(site.url("archive"))}">The archive, by day</a>')
    more = f'<p class="pages">{"".join(pager)}</p>\n' if pager else ""
    body = (
        f'<h1>{_e(meta.title)}</h1><p class="intro">{_e(meta.subtitle)}</p>'
        + (_feed_links(meta) if feeds else "")
        + _tag_links(site, tags)
        + f"\n<main>\n{_entries(site, stories, links, ('No stories yet. ' + empty_note).strip())}</main>\n{more}"
    )
    return _page(site, meta.title, body, _discovery_links(meta) if feeds else "", query)


def render_source(feed: FeedState, stories: Sequence[Story], site: Site, links: Links) -> bytes:
    """One source: where it lives and its newest stories. Nothing about its
    polling (that changes on every poll; the page changes with its stories)."""
    name = shorten(feed.display_title, MAX_SOURCE_TITLE) or feed.url
    site_link = f'<a href="{_e(feed.site_url)}">Website</a>' if feed.site_url else ""
    tags = _tag_links(site, feed.tags)
    body = (
        f"<h1>{_e(name)}</h1>"
        f'<p class="intro">The newest stories from this source. How polling it goes: '
        f'<a href="{_e(site.url("feeds"))}">Sources</a>.</p>'
        f'<p class="feeds"><a href="{_e(feed.url)}">Its feed</a>{site_link}</p>{tags}\n'
        f"<main>\n{_entries(site, stories, links, 'No stories from this source to show.')}</main>\n"
    )
    return _page(site, f"{site.title}: {name}", body)


@dataclass(frozen=True)
class Report:
    """One article of a story, as its page lists it."""

    article: Article
    feed_id: str
    source: str


def render_story(reports: Sequence[Report], site: Site, links: Links) -> bytes:
    """Every outlet that reported one story, earliest first."""
    first = reports[0].article
    title = shorten(first.title or first.url or "(untitled)", MAX_TITLE) or ""
    outlets = len({r.feed_id for r in reports})
    items = []
    for n, report in enumerate(reports[:MAX_STORY_ARTICLES]):
        a = report.article
        head = _e(a.title or a.url or "(untitled)")
        head = f'<a class="title" href="{_e(a.url)}">{head}</a>' if a.url else f'<span class="title">{head}</span>'
        when = a.published_at or a.first_seen_at
        first_mark = " · first report" if n == 0 else ""  # the earliest by its own date
        summary = summary_text(a, 200)
        source = _source_link(site, links, report.feed_id, report.source)
        items.append(
            f'<li>{head}<p class="meta">{source} · {_when(when)}{first_mark}</p>'
            + (f'<p class="summary">{_e(summary)}</p>' if summary else "")
            + "</li>\n"
        )
    more = len(reports) - MAX_STORY_ARTICLES
    body = (
        f"<h1>{_e(title)}</h1>"
        f'<p class="intro">{len(reports)} report{"s" if len(reports) != 1 else ""} from {outlets} '
        f"outlet{'s' if outlets != 1 else ''}, earliest first.</p>\n"
        f'<main>\n<ol class="outlets">\n{"".join(items)}</ol>\n'
        + (f'<p class="empty">And {more} more.</p>' if more > 0 else "")
        + "</main>\n"
    )
    return _page(site, f"{site.title}: {title}", body)


@dataclass(frozen=True)
class ArchivePage:
    """One page of one day of the archive."""

    day: str  # YYYY-MM-DD (UTC)
    part: int  # 1: the day's newest stories
    parts: int  # how many pages the day has
    newer: str | None  # path of the page just before (newer stories), None for the first
    older: str | None  # path of the page just after (older stories), None for the last

    @property
    def path(self) -> str:
        return archive_path(self.day, self.part)


def render_archive_page(page: ArchivePage, stories: Sequence[Story], site: Site, links: Links) -> bytes:
    label = page.day + (f", page {page.part} of {page.parts}" if page.parts > 1 else "")
    nav = []
    if page.newer:
        nav.append(f'<a rel="prev" href="{_e(site.url(page.newer))}">← Newer</a>')
    nav.append(f'<a href="{_e(site.url("archive"))}">All days</a>')
    if page.older:
        nav.append(f'<a rel="next" href="{_e(site.url(page.older))}">Older →</a>')
    pager = f'<p class="pages">{"".join(nav)}</p>'
    body = (
        f"<h1>Stories of {_e(label)}</h1>"
        '<p class="intro">By the time of their first report (UTC), newest first.</p>'
        f"{pager}\n<main>\n{_entries(site, stories, links, 'No stories.')}</main>\n{pager}\n"
    )
    return _page(site, f"{site.title}: {label}", body)


def render_archive_index(days: Sequence[tuple[str, int, int]], site: Site, note: str) -> bytes:
    """The days of the archive: (day, stories, pages), newest first."""
    rows = []
    for day, count, parts in days:
        pages = "".join(f'<a href="{_e(site.url(archive_path(day, p)))}">page {p}</a>' for p in range(2, parts + 1))
        rows.append(
            f'<li><a href="{_e(site.url(archive_path(day, 1)))}"><strong>{_e(day)}</strong></a>'
            f"{count} stor{'ies' if count != 1 else 'y'} {pages}</li>\n"
        )
    listing = f'<ul class="days">\n{"".join(rows)}</ul>\n' if rows else '<p class="empty">No stories yet.</p>\n'
    body = f'<h1>Archive</h1><p class="intro">{_e(note)}</p>\n<main>\n{listing}</main>\n'
    return _page(site, f"{site.title}: archive", body)


def render_sources(feeds: Sequence[FeedState], meta: FeedMeta, site: Site, links: Links) -> bytes:
    rows = []
    for feed in feeds:
        status = feed.status.value
        if status == "active":
            status = f"{feed.last_status or ''} {feed.last_outcome or 'not polled yet'}".strip()
        error = f'<br><span class="error">{_e(feed.last_error)}</span>' if feed.last_error else ""
        site_link = f' (<a href="{_e(feed.site_url)}">site</a>)' if feed.site_url else ""
        page = f' (<a href="{_e(site.url(source_path(feed.id)))}">stories</a>)' if feed.id in links.sources else ""
        last = feed.last_fetch_at.strftime("%Y-%m-%d %H:%M") if feed.last_fetch_at else "-"
        rows.append(
            f'<tr><td><a href="{_e(feed.url)}">{_e(shorten(feed.display_title, MAX_SOURCE_TITLE))}</a>{page}'
            f"{site_link}</td>"
            f'<td data-label="Tags">{_e(", ".join(feed.tags))}</td>'
            f'<td data-label="Last poll">{_e(status)}{error}</td><td data-label="When (UTC)">{_e(last)}</td>'
            f'<td data-label="Articles">{feed.article_count}</td></tr>\n'
        )
    body = (
        f'<h1>Sources</h1>{_feed_links(meta)}\n<main><table class="sources">\n'
        "<thead><tr><th>Source</th><th>Tags</th><th>Last poll</th><th>When (UTC)</th><th>Articles</th></tr></thead>\n"
        f"<tbody>\n{''.join(rows)}</tbody></table></main>\n"
    )
    return _page(site, f"{meta.title}: sources", body, _discovery_links(meta))


def reports_of(members: Sequence[tuple[Article, FeedState]]) -> list[Report]:
    """A story's visible articles as its page lists them (hidden ones never
    show), earliest first: by story time, min(published, first seen), then by
    arrival. Members come in arrival order."""
    visible = [(a, feed) for a, feed in members if a.hidden_by is None and a.held is None]
    visible.sort(key=lambda m: min(m[0].published_at or m[0].first_seen_at, m[0].first_seen_at))
    return [Report(a, feed.id, feed.display_title) for a, feed in visible]
