"""Bytes in, normalised entries out (DESIGN §4.1, §6).

feedparser parses RSS 0.9x/1.0/2.0 and Atom 0.3/1.0 from the bytes the
fetcher hands it (never fetching anything itself). JSON Feed is mapped onto
the same shape here, because feedparser 6 does not read it and the one JSON
Feed package on PyPI is an unmaintained 0.0.1.

This module is pure: no I/O, no clock (``now`` is passed in; the monotonic
clock only enforces a time limit), so it can run in a worker process and be
tested on its own.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import html
import io
import json
import logging
import os
import re
import time
import xml.sax
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import feedparser
import feedparser.mixin
import feedparser.parsers.strict
from feedparser.datetimes import _parse_date as parse_date_text

from aggregator import fastparse
from aggregator.dates import parse_feed_date
from aggregator.fastparse import sync_author_detail
from aggregator.model import Author, Enclosure, ParsedEntry, ParsedFeed, ParseError
from aggregator.sanitize import sanitize_html, strip_control, to_text
from aggregator.urls import absolute, canonical_url, clean_url

log = logging.getLogger(__name__)

# Which reader parses a document (ParsedFeed.parse_path).
PATH_FAST = "fast"  # fastparse: lxml and a port of feedparser's handlers
PATH_FEEDPARSER = "feedparser"
PATH_JSON = "json"
ENGINES = ("auto", "feedparser", "fast")
# AGGREGATOR_PARSE_ENGINE=feedparser turns the fast path off for a whole
# process tree (the hostile suite runs both ways; an operator can rule the
# fast path out when chasing a parsing difference).
DEFAULT_ENGINE = os.environ.get("AGGREGATOR_PARSE_ENGINE", "auto")
if DEFAULT_ENGINE not in ENGINES:
    raise RuntimeError(f"AGGREGATOR_PARSE_ENGINE must be one of {', '.join(ENGINES)}, not {DEFAULT_ENGINE!r}")


class FastPathDeferred(Exception):
    """engine="fast" and the fast path is not sure about this document: the
    caller parses it with feedparser (in a worker process, with a hard limit)."""


# feedparser resolves an RSS <guid> without isPermaLink="false" against the
# document URL, turning opaque ids such as "12345" into invented URLs that
# change whenever the feed moves. Identity must not depend on where we
# fetched from, so ids are taken exactly as written. No option of
# feedparser.parse() covers it (resolve_relative_uris is about links inside
# HTML; _FeedParserMixin.pop resolves ids whatever it says): the set is a
# class attribute, so the class attribute is patched.
feedparser.mixin._FeedParserMixin.can_be_relative_uri = feedparser.mixin._FeedParserMixin.can_be_relative_uri - {"id"}


# feedparser finds the e-mail address in an RSS <author> or <dc:creator> with a
# regular expression searched from every position of the text: a name like
# "a@b.b.b…b x" (40,000 segments) took over a minute. The same pattern, run
# only from each '@' (fastparse.find_email, shared with the fast path), gives
# the same address in linear time. feedparser builds its parser objects inside
# parse(), so no per-call option can replace the method: the class attribute
# is patched.


def _sync_author_detail(self: Any, key: str = "author") -> None:
    """feedparser 6.0's _FeedParserMixin._sync_author_detail with its e-mail
    search replaced by find_email; otherwise unchanged."""
    sync_author_detail(self._get_context(), key, feedparser.FeedParserDict())


feedparser.mixin._FeedParserMixin._sync_author_detail = _sync_author_detail


class _AttributesByQName:
    """The SAX attributes of one element, with getValueByQName in constant
    time. feedparser's strict parser asks for every attribute by its qname,
    and the standard library answers each question with a scan of all the
    element's attributes: an element with 40,000 attributes took 35 s. Only
    the three methods feedparser calls are needed."""

    def __init__(self, attrs: Any):
        self._attrs = attrs
        self._by_qname = {attrs.getQNameByName(name): attrs.getValue(name) for name in attrs.getNames()}

    def items(self) -> Any:
        return self._attrs.items()

    def getQNames(self) -> list[str]:
        return list(self._by_qname)

    def getValueByQName(self, qname: str) -> Any:
        return self._by_qname[qname]


_start_element_ns = feedparser.parsers.strict._StrictFeedParser.startElementNS


def _start_element_ns_linear(self: Any, name: Any, qname: Any, attrs: Any) -> Any:
    return _start_element_ns(self, name, qname, _AttributesByQName(attrs))


# As for the e-mail search: feedparser creates the SAX handler inside parse(),
# so the method is replaced on its class.
feedparser.parsers.strict._StrictFeedParser.startElementNS = _start_element_ns_linear

# Bump when normalisation changes, so stored entries are re-normalised once.
NORMALISER_VERSION = "1"
MAX_KEY_LENGTH = 512
MAX_TITLE = 1000  # characters; a longer "title" is somebody's mistake or an attack
MAX_TEXT = 20_000  # characters of plain text kept for search, stories and filters
FUTURE_TOLERANCE = timedelta(days=1)
EARLIEST_PLAUSIBLE = datetime(1971, 1, 1, tzinfo=UTC)  # epoch 0 is a placeholder, not a date

# Fold rules: why an entry of a document did not become an article of its own.
FOLD_SAME_KEY = "same-key-in-document"
DROP_EMPTY = "empty-entry"  # no id, link, title, text, enclosure or date: nothing to show (a cut-off tail)


# Localised RFC 822 dates ("Seg, 24 Set 2018 19:42:40 -0300"), dates without
# a zone and "2020/1/10 14:33:00": feedparser reads none of them correctly.
# Handlers are a feedparser global with no per-call option; this one only adds
# readings where feedparser's own give none or a wrong one.
feedparser.registerDateHandler(parse_feed_date)


def parse_document(
    body: bytes,
    url: str,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
    known_hashes: Mapping[str, str] | None = None,
    time_limit: float | None = None,
    engine: str | None = None,
) -> ParsedFeed:
    """Parse one fetched document. Raises ParseError, and nothing else,
    when the document holds nothing usable: every failure of a parser on a
    document (a JSON document nested 200,000 levels deep, a bug of ours or
    feedparser's) is that document's parse error, worded the same wherever
    the parse runs (poll, the parser processes, feeds add).

    ``known_hashes`` maps entry keys already stored for this feed to their
    content hash: an entry whose hash is unchanged is returned with
    ``unchanged=True`` and without its (costly) sanitised fields.

    ``time_limit`` (seconds) is checked between the steps of normalisation
    and between entries, every one of which is linear in its capped input:
    the cooperative limit for a parse in the calling process. feedparser
    itself cannot be interrupted; a hard limit needs a process (ingest.py).

    ``engine``: "auto" reads well-formed RSS and Atom with the fast path
    (fastparse.py) and everything it is not sure about with feedparser;
    "feedparser" never uses the fast path (the reference, for the
    differential test); "fast" raises FastPathDeferred instead of using
    feedparser. The fast path is linear in the document and checks the time
    limit at every entry, so it holds in the calling thread too. The path
    taken is ParsedFeed.parse_path. None: AGGREGATOR_PARSE_ENGINE, else "auto".
    """
    engine = engine or DEFAULT_ENGINE
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    deadline = time.monotonic() + time_limit if time_limit is not None else None
    try:
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        now = now or datetime.now(UTC)
        if _looks_like_json(body, headers.get("content-type", "")):
            raw = _parse_json_feed(body)
            path, deferred = PATH_JSON, None
        else:
            raw, path, deferred = _parse_xml(body, url, headers, engine, deadline, time_limit)
        _check(deadline, time_limit)
        parsed = _normalise(raw, url, now, known_hashes or {}, deadline, time_limit)
        parsed.parse_path, parsed.fast_deferred = path, deferred
        return parsed
    except (ParseError, FastPathDeferred):
        raise
    except RecursionError:
        raise ParseError("not a feed: the document is nested too deeply to read") from None
    except Exception as exc:
        log.debug("<%s>: parser failure", url, exc_info=True)
        raise ParseError(f"could not parse this document ({type(exc).__name__}: {str(exc)[:200]})") from None


def _check(deadline: float | None, time_limit: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise ParseError(f"parsing took longer than {time_limit:g}s; the document was abandoned")


# --- reading the document -----------------------------------------------------


def _looks_like_json(body: bytes, content_type: str) -> bool:
    head = body[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{") or ("json" in content_type.lower() and not head.startswith(b"<"))


_DOCTYPE = re.compile(rb"<!DOCTYPE\b")
_DECL_STOP = re.compile(rb"[\"'\[>]")  # in the declaration: a quoted literal, the subset, or its end
_SUBSET_STOP = re.compile(rb"[\"']|<!--|\]")  # in the subset: a literal, a comment, or its end


def _doctype_parts(body: bytes, position: int) -> tuple[int, int, int] | None:
    """For a DOCTYPE declaration whose keyword ends at ``position``: where its
    internal subset starts ('[') and where what follows the subset starts
    (both the declaration's '>' when it has no subset), and the end of the
    declaration (after its '>'). None when it is unterminated. The scan
    respects quoted literals and comments: a '>' or ']' inside them ends
    nothing."""
    while True:  # the declaration up to its internal subset or its end
        stop = _DECL_STOP.search(body, position)
        if stop is None:
            return None
        char = body[stop.start() : stop.start() + 1]
        if char == b">":
            return stop.start(), stop.start(), stop.end()
        if char == b"[":
            break
        close = body.find(char, stop.end())
        if close < 0:
            return None
        position = close + 1
    subset = stop.start()
    position = stop.end()
    while True:  # the subset up to its closing bracket
        stop = _SUBSET_STOP.search(body, position)
        if stop is None:
            return None
        token = stop.group()
        if token == b"]":
            break
        close = body.find(b"-->" if token == b"<!--" else token, stop.end())
        if close < 0:
            return None
        position = close + (3 if token == b"<!--" else 1)
    end = body.find(b">", stop.end())
    return None if end < 0 else (subset, end, end + 1)


def without_internal_subset(body: bytes) -> bytes:
    """The document with its DTD internal subset removed, so no entity it
    declares can expand (billion laughs, quadratic blow-up) or reach outside
    (external entities). feedparser keeps "safe" entities and misses a DTD
    written on one line; feeds have no use for either. The declaration is
    found wherever it is, however long the prolog."""
    match = _DOCTYPE.search(body)
    if match is None:
        return body
    parts = _doctype_parts(body, match.end())
    if parts is None:
        return body[: match.start()]  # unterminated: nothing after it is a usable document
    subset, after_subset, _end = parts
    return body if subset == after_subset else body[:subset] + body[after_subset:]


_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
)
_WIDE = (("utf-32-be", 4), ("utf-32-le", 4), ("utf-16-be", 2), ("utf-16-le", 2))
_XML_SPACE = b" \t\r\n"
_SPACE_RUN = re.compile(rb"[ \t\r\n]*")
_ELEMENT_START = re.compile(rb"<[A-Za-z_:\x80-\xff]")


def prepared_xml(body: bytes) -> bytes:
    """The document as feedparser's strict parser and its prolog patterns
    need it. Whitespace before the XML declaration (common: a blank line
    printed by the site's template) makes the declaration illegal, and
    feedparser then falls back to its lenient parser; a byte-order mark
    after such whitespace is not seen at all. Both are removed, keeping the
    BOM, and a UTF-16 or UTF-32 document (with or without a BOM) is worked
    on in UTF-8 and written back in its own encoding. The DTD internal
    subset is removed (see without_internal_subset) and the prolog is then
    rebuilt as the XML declaration on a line of its own, then the DOCTYPE:
    comments, processing instructions (stylesheets), whitespace and stray text
    before the root element carry nothing for a feed, and feedparser's
    patterns over the prolog are super-linear on them (its encoding sniffer
    over a long first line, its ENTITY and DOCTYPE patterns over many blank
    lines)."""
    rest = body.lstrip(_XML_SPACE)
    for bom, codec in _BOMS:
        if rest.startswith(bom):
            if codec == "utf-8":
                return bom + _tidy_prolog(without_internal_subset(rest[len(bom) :]))
            return bom + _in_utf8(rest[len(bom) :], codec)
    if b"\x00" in body[:4]:  # UTF-16 or UTF-32 without a BOM
        for codec, width in _WIDE:
            try:
                first = body[:width].decode(codec)
            except UnicodeDecodeError:
                continue
            if first in ("<", " ", "\t", "\r", "\n"):
                return _in_utf8(body, codec)
        return body
    return _tidy_prolog(without_internal_subset(rest))


def _in_utf8(body: bytes, codec: str) -> bytes:
    utf8 = body.decode(codec, "replace").encode("utf-8", "surrogatepass")
    tidied = _tidy_prolog(without_internal_subset(utf8))
    return tidied.decode("utf-8", "surrogatepass").encode(codec, "surrogatepass")


def _tidy_prolog(body: bytes) -> bytes:
    """The XML declaration alone on the first line, the DOCTYPE (without
    internal subset) on the next, then the root element; nothing else of the
    prolog. Empty when the document is nothing but an unterminated processing
    instruction. Linear: each item of the prolog is skipped with one search."""
    kept: list[bytes] = []
    position = 0
    first = True
    doctype_seen = False
    while True:
        position = _skip_space(body, position)
        while body.startswith(codecs.BOM_UTF8, position):  # a BOM written twice, or after the whitespace
            position = _skip_space(body, position + len(codecs.BOM_UTF8))
        if body.startswith(b"<?", position):
            end = body.find(b"?>", position + 2)
            if end < 0:
                break  # unterminated: stray text
            if (
                first
                and body[position + 2 : position + 5] == b"xml"
                and body[position + 5 : position + 6] in _DECL_NEXT
            ):
                kept.append(body[position : end + 2] + b"\n")  # the XML declaration, only as the first item
            position = end + 2
        elif body.startswith(b"<!--", position):
            end = body.find(b"-->", position + 4)
            if end < 0:
                break
            position = end + 3
        elif body[position : position + 9].upper() == b"<!DOCTYPE":
            parts = _doctype_parts(body, position + 9)
            if parts is None:
                break
            subset, after_subset, end = parts
            if not doctype_seen:
                kept.append(body[position:subset] + body[after_subset:end] + b"\n")
                doctype_seen = True
            position = end
        else:
            break
        first = False
    root = _ELEMENT_START.search(body, position)
    if root is None:  # not XML: left to feedparser to say so, but for its encoding sniffer's sake...
        rest = body[position:]
        if rest.startswith(b"<?"):  # ...never a long first line opening an unterminated instruction
            return b""
        return b"".join(kept) + rest
    if root.start() == 0:
        return body  # nothing before the root element: nothing to change
    return b"".join(kept) + body[root.start() :]


_DECL_NEXT = (b" ", b"\t", b"\r", b"\n", b"?")


def _skip_space(body: bytes, position: int) -> int:
    match = _SPACE_RUN.match(body, position)
    return match.end() if match else position


def _parse_xml(
    body: bytes, url: str, headers: dict[str, str], engine: str, deadline: float | None, time_limit: float | None
) -> tuple[dict[str, Any], str, str | None]:
    """(feedparser's result, the path that read it, why the fast path did not)."""
    if not body.strip():
        raise ParseError("empty document: the server sent no content")
    body = prepared_xml(body)
    if not body:
        raise ParseError("not a feed: no RSS, Atom or JSON Feed document found (an unterminated '<?' and no element)")
    response_headers = dict(headers)
    # feedparser resolves relative links against Content-Location.
    response_headers["content-location"] = url
    response_headers.pop("content-encoding", None)  # the fetcher already decoded it
    deferred = None
    if engine != "feedparser":
        try:
            fast = fastparse.read(body, url, response_headers, deadline)
        except fastparse.TooSlow:
            _check(deadline, time_limit)
            raise
        except fastparse.Deferred as exc:
            deferred = str(exc)[:300]
            log.debug("<%s>: read by feedparser: %s", url, deferred)
            if engine == "fast":
                raise FastPathDeferred(deferred) from None
        else:
            problem = fast["warning_exception"]
            return (
                {
                    "feed": fast["feed"],
                    "entries": fast["entries"],
                    "warning": _describe(problem) if problem else None,
                    "version": fast["version"],
                },
                PATH_FAST,
                None,
            )
    return _feedparser_xml(body, response_headers), PATH_FEEDPARSER, deferred


def _feedparser_xml(body: bytes, response_headers: dict[str, str]) -> dict[str, Any]:
    # A BytesIO, never a str: feedparser treats a str as a URL or a file name.
    parsed = feedparser.parse(
        io.BytesIO(body),
        response_headers=response_headers,
        sanitize_html=False,  # nh3 sanitises later, faster and stricter
        resolve_relative_uris=False,  # nh3 resolves URLs while it sanitises
    )
    version = parsed.get("version") or ""
    broken = isinstance(parsed.get("bozo_exception"), xml.sax.SAXParseException)
    if version and not parsed.entries and broken:
        raise ParseError(
            f"not a feed: the XML breaks off before any complete entry ({_describe(parsed.get('bozo_exception'))})"
        )
    if not version and not parsed.entries:
        problem = parsed.get("bozo_exception")
        if re.search(rb"<html[\s>]", body[:2048], re.I):
            raise ParseError("not a feed: the server sent an HTML page (look for the feed's own URL on that page)")
        detail = f" ({_describe(problem)})" if problem else ""
        raise ParseError(f"not a feed: no RSS, Atom or JSON Feed document found{detail}")
    warning = _describe(parsed.get("bozo_exception")) if parsed.get("bozo") else None
    return {"feed": parsed.feed, "entries": parsed.entries, "warning": warning, "version": version}


def _describe(exc: object) -> str:
    if isinstance(exc, xml.sax.SAXParseException):
        return f"XML error at line {exc.getLineNumber()}, column {exc.getColumnNumber()}: {exc.getMessage()}"
    text = str(exc) if exc else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _parse_json_feed(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"not a feed: invalid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ParseError("not a feed: JSON document is not an object")
    version = str(data.get("version", ""))
    if "jsonfeed.org" not in version:
        raise ParseError("not a feed: JSON document without a jsonfeed.org version")
    items = data.get("items")
    if not isinstance(items, list):
        raise ParseError("not a feed: JSON Feed without an 'items' list")
    feed = {
        "title": _str(data.get("title")),
        "title_detail": {"type": "text/plain"},
        "link": _str(data.get("home_page_url")),
        "links": [{"rel": "self", "href": _str(data.get("feed_url"))}] if data.get("feed_url") else [],
        "language": _str(data.get("language")),
    }
    return {
        "feed": feed,
        "entries": [_json_item(item) for item in items if isinstance(item, dict)],
        "warning": None,
        "version": "json" + version.rsplit("/", 1)[-1],
    }


def _own(item: Mapping[str, Any], key: str) -> Any:
    """item[key] without feedparser's aliases: FeedParserDict.get quietly
    answers updated_parsed with published_parsed (and the reverse)."""
    return dict.get(item, key) if isinstance(item, dict) else item.get(key)


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


def _only_str(value: Any) -> str | None:
    """A JSON Feed text field: a string, or nothing (a number where a date or
    HTML belongs is a broken feed, not something to stringify)."""
    return value if isinstance(value, str) and value else None


def _json_item(item: dict[str, Any]) -> dict[str, Any]:
    """A JSON Feed item in feedparser's entry shape."""
    authors = item.get("authors") or ([item["author"]] if isinstance(item.get("author"), dict) else [])
    published, modified = _only_str(item.get("date_published")), _only_str(item.get("date_modified"))
    entry: dict[str, Any] = {
        "id": _str(item.get("id")),
        "link": _only_str(item.get("url")) or _only_str(item.get("external_url")),
        "title": _only_str(item.get("title")),
        "title_detail": {"type": "text/plain"},
        "authors": [
            {"name": _only_str(a.get("name")), "href": _only_str(a.get("url"))} for a in authors if isinstance(a, dict)
        ]
        if isinstance(authors, list)
        else [],
        "tags": [{"term": t} for t in item.get("tags") or [] if _only_str(t)]
        if isinstance(item.get("tags"), list)
        else [],
        "published_parsed": parse_date_text(published) if published else None,
        "updated_parsed": parse_date_text(modified) if modified else None,
        "enclosures": [
            {
                "href": _only_str(a.get("url")),
                "type": _only_str(a.get("mime_type")),
                "length": _str(a.get("size_in_bytes")),
            }
            for a in item.get("attachments") or []
            if isinstance(a, dict) and _only_str(a.get("url"))
        ]
        if isinstance(item.get("attachments"), list)
        else [],
        "language": _only_str(item.get("language")),
    }
    content = []
    if _only_str(item.get("content_html")):
        content.append({"type": "text/html", "value": item["content_html"]})
    elif _only_str(item.get("content_text")):
        content.append({"type": "text/plain", "value": item["content_text"]})
    entry["content"] = content
    if _only_str(item.get("summary")):
        entry["summary_detail"] = {"type": "text/plain", "value": item["summary"]}
    image = _only_str(item.get("image")) or _only_str(item.get("banner_image"))
    if image:
        entry["media_thumbnail"] = [{"url": image}]
    return entry


# --- normalising ---------------------------------------------------------------


def _normalise(
    raw: dict[str, Any],
    url: str,
    now: datetime,
    known: Mapping[str, str],
    deadline: float | None = None,
    time_limit: float | None = None,
) -> ParsedFeed:
    feed = raw["feed"]
    entries = raw["entries"]
    result = ParsedFeed(
        title=to_text(feed.get("title")) or None,
        site_url=_url(feed.get("link"), url),
        self_url=_self_link(feed),
        language=_language(feed.get("language")),
        updated_at=_date(_own(feed, "updated_parsed"), now),
        ttl=_ttl(feed.get("ttl")),
        warning=raw.get("warning"),
        entry_count=len(entries),
    )
    links = [_link(entry, url) for entry in entries]  # resolved once: it is a third of our own cost
    keys = _entry_keys(entries, links, url)
    seen: set[str] = set()
    for entry, link, (key, rule) in zip(entries, links, keys, strict=True):
        _check(deadline, time_limit)
        if _is_empty(entry, link):
            result.folded.append((key, DROP_EMPTY))
            continue
        if key in seen:
            result.folded.append((key, FOLD_SAME_KEY))
            continue
        seen.add(key)
        result.entries.append(_normalise_entry(entry, link, key, rule, url, result.language, now, known))
    return result


def _is_empty(entry: Mapping[str, Any], link: str | None) -> bool:
    return not (
        link
        or _guid(entry)
        or entry.get("title")
        or _first_html(entry)[0]
        or entry.get("enclosures")
        or _own(entry, "published_parsed")
        or _own(entry, "updated_parsed")
    )


def _self_link(feed: Mapping[str, Any]) -> str | None:
    for link in feed.get("links") or []:
        if link.get("rel") == "self" and link.get("href"):
            return _url(link["href"], None)
    return None


def _language(value: Any) -> str | None:
    text = to_text(_str(value), False)[:35]
    return text if text and re.fullmatch(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*", text) else None


def _ttl(value: Any) -> float | None:
    try:
        minutes = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return minutes * 60 if 0 < minutes < 60 * 24 * 365 else None


def _date(value: time.struct_time | None, now: datetime) -> datetime | None:
    """A parsed date as UTC, or None when absent, implausibly early or more
    than a day in the future (the store then falls back, DESIGN §3)."""
    if not value:
        return None
    try:
        dt = datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (OverflowError, ValueError, OSError, TypeError):
        return None
    if dt < EARLIEST_PLAUSIBLE or dt > now + FUTURE_TOLERANCE:
        return None
    return dt


def _entry_keys(entries: list[Mapping[str, Any]], links: list[str | None], base: str) -> list[tuple[str, str]]:
    """Identity of each entry within the feed: guid, else link, else a hash
    of title + date. A guid that this same document uses for entries with
    different links is not an identity: those entries fall back to their link."""
    guids = [_guid(entry) for entry in entries]
    links_by_guid: dict[str, set[str | None]] = {}
    for guid, link in zip(guids, links, strict=True):
        if guid:
            links_by_guid.setdefault(guid, set()).add(link)
    keys = []
    for entry, guid, link in zip(entries, guids, links, strict=True):
        if guid and len(links_by_guid[guid]) == 1:
            keys.append((_bounded(guid), "guid"))
        elif link:
            keys.append((_bounded(link), "link:untrusted-guid" if guid else "link"))
        else:
            keys.append((_fallback_key(entry), "hash"))
    untrusted = {g for g, links in links_by_guid.items() if len(links) > 1}
    if untrusted:
        log.info(
            "%s: %d guid(s) repeated for different links in one document; using links for those entries",
            base,
            len(untrusted),
        )
    return keys


def _guid(entry: Mapping[str, Any]) -> str | None:
    value = entry.get("id")
    # strip_control: lone surrogates and control characters cannot be stored or published.
    value = strip_control(value).strip() if isinstance(value, str) else ""
    return value or None


def _url(value: Any, base: str | None) -> str | None:
    """An absolute http(s) URL from a feed value, or None."""
    return absolute(strip_control(value), base) if isinstance(value, str) else None


def _link(entry: Mapping[str, Any], base: str) -> str | None:
    return clean_url(_url(entry.get("link"), base))


def _bounded(key: str) -> str:
    return key if len(key) <= MAX_KEY_LENGTH else "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def _fallback_key(entry: Mapping[str, Any]) -> str:
    # Title + the date as written; never the content, whose tokens may rotate.
    parts = [entry.get("title") or "", _own(entry, "published") or _own(entry, "updated") or ""]
    if not any(parts):
        parts.append(_first_html(entry)[0] or "")
    return "hash:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _first_html(entry: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any] | None]:
    for item in entry.get("content") or []:
        if item.get("value"):
            return item["value"], item
    detail = entry.get("summary_detail")
    if detail and detail.get("value"):
        return detail["value"], detail
    return None, None


def _content_hash(entry: Mapping[str, Any], link: str | None) -> str:
    """What an update is: title, link, text, enclosures, authors, tags. Not the
    dates, which some feeds rewrite on every request."""
    h = hashlib.sha256(NORMALISER_VERSION.encode())
    for part in (
        entry.get("title") or "",
        link or "",
        (entry.get("summary_detail") or {}).get("value") or "",
        "\x1e".join(c.get("value") or "" for c in entry.get("content") or []),
        "\x1e".join(f"{e.get('href')}|{e.get('type')}|{e.get('length')}" for e in entry.get("enclosures") or []),
        "\x1e".join(a.get("name") or "" for a in entry.get("authors") or [] if isinstance(a, Mapping)),
        "\x1e".join(t.get("term") or "" for t in entry.get("tags") or [] if isinstance(t, Mapping)),
    ):
        h.update(part.encode("utf-8", "surrogatepass") + b"\x1f")
    return h.hexdigest()[:32]


def _normalise_entry(
    entry: Mapping[str, Any],
    link: str | None,
    key: str,
    rule: str,
    base: str,
    feed_language: str | None,
    now: datetime,
    known: Mapping[str, str],
) -> ParsedEntry:
    content_hash = _content_hash(entry, link)
    record = ParsedEntry(
        entry_key=key,
        key_rule=rule,
        content_hash=content_hash,
        guid=_guid(entry),
        url=link,
        canonical_url=canonical_url(link),
    )
    # Dates are cheap and feed the adaptive interval even for unchanged entries.
    # _own, not entry.get: feedparser's own get() quietly answers
    # updated_parsed with published_parsed (and the reverse) when one is missing.
    record.published_at = _date(_own(entry, "published_parsed") or _own(entry, "created_parsed"), now)
    record.updated_at = _date(_own(entry, "updated_parsed"), now)
    if known.get(key) == content_hash:
        record.unchanged = True  # the store keeps what it has; skip the costly part
        return record
    # Titles are always reduced from HTML, whatever type the feed declares: RSS
    # titles labelled plain text often carry markup, and readers of our RSS
    # output may render a title as HTML.
    record.title = to_text(entry.get("title"))[:MAX_TITLE]
    record.authors = _authors(entry)
    record.summary, record.content = _texts(entry, base)
    record.text = to_text(" ".join(part for part in (record.summary, record.content) if part))[:MAX_TEXT]
    if not record.title:
        record.title = _fallback_title(record.summary or record.content, link)
    record.categories = _categories(entry)
    record.enclosures = _enclosures(entry, base)
    record.image = _image(entry, base) or _first_image(record.content or record.summary)
    record.language = _language(_entry_language(entry)) or feed_language
    return record


_IMG_SRC = re.compile(r'<img\b[^>]*?\bsrc="(https?://[^"]+)"')


def _first_image(html_text: str | None) -> str | None:
    """The first picture in the (already sanitised, so well-formed and free of
    tracking pixels) text, when the feed names no image of its own."""
    if not html_text or "<img" not in html_text:
        return None
    match = _IMG_SRC.search(html_text)
    return html.unescape(match.group(1)) if match else None


def _fallback_title(html_text: str | None, link: str | None, words: int = 12) -> str:
    """Untitled entries (microblog posts, broken items) still need a title in
    every output: the start of their text, else their link."""
    text = to_text(html_text)
    if text:
        parts = text.split()
        return " ".join(parts[:words]) + (" …" if len(parts) > words else "")
    return link or "(untitled)"


def _entry_language(entry: Mapping[str, Any]) -> str | None:
    for detail in [*(entry.get("content") or []), entry.get("summary_detail"), entry.get("title_detail")]:
        if detail and detail.get("language"):
            return _str(detail["language"])
    return _str(entry.get("language"))


def _as_html(detail: Mapping[str, Any]) -> str | None:
    value = detail.get("value")
    if not value:
        return None
    if not isinstance(value, str):
        return None
    if detail.get("type") == "text/plain":
        return "<p>" + html.escape(value).replace("\n\n", "</p><p>") + "</p>"
    return value


def _texts(entry: Mapping[str, Any], base: str) -> tuple[str | None, str | None]:
    """(summary, content), both sanitised HTML with absolute URLs."""
    content = None
    candidates = entry.get("content") or []
    # Prefer HTML over plain text when a feed gives both.
    for item in sorted(candidates, key=lambda c: c.get("type") == "text/plain"):
        content = sanitize_html(_as_html(item), item.get("base") or base)
        if content:
            break
    summary = None
    detail = entry.get("summary_detail")
    if detail:
        summary = sanitize_html(_as_html(detail), detail.get("base") or base)
    if summary and content and summary == content:
        summary = None
    return summary, content


# Both anchored at both ends and run on names whose whitespace to_text has
# collapsed, so every backtracking step costs O(1): linear in the name's length.
_SPLIT_TLD = re.compile(r"([A-Za-z0-9-]+)\s*\((.+?)\)?\s*")
_EMAIL_THEN_NAME = re.compile(r"\s*([^\s()<>@]+@[^\s()<>@]+)\s*\((.+)\)\s*")


def _is_email(text: str, tld_letters: int = 0) -> bool:
    """local@domain.tld, no whitespace, one '@'; with ``tld_letters``, a
    top-level domain of at least that many ASCII letters. String tests, not a
    pattern: "[^@]+@[^@]+\\.[^@]+" backtracks over every dot of the domain,
    which is quadratic on "a@b.b.b…".
    """
    if text.count("@") != 1 or any(c.isspace() for c in text):
        return False
    local, domain = text.split("@")
    if not local:
        return False
    if not tld_letters:
        return "." in domain[1:-1]
    head, dot, tld = domain.rpartition(".")
    return bool(head and dot) and len(tld) >= tld_letters and tld.isascii() and tld.isalpha()


def _authors(entry: Mapping[str, Any]) -> tuple[Author, ...]:
    out: list[Author] = []
    for item in entry.get("authors") or []:
        if not isinstance(item, Mapping):
            continue
        name = to_text(item.get("name")) or None
        email = to_text(item.get("email"), False) or None
        if name and email:
            # feedparser's e-mail pattern allows top-level domains of at most
            # four letters, so "desk@a.example (Rudaw Desk)" comes back as
            # email "desk@a.exam", name "ple (Rudaw Desk". Put it together again.
            split = _SPLIT_TLD.fullmatch(name)
            if split and _is_email(email + split.group(1), tld_letters=5):
                email, name = email + split.group(1), split.group(2).strip()
        if name and not email:
            # "jane@example.com (Jane Doe)" is the RSS <author> form feedparser may leave whole.
            match = _EMAIL_THEN_NAME.fullmatch(name)
            if match:
                email, name = match.group(1), match.group(2).strip()
            elif _is_email(name):
                email, name = name, None
        url = _url(item.get("href"), None)
        author = Author(name=name, email=email, url=url)
        if (name or email) and author not in out:
            out.append(author)
    return tuple(out)


def _categories(entry: Mapping[str, Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for tag in entry.get("tags") or []:
        if not isinstance(tag, Mapping):
            continue
        text = to_text(tag.get("label") or tag.get("term"), True)[:200]
        if text:
            seen.setdefault(text, None)
    return tuple(seen)


def _length(value: Any) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _enclosures(entry: Mapping[str, Any], base: str) -> tuple[Enclosure, ...]:
    out: dict[str, Enclosure] = {}
    for item in entry.get("enclosures") or []:
        url = _url(item.get("href") or item.get("url"), base)
        if url and url not in out:
            out[url] = Enclosure(url, _mime(item.get("type")), _length(item.get("length")))
    # media:content audio and video are enclosures in all but name (podcasts, video feeds).
    for item in entry.get("media_content") or []:
        medium = (item.get("medium") or "").lower()
        mime = _mime(item.get("type"))
        if medium in ("audio", "video") or (mime and mime.split("/")[0] in ("audio", "video")):
            url = _url(item.get("url"), base)
            if url and url not in out:
                out[url] = Enclosure(url, mime, _length(item.get("filesize") or item.get("fileSize")))
    return tuple(out.values())


def _mime(value: Any) -> str | None:
    text = _str(value)
    return text.strip().lower() if text and re.fullmatch(r"\s*[\w.+-]+/[\w.+-]+\s*", text) else None


def _image(entry: Mapping[str, Any], base: str) -> str | None:
    for item in entry.get("media_thumbnail") or []:
        url = _url(item.get("url"), base)
        if url:
            return url
    for item in entry.get("media_content") or []:
        if (item.get("medium") or "").lower() == "image" or (_mime(item.get("type")) or "").startswith("image/"):
            url = _url(item.get("url"), base)
            if url:
                return url
    for item in entry.get("enclosures") or []:
        if (_mime(item.get("type")) or "").startswith("image/"):
            url = _url(item.get("href"), base)
            if url:
                return url
    image = entry.get("image")
    if isinstance(image, Mapping):
        return _url(image.get("href") or image.get("url"), base)
    return None
