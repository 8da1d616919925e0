"""Feed autodiscovery for `aggregator feeds add`: a site URL or a feed URL
in, a feed URL out. Fetching goes through the fetcher (same limits, same
private-address rule for URLs found in pages); parsing goes through the same
parser as polling (same time limit, same ParseError for any failure)."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import nh3

from aggregator.fetch import ACCEPT_HTML, Fetcher
from aggregator.model import NO_FETCH_OPTIONS, FetchOptions, Outcome, ParsedFeed, ParseError
from aggregator.sanitize import strip_control

FEED_TYPES = {
    "application/rss+xml": 0,
    "application/atom+xml": 0,
    "application/feed+json": 1,
    "application/json": 2,
    "application/rdf+xml": 1,
    "text/xml": 3,
    "application/xml": 3,
}


class DiscoveryError(Exception):
    pass


class DocumentParser(Protocol):
    """What polling parses with (ingest.make_parser): a time limit, and
    ParseError for whatever goes wrong with a document."""

    def parse(
        self, body: bytes, url: str, headers: dict[str, str], now: datetime, known: dict[str, str]
    ) -> ParsedFeed: ...


@dataclass(frozen=True)
class Discovered:
    url: str  # the feed's URL
    title: str | None
    entries: int
    via: str | None  # the page it was found on, if not given directly


# The page is reduced by ammonia (html5ever, the HTML standard's parser, in
# linear time) to its <link>, <a> and <base> tags with the attributes that
# matter, serialised with every value double-quoted and escaped; the tags are
# then read with two linear patterns. html.parser from the standard library is
# quadratic on pages such as "<a <a <a …" (40,000 tags: minutes).
_LINK_CLEANER = nh3.Cleaner(
    tags={"link", "a", "base"},
    attributes={
        "link": {"rel", "type", "href", "title"},
        "a": {"rel", "type", "href", "title"},
        "base": {"href"},
    },
    clean_content_tags={"script", "style", "template", "textarea", "title", "noscript"},
    url_schemes={"http", "https"},
    url_relative="pass_through",
    link_rel=None,
    strip_comments=True,
)
_TAG = re.compile(r"<(link|a|base)\b([^<>]*)>")
_ATTRIBUTE = re.compile(r'([a-z][a-z0-9-]*)="([^"]*)"')


def find_feed_links(page: str, page_url: str) -> list[tuple[str, str | None]]:
    """<link rel="alternate" type="application/rss+xml" …> candidates, best first."""
    links: list[tuple[int, str, str | None]] = []
    base: str | None = None
    for tag in _TAG.finditer(_LINK_CLEANER.clean(strip_control(page))):
        a = {name: html.unescape(value) for name, value in _ATTRIBUTE.findall(tag.group(2))}
        if tag.group(1) == "base":
            if base is None and a.get("href"):
                base = a["href"]
            continue
        rels = a.get("rel", "").lower().split()
        kind = a.get("type", "").split(";")[0].strip().lower()
        if "alternate" in rels and kind in FEED_TYPES and a.get("href"):
            links.append((FEED_TYPES[kind], a["href"], a.get("title") or None))
    base_url = urljoin(page_url, base) if base else page_url
    seen: dict[str, tuple[int, str | None]] = {}
    for rank, href, title in links:
        url = urljoin(base_url, href.strip())
        if urlsplit(url).scheme in ("http", "https") and url not in seen:
            seen[url] = (rank, title)
    return [(url, title) for url, (rank, title) in sorted(seen.items(), key=lambda kv: kv[1][0])]


def discover(
    fetcher: Fetcher, url: str, parser: DocumentParser, options: FetchOptions = NO_FETCH_OPTIONS
) -> Discovered:
    """The URL itself if it is a feed, else the first working feed its page links to."""
    page = fetcher.fetch(url, accept=ACCEPT_HTML, options=options)
    if page.outcome is not Outcome.OK or page.body is None:
        raise DiscoveryError(f"{url}: {page.error or page.outcome.value}")
    final = page.final_url or url
    try:
        parsed = parser.parse(page.body, final, page.headers, datetime.now(UTC), {})
        return Discovered(
            url=final if page.permanent_redirect else url, title=parsed.title, entries=parsed.entry_count, via=None
        )
    except ParseError as exc:
        not_a_feed = exc
    text = page.body.decode(_charset(page.headers.get("content-type", "")) or "utf-8", "replace")
    candidates = find_feed_links(text, final)
    if not candidates:
        raise DiscoveryError(f"{url}: {not_a_feed}; and the page links to no RSS, Atom or JSON feed")
    page_private = fetcher.policy.host_is_private(urlsplit(final).hostname or "")
    problems = []
    for candidate, _title in candidates[:5]:
        result = fetcher.fetch(candidate, origin_private=page_private, options=options)
        if result.outcome is not Outcome.OK or result.body is None:
            problems.append(f"{candidate}: {result.error or result.outcome.value}")
            continue
        try:
            parsed = parser.parse(result.body, result.final_url or candidate, result.headers, datetime.now(UTC), {})
        except ParseError as exc:
            problems.append(f"{candidate}: {exc}")
            continue
        return Discovered(url=candidate, title=parsed.title, entries=parsed.entry_count, via=final)
    raise DiscoveryError(f"{url}: the page links to feeds, but none worked: " + "; ".join(problems))


def _charset(content_type: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip("\"' ")
            try:
                "".encode(charset)
            except LookupError:
                return None
            return charset
    return None
