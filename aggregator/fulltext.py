"""Full text for summary-only feeds (issue 13): an article's own page
fetched, its main text extracted, sanitised like any content.

trafilatura finds the main text; it was chosen by measurement over
readability-lxml, jusText, boilerpy3, goose3 and resiliparse on saved
article pages (bench/bench_fulltext.py, bench/RESULTS.md "Full text
extraction"). It is imported on the first extraction only, so a service
without ``full_text: true`` feeds never pays for it.

The page is never handed to the library as the publisher sent it. We
decode it (HTTP charset, byte-order mark, ``<meta charset>``, then UTF-8,
then Windows-1252, as browsers do; trafilatura would ignore the HTTP
header and guess), and parse it with lxml ourselves, counting elements as
they come: the extractor's time and memory grow with the number of
elements (about 40 µs and 3 KB each), so a page over ``MAX_ELEMENTS`` is
refused before it costs anything. lxml's HTML parser reads no DTD and
fetches nothing, and the library is given the tree, never a URL to fetch.
"""

from __future__ import annotations

import codecs
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from aggregator.fetch import ACCEPT_PAGE, Fetcher
from aggregator.model import Outcome
from aggregator.sanitize import sanitize_html

if TYPE_CHECKING:
    from lxml.html import HtmlElement

log = logging.getLogger(__name__)

# Article pages get a smaller body limit than feeds (10 MB by default): one
# feed fetch serves many entries, but a full-text feed costs one page fetch
# per new article, and a page is turned into a tree (lxml takes about 500
# bytes per element), not streamed. Real article pages weigh 50 KB to 2 MB,
# most of it inline scripts and styles.
MAX_PAGE_BYTES = 5 * 1000**2
# Elements of a page the extractor may see. Lighthouse calls a page of 1,400
# elements excessive; 15,000 leaves room for the heaviest real article pages
# and bounds one extraction to about 0.6 s and 45 MB.
MAX_ELEMENTS = 15_000
# Less text than this is no article (a login wall, a "not found" page, a
# video page with a caption): the feed's own summary is as good.
MIN_TEXT_CHARS = 500
# ... and so is text of fewer different words than this ("x x x x ...").
MIN_DISTINCT_WORDS = 30
_WORD = re.compile(r"\w+")
_CHUNK = 64 * 1024

_HTML_TYPES = ("text/html", "application/xhtml+xml")
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# The HTML standard's encoding sniffing: labels of Latin-1 and ASCII mean
# Windows-1252 (keys are Python's codec names), and a <meta> that claims
# UTF-16 means UTF-8 (the bytes that carried it were ASCII-compatible).
_LABEL_ALIASES = {"iso8859-1": "cp1252", "ascii": "cp1252"}
_META_ALIASES = {"utf-16": "utf-8", "utf-16-le": "utf-8", "utf-16-be": "utf-8", "utf-32": "utf-8"}
_PRESCAN_BYTES = 2048
# Bounded repetitions over at most _PRESCAN_BYTES: linear whatever the bytes.
_META_CHARSET = re.compile(rb"<meta\b[^>]{0,512}?charset\s*=\s*[\"']?\s*([a-zA-Z0-9_.:-]{1,40})", re.I)


@dataclass(frozen=True)
class FullText:
    """What fetching one article's page gave: its main text, or why not."""

    content: str | None  # sanitised HTML with absolute URLs
    error: str | None  # None when content is set


class _Refused(Exception):
    """The page holds no article we can take (the reason is the message)."""


def extract(document: bytes, url: str, content_type: str | None) -> str | None:
    """The main text of an HTML page as sanitised HTML with absolute URLs,
    or None when the page holds nothing article-like (a login wall, an
    index page, a tiny page), is not HTML, or is too large to examine.
    Pure: reads nothing but its arguments, never raises for any input."""
    try:
        return _extract(document, url, content_type)
    except _Refused:
        return None


def fetch_full_text(
    fetcher: Fetcher,
    url: str,
    origin_private: bool | None,
    extractor: Callable[[bytes, str, str | None], str | None] | None = None,
) -> FullText:
    """Fetch an article's page and extract its main text. Never raises for
    anything a server sends: every failure is an ``error`` to record.

    The fetch goes through ``fetcher`` (per-host slots, total deadline,
    redirect limit, the private-address rule) with a body limit of at most
    ``MAX_PAGE_BYTES``. ``origin_private``: whether the feed that links to
    the page is on a private address (False for a public feed: then the page
    and every redirect must be public too), as for autodiscovered links.
    ``extractor``: ``extract`` by default; a caller may run it elsewhere (a
    worker process with a timeout) with the same signature, and what it
    raises is recorded too."""
    result = fetcher.fetch(url, accept=ACCEPT_PAGE, origin_private=origin_private, max_bytes=MAX_PAGE_BYTES)
    if result.outcome is not Outcome.OK or result.body is None:
        return FullText(None, result.error or f"fetch failed: {result.outcome.value}")
    content_type = result.headers.get("content-type")
    if not _looks_like_html(content_type, result.body):
        kind = (content_type or "no Content-Type").split(";")[0].strip()[:80]
        return FullText(None, f"not an HTML page ({kind})")
    page_url = result.final_url or url
    try:
        if extractor is None:
            return FullText(_extract(result.body, page_url, content_type), None)
        content = extractor(result.body, page_url, content_type)
    except _Refused as exc:
        return FullText(None, str(exc))
    except Exception as exc:  # a library bug on one page, a worker's timeout: recorded, the poller goes on
        log.debug("%s: extraction failed", page_url, exc_info=True)
        return FullText(None, f"extraction failed: {type(exc).__name__}: {str(exc)[:200]}")
    if content is None:
        return FullText(None, "no article text found on the page")
    return FullText(content, None)


# --- the work -------------------------------------------------------------------------------------


def _extract(document: bytes, url: str, content_type: str | None) -> str:
    if not _looks_like_html(content_type, document):
        raise _Refused("not an HTML page")
    document = document[:MAX_PAGE_BYTES]
    text = document.decode(_encoding(document, content_type), "replace").replace("\x00", "")
    root = _parse(text.encode("utf-8"))
    base = _base_url(root, url)
    body = _main_text(root)
    content = sanitize_html(body, base)
    if content is None:
        raise _Refused("no article text found on the page")
    return content


def _looks_like_html(content_type: str | None, document: bytes) -> bool:
    if content_type:
        return content_type.split(";", 1)[0].strip().lower() in _HTML_TYPES
    start = document[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()  # no Content-Type: sniff, as browsers do
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<!--"))


def _encoding(document: bytes, content_type: str | None) -> str:
    """The page's encoding in the order of the HTML standard: byte-order
    mark, HTTP charset, <meta> in the first bytes, then UTF-8 when the bytes
    are valid UTF-8, else Windows-1252 (what browsers assume for the
    undeclared pages of the Western web)."""
    for bom, name in _BOMS:
        if document.startswith(bom):
            return name
    declared = _known_encoding(_header_charset(content_type))
    if declared:
        return declared
    match = _META_CHARSET.search(document[:_PRESCAN_BYTES])
    if match:
        declared = _known_encoding(match.group(1).decode("ascii", "replace"))
        if declared:
            return _META_ALIASES.get(declared, declared)
    try:
        document.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(document) - 3:  # a character cut by the size limit at the very end is no evidence
            return "cp1252"
    return "utf-8"


def _header_charset(content_type: str | None) -> str | None:
    for part in (content_type or "").split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "charset":
            return value.strip("\"' ")
    return None


def _known_encoding(label: str | None) -> str | None:
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().lower()).name
    except (LookupError, ValueError):
        return None
    return _LABEL_ALIASES.get(name, name)


def _parse(document: bytes) -> HtmlElement:
    """The page as an lxml.html tree, fed in chunks so that a page of too
    many elements is refused before its whole tree is built."""
    import lxml.etree
    import lxml.html

    parser = lxml.etree.HTMLPullParser(
        events=("start",),
        encoding="utf-8",
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
        no_network=True,
        huge_tree=False,  # libxml2's own limits: 256 levels deep, 10 MB of text in one node
    )
    parser.set_element_class_lookup(lxml.html.HtmlElementClassLookup())
    elements = 0
    try:
        for offset in range(0, len(document), _CHUNK):
            parser.feed(document[offset : offset + _CHUNK])
            elements += sum(1 for _ in parser.read_events())
            if elements > MAX_ELEMENTS:
                raise _Refused(f"the page has more than {MAX_ELEMENTS:,} elements; not examined")
        root = parser.close()
    except lxml.etree.LxmlError as exc:
        raise _Refused(f"the page could not be parsed as HTML: {str(exc)[:200]}") from None
    if not isinstance(root, lxml.html.HtmlElement):
        raise _Refused("the page could not be parsed as HTML")
    return root


def _base_url(root: HtmlElement, url: str) -> str:
    """Where the page's relative links start from: its <base href> if it
    has a usable one, else its own URL."""
    for base in root.iter("base"):
        href = (base.get("href") or "").strip()
        if href:
            try:
                resolved = urljoin(url, href)
            except ValueError:
                return url
            return resolved if urlsplit(resolved).scheme in ("http", "https") else url
    return url


def _main_text(root: HtmlElement) -> str:
    """trafilatura on the tree, then our own judgement of what it found."""
    import lxml.html
    import trafilatura

    _quiet_library_logs()
    found = trafilatura.extract(
        root,
        # No URL: trafilatura would resolve relative links against the site's
        # root instead of the page ("../x" on /a/b/c.html gives /x); the
        # sanitiser resolves them against the page (or its <base>) instead.
        url=None,
        output_format="html",
        include_comments=False,
        include_tables=True,
        include_images=True,
        include_links=True,
        # Bold and italics dropped: with them trafilatura loses text nested in
        # formatting (tables inside <b> inside list items); recall 0.988 against 0.991.
        include_formatting=False,
        with_metadata=False,
        fast=True,  # no second pass with the fallback extractors: as good on our pages, and a third of the time
        deduplicate=False,
    )
    if not found:
        raise _Refused("no article text found on the page")
    tree = lxml.html.document_fromstring(found)
    body = tree.find("body")
    if body is None:
        raise _Refused("no article text found on the page")
    _drop_leading_title(body)
    _refuse_non_articles(body)
    return "".join(lxml.html.tostring(child, encoding="unicode") for child in body)


def _drop_leading_title(body: HtmlElement) -> None:
    """The page's <h1> is the article's title, which every output already
    shows above the content."""
    first = next(iter(body), None)
    if first is not None and first.tag == "h1" and not (body.text or "").strip():
        first.drop_tree()


def _refuse_non_articles(body: HtmlElement) -> None:
    text = " ".join(body.text_content().split())
    if len(text) < MIN_TEXT_CHARS:
        raise _Refused(f"too little text on the page for an article ({len(text)} characters)")
    distinct = len(set(_WORD.findall(text.lower())))
    if distinct < MIN_DISTINCT_WORDS:
        raise _Refused(f"too little text on the page for an article ({distinct} different words)")
    headings = list(body.iter("h1", "h2", "h3", "h4", "h5", "h6"))
    linked = [h for h in headings if h.find(".//a") is not None or next(h.iterancestors("a"), None) is not None]
    if len(linked) >= 3 and 2 * len(linked) >= len(headings):
        # Headlines that are links are a list of articles (a home, section or tag page).
        raise _Refused(f"the page is a list of {len(linked)} linked headlines, not an article")
    link_text = sum(len(" ".join(a.text_content().split())) for a in body.iter("a"))
    if 2 * link_text > len(text):
        raise _Refused("the page is mostly links, not an article")


_quieted = False


def _quiet_library_logs() -> None:
    """trafilatura logs parsing trouble of hostile pages as errors, without
    saying which page; the caller records the outcome per article instead."""
    global _quieted
    if not _quieted:
        for name in ("trafilatura", "htmldate", "courlan", "justext"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        _quieted = True
