"""The HTML pages: the Latest stories (with autodiscovery links for every
format) and the list of sources. No JavaScript; every value is escaped, and
only text (never a source's markup) from summaries is shown."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from urllib.parse import quote

from aggregator.model import FeedState, Story
from aggregator.publish.common import GENERATOR, GENERATOR_VERSION, FeedMeta, entry_published, rfc3339, shorten
from aggregator.sanitize import strip_control, to_text
from aggregator.urls import absolute

STYLE = """
:root { color-scheme: light dark; --muted: #666; --line: #ddd; }
@media (prefers-color-scheme: dark) { :root { --muted: #aaa; --line: #444; } }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Noto Sans Arabic", sans-serif;
       margin: 0 auto; max-width: 46rem; padding: 0 1rem 3rem; overflow-wrap: anywhere; }
header { border-bottom: 1px solid var(--line); margin-bottom: 1rem; }
h1 { font-size: 1.6rem; margin: 1rem 0 0.2rem; }
nav a { margin-right: 0.8rem; }
article { border-bottom: 1px solid var(--line); padding: 0.8rem 0; display: flow-root; }
article h2 { font-size: 1.1rem; margin: 0 0 0.2rem; }
.meta, .also { color: var(--muted); font-size: 0.85rem; margin: 0.2rem 0; }
article img { float: right; width: 6rem; height: 4.5rem; object-fit: cover; margin: 0 0 0.4rem 0.8rem;
              border-radius: 4px; }
p.summary { margin: 0.3rem 0; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
td, th { border-bottom: 1px solid var(--line); padding: 0.3rem; text-align: start; vertical-align: top; }
.error { color: #b00020; }
""".strip()


def _e(value: object) -> str:
    return escape(strip_control(str(value)), quote=True) if value is not None else ""


def _page(title: str, head_extra: str, body: str, language: str | None = None) -> bytes:
    lang = f' lang="{_e(language)}"' if language else ""
    return (
        f'<!DOCTYPE html>\n<html{lang}>\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="{GENERATOR} {GENERATOR_VERSION}">\n'
        f"<title>{_e(title)}</title>\n{head_extra}<style>\n{STYLE}\n</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    ).encode()


def _discovery_links(meta: FeedMeta) -> str:
    return (
        f'<link rel="alternate" type="application/atom+xml" title="{_e(meta.title)} (Atom)"'
        f' href="{_e(meta.url(".atom"))}">\n'
        f'<link rel="alternate" type="application/rss+xml" title="{_e(meta.title)} (RSS)"'
        f' href="{_e(meta.url(".rss"))}">\n'
        f'<link rel="alternate" type="application/feed+json" title="{_e(meta.title)} (JSON Feed)"'
        f' href="{_e(meta.url(".json"))}">\n'
    )


def _nav(meta: FeedMeta, tags: Sequence[str]) -> str:
    links = [
        f'<a href="{_e(meta.url(".atom"))}">Atom</a>',
        f'<a href="{_e(meta.url(".rss"))}">RSS</a>',
        f'<a href="{_e(meta.url(".json"))}">JSON Feed</a>',
        f'<a href="{_e(meta.base_url)}feeds">Sources</a>',
        f'<a href="{_e(meta.base_url)}opml">OPML</a>',
    ]
    tag_links = " ".join(f'<a href="{_e(meta.base_url)}tags/{_e(quote(t, safe=""))}.atom">#{_e(t)}</a>' for t in tags)
    return f"<nav>{' '.join(links)}</nav>" + (f'<p class="meta">Tags: {tag_links}</p>' if tags else "")


def _search_form(meta: FeedMeta, query: str | None) -> str:
    """A plain GET form: the search box works without JavaScript."""
    value = f' value="{_e(query[:200])}"' if query else ""
    return (
        f'<form class="search" role="search" method="get" action="{_e(meta.base_url)}search">'
        f'<input type="search" name="q" maxlength="200" aria-label="Search the stories"{value}> '
        "<button>Search</button></form>"
    )


def render_index(
    stories: Sequence[Story], meta: FeedMeta, tags: Sequence[str] = (), empty_note: str = "", query: str | None = None
) -> bytes:
    items = []
    for story in stories:
        a = story.article
        title = _e(a.title or a.url or "(untitled)")
        heading = f'<a href="{_e(a.url)}">{title}</a>' if a.url else title
        when = entry_published(story)
        image = absolute(a.image, None)
        img = f'<img src="{_e(image)}" alt="" loading="lazy">' if image else ""
        summary = to_text(a.summary or a.content)
        if len(summary) > 320:
            summary = summary[:320].rsplit(" ", 1)[0] + " …"
        also = ""
        if story.also:
            names = ", ".join(
                f'<a href="{_e(o.url)}">{_e(o.source.title)}</a>' if o.url else _e(o.source.title) for o in story.also
            )
            outlets = len(story.also) + 1
            also = f'<p class="also">Also reported by {names} ({outlets} outlets)</p>'
        source = story.source
        source_html = f'<a href="{_e(source.site_url)}">{_e(source.title)}</a>' if source.site_url else _e(source.title)
        items.append(
            f"<article>{img}<h2>{heading}</h2>"
            f'<p class="meta">{source_html} · <time datetime="{rfc3339(when)}">{when:%Y-%m-%d %H:%M} UTC</time></p>'
            + (f'<p class="summary">{_e(summary)}</p>' if summary else "")
            + f"{also}</article>\n"
        )
    body = (
        f'<header><h1>{_e(meta.title)}</h1><p class="meta">{_e(meta.subtitle)}</p>{_nav(meta, tags)}'
        f"{_search_form(meta, query)}</header>\n"
        f"<main>\n{''.join(items) or f'<p>No stories yet. {_e(empty_note)}</p>'}</main>\n"
    )
    return _page(meta.title, _discovery_links(meta), body, meta.language)


def render_sources(feeds: Sequence[FeedState], meta: FeedMeta) -> bytes:
    rows = []
    for feed in feeds:
        status = feed.status.value
        if status == "active":
            status = f"{feed.last_status or ''} {feed.last_outcome or 'not polled yet'}".strip()
        error = f'<br><span class="error">{_e(feed.last_error)}</span>' if feed.last_error else ""
        site = f' (<a href="{_e(feed.site_url)}">site</a>)' if feed.site_url else ""
        last = feed.last_fetch_at.strftime("%Y-%m-%d %H:%M") if feed.last_fetch_at else "-"
        rows.append(
            f'<tr><td><a href="{_e(feed.url)}">{_e(shorten(feed.display_title, 200))}</a>{site}</td>'
            f"<td>{_e(', '.join(feed.tags))}</td>"
            f"<td>{_e(status)}{error}</td><td>{_e(last)}</td><td>{feed.article_count}</td></tr>\n"
        )
    body = (
        f"<header><h1>{_e(meta.title)}: sources</h1>{_nav(meta, ())}</header>\n<main><table>\n"
        "<tr><th>Source</th><th>Tags</th><th>Last poll</th><th>When (UTC)</th><th>Articles</th></tr>\n"
        f"{''.join(rows)}</table></main>\n"
    )
    return _page(f"{meta.title}: sources", _discovery_links(meta), body, meta.language)
