"""Feed autodiscovery for `aggregator feeds add`: a site URL or a feed URL
in, a feed URL out. Fetching goes through the fetcher (same limits, same
private-address rule for URLs found in pages)."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from aggregator.fetch import ACCEPT_HTML, Fetcher
from aggregator.model import NO_FETCH_OPTIONS, FetchOptions, Outcome, ParseError
from aggregator.parse import parse_document

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


@dataclass(frozen=True)
class Discovered:
    url: str  # the feed's URL
    title: str | None
    entries: int
    via: str | None  # the page it was found on, if not given directly


class _LinkFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[int, str, str | None]] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"]
        if tag not in ("link", "a"):
            return
        rels = a.get("rel", "").lower().split()
        kind = a.get("type", "").split(";")[0].strip().lower()
        if "alternate" in rels and kind in FEED_TYPES and a.get("href"):
            self.links.append((FEED_TYPES[kind], a["href"], a.get("title") or None))


def find_feed_links(html: str, page_url: str) -> list[tuple[str, str | None]]:
    """<link rel="alternate" type="application/rss+xml" …> candidates, best first."""
    finder = _LinkFinder()
    try:
        finder.feed(html)
        finder.close()
    except Exception:  # html.parser gives up on some broken markup; use what it found
        pass
    base = urljoin(page_url, finder.base) if finder.base else page_url
    seen: dict[str, tuple[int, str | None]] = {}
    for rank, href, title in finder.links:
        url = urljoin(base, href.strip())
        if urlsplit(url).scheme in ("http", "https") and url not in seen:
            seen[url] = (rank, title)
    return [(url, title) for url, (rank, title) in sorted(seen.items(), key=lambda kv: kv[1][0])]


def discover(fetcher: Fetcher, url: str, options: FetchOptions = NO_FETCH_OPTIONS) -> Discovered:
    """The URL itself if it is a feed, else the first working feed its page links to."""
    page = fetcher.fetch(url, accept=ACCEPT_HTML, options=options)
    if page.outcome is not Outcome.OK or page.body is None:
        raise DiscoveryError(f"{url}: {page.error or page.outcome.value}")
    final = page.final_url or url
    try:
        parsed = parse_document(page.body, final, page.headers)
        return Discovered(
            url=final if page.permanent_redirect else url, title=parsed.title, entries=parsed.entry_count, via=None
        )
    except ParseError:
        pass
    text = page.body.decode(_charset(page.headers.get("content-type", "")) or "utf-8", "replace")
    candidates = find_feed_links(text, final)
    if not candidates:
        raise DiscoveryError(f"{url}: not a feed, and the page links to no RSS, Atom or JSON feed")
    page_private = fetcher.policy.host_is_private(urlsplit(final).hostname or "")
    problems = []
    for candidate, _title in candidates[:5]:
        result = fetcher.fetch(candidate, origin_private=page_private, options=options)
        if result.outcome is not Outcome.OK or result.body is None:
            problems.append(f"{candidate}: {result.error or result.outcome.value}")
            continue
        try:
            parsed = parse_document(result.body, result.final_url or candidate, result.headers)
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
