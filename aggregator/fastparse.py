"""The fast path of parsing: feedparser's raw entry mappings, read with lxml.

feedparser costs about a millisecond of CPU per entry (a SAX callback per
piece of text, a URL join and a deep copy per element, all in Python), three
quarters of a poll. Neither library that reads feeds faster is a drop-in
(bench/RESULTS.md, "Fast parse path": feedparser-rs leaves ``&amp;`` in
titles and links and misreads Latin-1; fastfeedparser fails on documents
feedparser reads and shapes entries its own way). So this module reproduces,
for well-formed documents, exactly the raw mappings that feedparser's strict
parser builds and ``parse._normalise`` consumes (``title``, ``link``,
``links``, ``id``, ``summary_detail``, ``content``, dates, ``authors``,
``tags``, enclosures, ``media_*``, ``image``, language...): after it, the
code is shared, so records and content hashes are equal by construction.

How: lxml builds the tree in C (no entities resolved, no network, no DTD, no
huge-tree mode), and a walk replays it through a port of the subset of
feedparser's element handlers that news feeds use, with feedparser's own
state (contexts, depth rules for repeated elements, the summary/content
juggling, xml:base and xml:lang scoping) and feedparser's own helpers for
encodings (``convert_to_utf8``), dates (``_parse_date``, with our handler
registered) and URL joins. Whatever it is not sure about raises ``Deferred``
and the document goes to feedparser: not well-formed, a DOCTYPE, an encoding
feedparser could not settle, an unknown root, an element feedparser has a
handler for that is not ported here, markup inside a text element, base64
content, deep nesting. tests/test_fastparse.py holds the two paths equal on
every document we have.

Every step is linear: lxml's parse (``huge_tree=False`` caps text nodes and
depth), one visit per element, tag de-duplication through a set, and the
deadline checked at every entry.
"""

from __future__ import annotations

import contextlib
import functools
import html.entities
import re
import time
import urllib.parse
from datetime import datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from feedparser.datetimes import _parse_date
from feedparser.encodings import convert_to_utf8
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.sanitizer import _HTMLSanitizer
from feedparser.urls import _urljoin, make_safe_absolute_uri
from feedparser.util import FeedParserDict
from lxml import etree


class Deferred(Exception):
    """The fast path is not sure about this document: feedparser reads it."""


class TooSlow(Exception):
    """The document's time limit ran out while the fast path read it."""


# --- e-mail addresses in author names (shared with parse.py's feedparser patch) ---

_EMAIL_LOCAL = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.+")
_EMAIL_DOMAIN = re.compile(
    r"(\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.|([a-zA-Z0-9\-]+\.)+)([a-zA-Z]{2,4}|[0-9]{1,3})(\]?)(\?subject=\S+)?"
)


def sync_author_detail(context: Any, key: str, empty: Any) -> None:
    """feedparser 6.0's _FeedParserMixin._sync_author_detail on a context
    (the feed, entry or source mapping), with its quadratic e-mail search
    replaced by find_email; ``empty`` is the detail mapping to start from.
    Shared by both parse paths, so they fill authors alike."""
    detail = context.get(f"{key}s", [empty])[-1]
    if detail:
        name, email = detail.get("name"), detail.get("email")
        if name and email:
            context[key] = f"{name} ({email})"
        elif name:
            context[key] = name
        elif email:
            context[key] = email
        return
    author, email = context.get(key), None
    if not author:
        return
    email = find_email(author)
    if email:
        author = author.replace(email, "").replace("()", "").replace("<>", "").replace("&lt;&gt;", "").strip()
        if author and author[0] == "(":
            author = author[1:]
        if author and author[-1] == ")":
            author = author[:-1]
        author = author.strip()
    if author or email:
        context.setdefault(f"{key}_detail", detail)
    if author:
        detail["name"] = author
    if email:
        detail["email"] = email


def find_email(text: str) -> str | None:
    """The address feedparser's e-mail pattern finds first in text, or None.
    Linear: each '@' is tried once, the local part before it is scanned back
    to the previous '@' at most, and the domain match is anchored after it
    (its labels end at the next '@' at the latest)."""
    at = text.find("@")
    while at >= 0:
        start = at
        while start > 0 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if start < at:
            domain = _EMAIL_DOMAIN.match(text, at + 1)
            if domain is not None:
                return text[start : domain.end()]
        at = text.find("@", at + 1)
    return None


# --- what feedparser knows -----------------------------------------------------

_NAMESPACES = {uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()}
_USERLAND = "http://backend.userland.com/rss"
_XHTML = "application/xhtml+xml"
_HTML_TYPES = frozenset(("application/xhtml+xml", "text/html"))
# feedparser resolves these against xml:base; "id" is taken as written (parse.py).
_RELATIVE = frozenset(_FeedParserMixin.can_be_relative_uri) - {"id"}
_KEYMAP = FeedParserDict.keymap
_FEEDPARSER_HANDLERS = frozenset(
    name.split("_", 2)[2] for name in dir(_FeedParserMixin) if name.startswith(("_start_", "_end_"))
)
# Keys parse._normalise reads: an element of no known meaning (stored under
# its own name by feedparser) must not land on one of them.
_CONSUMED = frozenset(
    [
        "title",
        "title_detail",
        "link",
        "links",
        "id",
        "summary",
        "summary_detail",
        "content",
        "published_parsed",
        "updated_parsed",
        "created_parsed",
        "published",
        "updated",
        "authors",
        "author",
        "tags",
        "media_content",
        "media_thumbnail",
        "image",
        "language",
        "enclosures",
        "ttl",
    ]
)
_MAX_DEPTH = 100
_MAX_ATTRIBUTES = 100
_C1 = re.compile("[\x80-\x9f]")
_AMP_REFERENCE = re.compile("&([A-Za-z0-9_]+);")
_CLOSE_TAG = re.compile(r"</(\w+)>")
_ENTITY = re.compile(r"&#?\w+;")
_TAG_NAME = re.compile(r"</?(\w+)")
_ENTITY_NAME = re.compile(r"&(\w+);")
_ACCEPTABLE_HTML = frozenset(_HTMLSanitizer.acceptable_elements)
_PARSER_OPTIONS = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
    "strip_cdata": True,
    "recover": False,
}


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBERS = {name: number for number, name in enumerate(_MONTHS, 1)}
_RFC822_STRICT = re.compile(
    r"(?:[A-Z][a-z]{2}, )?(\d{1,2}) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) "
    r"(\d{2}):(\d{2}):(\d{2}) (?:([+-])(\d{2})(\d{2})|GMT|UTC|UT|Z)"
)
_W3DTF_STRICT = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:Z|([+-])(\d{2}):(\d{2}))")


def parse_date(text: str | None) -> time.struct_time | None:
    """feedparser's _parse_date (our handler first: parse.py registers it),
    with its two commonest inputs read here directly: a date handler chain
    costs 35-60 us a call. "Mon, 01 Jun 2026 10:00:00 +0000" is what
    dates.parse_feed_date reads it as, "2026-06-01T10:00:00+02:00" what
    feedparser's W3DTF handler does (both: the instant minus the offset);
    anything else, or a value either would refuse, goes to _parse_date.
    tests/test_fastparse.py compares the two on generated dates."""
    if text and len(text) < 40:
        match = _RFC822_STRICT.fullmatch(text)
        if match is not None:
            day, month, year, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
            offset = (int(zone_hours) * 60 + int(zone_minutes)) * (-1 if sign == "-" else 1) if sign else 0
            if abs(offset) <= 15 * 60:
                with contextlib.suppress(ValueError, OverflowError):
                    moment = datetime(int(year), _MONTH_NUMBERS[month], int(day), int(hour), int(minute), int(second))
                    return (moment - timedelta(minutes=offset)).utctimetuple()
        else:
            match = _W3DTF_STRICT.fullmatch(text)
            if match is not None:
                year, month, day, hour, minute, second, sign, zone_hours, zone_minutes = match.groups()
                offset = (int(zone_hours) * 60 + int(zone_minutes)) * (-1 if sign == "-" else 1) if sign else 0
                with contextlib.suppress(ValueError, OverflowError):
                    moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
                    return (moment - timedelta(minutes=offset)).utctimetuple()
    result: time.struct_time | None = _parse_date(text)
    return result


def _parser() -> etree.XMLParser:
    o = _PARSER_OPTIONS
    return etree.XMLParser(
        resolve_entities=o["resolve_entities"], no_network=o["no_network"], load_dtd=o["load_dtd"],
        dtd_validation=o["dtd_validation"], huge_tree=o["huge_tree"], remove_comments=o["remove_comments"],
        remove_pis=o["remove_pis"], strip_cdata=o["strip_cdata"], recover=o["recover"],
    )  # fmt: skip


def _map_content_type(value: str) -> str:
    value = value.lower()
    if value in ("text", "plain"):
        return "text/plain"
    if value == "html":
        return "text/html"
    if value == "xhtml":
        return _XHTML
    return value


def _looks_like_html(text: str) -> bool:
    """feedparser's guess whether RSS "plain text" is HTML after all."""
    if not (_CLOSE_TAG.search(text) or _ENTITY.search(text)):
        return False
    if any(t.lower() not in _ACCEPTABLE_HTML for t in _TAG_NAME.findall(text)):
        return False
    return not any(e not in html.entities.entitydefs for e in _ENTITY_NAME.findall(text))


def _set(context: dict[str, Any], key: str, value: Any) -> None:
    """context[key] = value as a FeedParserDict stores it (through its aliases)."""
    real = _KEYMAP.get(key, key)
    context[real[0] if isinstance(real, list) else real] = value


# An absolute http(s) URL that urllib's urljoin gives back unchanged (no
# whitespace or control characters, no empty query or fragment, no ";params",
# no extra slashes after "//"): most links in feeds.
_PLAIN_URL = re.compile(
    r"https?://[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[^\s?#;\[\]\\\x00-\x1f\x7f]*)?"
    r"(?:\?[^\s#\x00-\x1f\x7f]+)?(?:#[^\s\x00-\x1f\x7f]+)?"
)


def _urljoin_plain(base: str, url: str) -> str:
    """feedparser's _urljoin(base, url), without urllib for a plain absolute
    URL (31 us a call): urljoin returns such a URL as it is, whatever the
    (parseable) base."""
    if _PLAIN_URL.fullmatch(url) and _parseable(base):
        return url
    joined: str = _urljoin(base, url)
    return joined


@functools.lru_cache(maxsize=64)
def _parseable(base: str) -> bool:
    try:
        urllib.parse.urlparse(base)
    except ValueError:
        return False
    return True


def _fixed_text(output: str) -> str:
    """feedparser's last touches on every text value: text that was UTF-8 read
    as Latin-1 is read again, and C1 controls become their cp1252 characters."""
    if output.isascii():
        return output
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        output = output.encode("iso-8859-1").decode("utf-8")
    # str.translate with a dict looks up every character in Python: test first.
    return output.translate(_cp1252) if _C1.search(output) else output


def read(body: bytes, url: str, headers: dict[str, str], deadline: float | None = None) -> dict[str, Any]:
    """feedparser's result for a prepared document (parse.prepared_xml), as
    {"feed", "entries", "warning_exception", "version"}; raises Deferred when
    feedparser should read it, TooSlow when ``deadline`` passes."""
    result: dict[str, Any] = {"headers": headers}
    data = convert_to_utf8(headers, body, result)
    if not result.get("encoding"):
        raise Deferred("no encoding decodes the document")
    if b"<!DOCTYPE" in data[:4096].upper():
        raise Deferred("a DOCTYPE")
    parser = _parser()
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise Deferred(f"not well-formed ({exc})") from None
    if len(parser.error_log):
        raise Deferred(f"parser warnings ({parser.error_log[0].message})")
    reader = _Reader(url, headers.get("content-language"), deadline)
    try:
        reader.run(root)
    except (Deferred, TooSlow):
        raise
    except Exception as exc:  # a case the port does not foresee: feedparser decides
        raise Deferred(f"the fast reader failed ({type(exc).__name__}: {exc})") from None
    for entry in reader.entries:
        links = entry.get("links")
        if links is not None:
            entry["enclosures"] = [
                {k: v for k, v in link.items() if k != "rel"} for link in links if link["rel"] == "enclosure"
            ]
    return {
        "feed": reader.feeddata,
        "entries": reader.entries,
        "warning_exception": result.get("bozo_exception") if result.get("bozo") else None,
        "version": reader.version,
    }


def _pusher(element: str, expecting_text: int) -> Any:
    def start(self: _Reader, attrs: dict[str, str]) -> None:
        self._push(element, expecting_text)

    return start


def _popper(element: str) -> Any:
    def end(self: _Reader) -> None:
        self._pop(element)

    return end


class _Reader:
    """A port of feedparser 6's _FeedParserMixin for the elements news feeds
    use, fed from an lxml tree. Names and steps follow feedparser's, so the
    two can be read side by side."""

    def __init__(self, baseuri: str, baselang: str | None, deadline: float | None):
        self.deadline = deadline
        self.feeddata: dict[str, Any] = {}
        self.entries: list[dict[str, Any]] = []
        self.entry_depths: list[dict[str, int]] = []
        self.tag_sets: dict[int, dict[tuple[Any, Any, Any], int]] = {}
        self.version = ""
        self.infeed = self.inentry = self.incontent = self.intextinput = self.inimage = 0
        self.inauthor = self.incontributor = self.inpublisher = self.insource = 0
        self.sourcedata: dict[str, Any] = {}
        self.contentparams: dict[str, Any] = {}
        self.summary_key: str | None = None
        self.elementstack: list[list[Any]] = []
        self.basestack: list[str] = []
        self.langstack: list[str | None] = []
        self.title_depth = -1
        self.depth = 0
        self.has_content = 0
        self.guidislink = 0
        self.baseuri = make_safe_absolute_uri("", baseuri) or make_safe_absolute_uri(baseuri) or ""
        self.lang = baselang
        if self.lang:
            self.feeddata["language"] = self.lang.replace("_", "-")
        self.names: dict[Any, tuple[str, str, str]] = {}
        self.joins: dict[tuple[str, str], str] = {}
        self.namespacemap: dict[str | None, str] = {}

    # --- the walk ---

    def run(self, root: Any) -> None:
        nsmap = root.nsmap
        versions = []
        for prefix, uri in nsmap.items():
            lower = uri.lower()
            if (prefix, lower) == (None, "http://my.netscape.com/rdf/simple/0.9/"):
                versions.append("rss090")
            elif lower == "http://purl.org/rss/1.0/":
                versions.append("rss10")
            elif lower == "http://www.w3.org/2005/atom":
                versions.append("atom10")
            if "backend.userland.com/rss" in lower:
                lower = _USERLAND
            if lower in _NAMESPACES:
                self.namespacemap[prefix] = _NAMESPACES[lower]
            if lower == "http://www.w3.org/1999/xlink":
                raise Deferred("the xlink namespace")
        name = self._name(root)[0]
        if name not in ("rss", "feed", "rdf:rdf"):
            raise Deferred(f"an unknown root element <{name}>")
        # feedparser takes the first of these it sees; <rss> then makes any of them RSS.
        if len(set(versions)) > 1 and name != "rss":
            raise Deferred("namespaces of two feed formats on the root")
        self.version = versions[0] if versions else ""
        self._element(root, 1)
        if not self.version:
            raise Deferred("no feed version")

    def _name(self, el: Any) -> tuple[str, str, str]:
        """(feedparser's tag name, its prefix part, the handler suffix)."""
        tag = el.tag
        known = self.names.get(tag)
        if known is not None:
            return known
        if not isinstance(tag, str):
            raise Deferred("an entity reference or other non-element node")
        cacheable = True
        if tag[0] == "{":
            namespace, local = tag[1:].split("}", 1)
            lower = namespace.lower()
            if "backend.userland.com/rss" in lower:
                lower = _USERLAND
            prefix = _NAMESPACES.get(lower)
            if prefix is None:
                prefix = el.prefix  # feedparser keeps the document's prefix for a namespace it does not know
                cacheable = False
        else:
            local, prefix = tag, ""
        local = local.lower()
        name = f"{prefix.lower()}:{local}" if prefix else local
        if ":" in name:
            given, suffix = name.split(":", 1)
        else:
            given, suffix = "", name
        mapped = self.namespacemap.get(given, given)
        result = (name, mapped, suffix)
        if cacheable:
            self.names[tag] = result
        return result

    def _attrs(self, el: Any) -> dict[str, str]:
        attrs: dict[str, str] = {}
        qualified: list[tuple[str, str]] = []
        for key, value in el.attrib.items():
            if key[0] == "{":
                namespace, local = key[1:].split("}", 1)
                prefix = _NAMESPACES.get(namespace.lower(), "")
                attrs[(f"{prefix}:{local}" if prefix else local).lower()] = value
                given = [p for p, uri in el.nsmap.items() if uri == namespace]
                if namespace == "http://www.w3.org/XML/1998/namespace":
                    given = ["xml"]
                if len(given) != 1 or given[0] is None:
                    raise Deferred("an attribute in an ambiguous namespace")
                qualified.append((f"{given[0]}:{local}".lower(), value))
            else:
                attrs[key.lower()] = value
        attrs.update(qualified)
        for key in ("rel", "type"):
            if key in attrs:
                attrs[key] = attrs[key].lower()
        return attrs

    def _element(self, el: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise Deferred("nesting deeper than the fast path reads")
        name, prefix, suffix = self._name(el)
        count = len(el.attrib)
        if count > _MAX_ATTRIBUTES:
            # lxml looks every attribute's value up by name: quadratic in their number.
            raise Deferred(f"an element with {count} attributes")
        attrs = self._attrs(el) if count else {}
        serialised = self._start(name, prefix, suffix, attrs)
        text = el.text
        if text:
            self._data(text)
        for child in el:
            self._element(child, depth + 1)
            tail = child.tail
            if tail:
                self._data(tail)
        self._end(name, prefix, suffix, serialised)

    def _data(self, text: str) -> None:
        if not self.elementstack:
            return
        if self.contentparams.get("type") == _XHTML:
            text = escape(text)
        self.elementstack[-1][2].append(text)

    def _join(self, base: str, relative: str) -> str:
        key = (base, relative)
        joined = self.joins.get(key)
        if joined is None:
            joined = self.joins[key] = (
                (make_safe_absolute_uri(base, relative) or base) if base else _urljoin(base, relative)
            )
        return joined

    def _start(self, tag: str, prefix: str, suffix: str, attrs: dict[str, str]) -> bool:
        """feedparser's unknown_starttag; True when the element was written
        into xhtml content rather than handled."""
        self.depth += 1
        base = attrs.get("xml:base", attrs.get("base")) if attrs else None
        if base or self.depth == 1:
            # Without xml:base feedparser joins the base with itself at every
            # element: the same value again once the root has done it.
            self.baseuri = self._join(self.baseuri, base or self.baseuri)
        lang = attrs.get("xml:lang", attrs.get("lang")) if attrs else None
        if lang == "":
            lang = None
        elif lang is None:
            lang = self.lang
        if lang and tag in ("feed", "rss"):
            self.feeddata["language"] = lang.replace("_", "-")
        self.lang = lang
        self.basestack.append(self.baseuri)
        self.langstack.append(lang)
        if self.incontent:
            kind = self.contentparams.get("type", "xml")
            if kind != _XHTML:
                raise Deferred(f"markup inside a text element of type {kind!r}")
            local = tag.split(":", 1)[1] if ":" in tag else tag
            if local in ("svg", "math"):
                raise Deferred("svg or math in xhtml content")
            if (f"{prefix}_{suffix}" if prefix else suffix) in _FEEDPARSER_HANDLERS:
                raise Deferred(f"<{tag}> inside xhtml content")
            attributes = "".join(f' {k}="{escape(v, {chr(34): "&quot;"})}"' for k, v in attrs.items())
            if self.elementstack:
                self.elementstack[-1][2].append(f"<{local}{attributes}>")
            return True
        if not prefix and tag not in ("title", "link", "description", "name"):
            self.intextinput = 0
        if not prefix and tag not in ("title", "link", "description", "url", "href", "width", "height"):
            self.inimage = 0
        key = f"{prefix}_{suffix}" if prefix else suffix
        handler = _START.get(key)
        if handler is not None:
            handler(self, attrs)
        elif key in _FEEDPARSER_HANDLERS and key not in _END and key not in _HARMLESS_ENDS:
            raise Deferred(f"<{tag}>, which feedparser handles and the fast path does not")
        else:
            stored = _KEYMAP.get(key, key)
            if key != "ttl" and (key in _CONSUMED or (stored[0] if isinstance(stored, list) else stored) in _CONSUMED):
                raise Deferred(f"<{tag}> would be stored as a field we read")
            if attrs:
                _set(self._context(), key, attrs)
            else:
                self._push(key, 1)
        return False

    def _end(self, tag: str, prefix: str, suffix: str, serialised: bool) -> None:
        key = f"{prefix}_{suffix}" if prefix else suffix
        if not serialised:
            handler = _END.get(key)
            if handler is not None:
                handler(self)
            else:
                self._pop(key)
        if self.incontent and self.contentparams.get("type") == _XHTML:
            local = tag.split(":")[-1]
            if self.elementstack:
                self.elementstack[-1][2].append(f"</{local}>")
        if self.basestack:
            self.basestack.pop()
            if self.basestack and self.basestack[-1]:
                self.baseuri = self.basestack[-1]
        if self.langstack:
            self.langstack.pop()
            if self.langstack:
                self.lang = self.langstack[-1]
        self.depth -= 1

    # --- feedparser's stack ---

    def _push(self, element: str, expecting_text: Any) -> None:
        self.elementstack.append([element, expecting_text, []])

    def _pop(self, element: str, strip_whitespace: bool = True) -> str | None:
        if not self.elementstack or self.elementstack[-1][0] != element:
            return None
        element, expecting_text, pieces = self.elementstack.pop()
        if self.version == "atom10" and self.contentparams.get("type", "text") == _XHTML:
            while pieces and len(pieces) > 1 and not pieces[-1].strip():
                del pieces[-1]
            while pieces and len(pieces) > 1 and not pieces[0].strip():
                del pieces[0]
            if pieces and (pieces[0] == "<div>" or pieces[0].startswith("<div ")) and pieces[-1] == "</div>":
                depth = 0
                for piece in pieces[:-1]:
                    if piece.startswith("</"):
                        depth -= 1
                        if depth == 0:
                            break
                    elif piece.startswith("<") and not piece.endswith("/>"):
                        depth += 1
                else:
                    pieces = pieces[1:-1]
        output = "".join(pieces)
        if strip_whitespace:
            output = output.strip()
        if not expecting_text:
            return output
        if element in _RELATIVE and output:
            output = _urljoin_plain(self.baseuri or "", output)
        guess = not self.version.startswith("atom") and self.contentparams.get("type") == "text/plain"
        if guess and _looks_like_html(output):
            self.contentparams["type"] = "text/html"
        self.contentparams.pop("mode", None)
        self.contentparams.pop("base64", None)
        output = _fixed_text(output)
        if element in ("category", "tags", "itunes_keywords"):
            return output
        if element == "title" and -1 < self.title_depth <= self.depth:
            return output
        if self.inentry and not self.insource:
            entry = self.entries[-1]
            if element == "content":
                entry.setdefault("content", []).append({**self.contentparams, "value": output})
            elif element == "link":
                if not self.inimage:
                    output = _AMP_REFERENCE.sub(r"&\g<1>", output.replace("&amp;", "&"))
                    entry["link"] = output
                    if output:
                        entry["links"][-1]["href"] = output
            else:
                if element == "description":
                    element = "summary"
                depths = self.entry_depths[-1]
                old = depths.get(element)
                if old is None or self.depth <= old:
                    depths[element] = self.depth
                    _set(entry, element, output)
                if self.incontent:
                    _set(entry, element + "_detail", {**self.contentparams, "value": output})
        elif self.infeed or self.insource:
            context = self._context()
            if element == "description":
                element = "subtitle"
            _set(context, element, output)
            if element == "link":
                output = _AMP_REFERENCE.sub(r"&\g<1>", output)
                context[element] = output
                context["links"][-1]["href"] = output
            elif self.incontent:
                _set(context, element + "_detail", {**self.contentparams, "value": output})
        return output

    def _push_content(self, tag: str, attrs: dict[str, str], default_type: str, expecting_text: Any) -> None:
        self.incontent += 1
        if self.lang:
            self.lang = self.lang.replace("_", "-")
        kind = _map_content_type(attrs.get("type", default_type))
        self.contentparams = {"type": kind, "language": self.lang, "base": self.baseuri}
        if attrs.get("mode", "") == "base64" or not (kind.startswith("text/") or kind.endswith(("+xml", "/xml"))):
            raise Deferred(f"base64 content (type {kind!r})")
        self._push(tag, expecting_text)

    def _pop_content(self, tag: str) -> str | None:
        value = self._pop(tag)
        self.incontent -= 1
        self.contentparams.clear()
        return value

    def _context(self) -> dict[str, Any]:
        if self.insource:
            return self.sourcedata
        if self.inimage and "image" in self.feeddata:
            image: dict[str, Any] = self.feeddata["image"]
            return image
        if self.intextinput:
            textinput: dict[str, Any] = self.feeddata["textinput"]
            return textinput
        if self.inentry:
            return self.entries[-1]
        return self.feeddata

    def _save(self, key: str, value: Any, overwrite: bool = False) -> None:
        context = self._context()
        if overwrite:
            context[key] = value
        else:
            context.setdefault(key, value)

    def _save_author(self, key: str, value: Any, prefix: str = "author") -> None:
        context = self._context()
        context.setdefault(prefix + "_detail", {})[key] = value
        self._sync_author_detail()
        context.setdefault("authors", [{}])[-1][key] = value

    def _save_contributor(self, key: str, value: Any) -> None:
        self._context().setdefault("contributors", [{}])[-1][key] = value

    def _sync_author_detail(self, key: str = "author") -> None:
        """parse._sync_author_detail (feedparser's, with a linear e-mail search)."""
        sync_author_detail(self._context(), key, {})

    def _add_tag(self, term: Any, scheme: Any, label: Any) -> None:
        context = self._context()
        tags = context.setdefault("tags", [])
        if not term and not scheme and not label:
            return
        counts = self.tag_sets.setdefault(id(tags), {})
        identity = (term, scheme, label)
        if identity not in counts:
            counts[identity] = 1
            tags.append({"term": term, "scheme": scheme, "label": label})

    def _retag_last(self, tags: list[dict[str, Any]], term: str) -> None:
        last = tags[-1]
        counts = self.tag_sets.setdefault(id(tags), {})
        old = (last["term"], last["scheme"], last["label"])
        if counts.get(old, 0) > 1:
            counts[old] -= 1
        else:
            counts.pop(old, None)
        last["term"] = term
        new = (term, last["scheme"], last["label"])
        counts[new] = counts.get(new, 0) + 1

    @staticmethod
    def _enforce_href(attrs: dict[str, str]) -> dict[str, str]:
        href = attrs.get("url", attrs.get("uri", attrs.get("href")))
        if href:
            attrs.pop("url", None)
            attrs.pop("uri", None)
            attrs["href"] = href
        return attrs

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TooSlow

    # --- the handlers (feedparser's namespaces/_base.py, dc.py, itunes.py, mediarss.py) ---

    def _start_rss(self, attrs: dict[str, str]) -> None:
        versions = {"0.91": "rss091u", "0.92": "rss092", "0.93": "rss093", "0.94": "rss094"}
        if not self.version or not self.version.startswith("rss"):
            given = attrs.get("version", "")
            version = versions.get(given)
            self.version = version or ("rss20" if given.startswith("2.") else "rss")

    def _start_channel(self, attrs: dict[str, str]) -> None:
        self.infeed = 1
        self._cdf_common(attrs)

    def _cdf_common(self, attrs: dict[str, str]) -> None:
        if "lastmod" in attrs or "href" in attrs:
            raise Deferred("CDF attributes")

    def _start_feed(self, attrs: dict[str, str]) -> None:
        self.infeed = 1
        if not self.version:
            self.version = {"0.1": "atom01", "0.2": "atom02", "0.3": "atom03"}.get(attrs.get("version", ""), "atom")

    def _end_channel(self) -> None:
        self.infeed = 0

    _end_feed = _end_channel

    def _start_image(self, attrs: dict[str, str]) -> None:
        context = self._context()
        if not self.inentry:
            context.setdefault("image", {})
        self.inimage = 1
        self.title_depth = -1
        self._push("image", 0)

    def _end_image(self) -> None:
        self._pop("image")
        self.inimage = 0

    def _start_textinput(self, attrs: dict[str, str]) -> None:
        self._context().setdefault("textinput", {})
        self.intextinput = 1
        self.title_depth = -1
        self._push("textinput", 0)

    def _end_textinput(self) -> None:
        self._pop("textinput")
        self.intextinput = 0

    def _start_author(self, attrs: dict[str, str]) -> None:
        self.inauthor = 1
        self._push("author", 1)
        self._context().setdefault("authors", []).append({})

    def _end_author(self) -> None:
        self._pop("author")
        self.inauthor = 0
        self._sync_author_detail()

    def _start_contributor(self, attrs: dict[str, str]) -> None:
        self.incontributor = 1
        self._context().setdefault("contributors", []).append({})
        self._push("contributor", 0)

    def _end_contributor(self) -> None:
        self._pop("contributor")
        self.incontributor = 0

    def _start_dc_contributor(self, attrs: dict[str, str]) -> None:
        self.incontributor = 1
        self._context().setdefault("contributors", []).append({})
        self._push("name", 0)

    def _end_dc_contributor(self) -> None:
        self._end_name()
        self.incontributor = 0

    def _start_name(self, attrs: dict[str, str]) -> None:
        self._push("name", 0)

    def _end_name(self) -> None:
        value = self._pop("name")
        if self.inpublisher:
            self._save_author("name", value, "publisher")
        elif self.inauthor:
            self._save_author("name", value)
        elif self.incontributor:
            self._save_contributor("name", value)
        elif self.intextinput:
            self._context()["name"] = value

    def _start_email(self, attrs: dict[str, str]) -> None:
        self._push("email", 0)

    def _end_email(self) -> None:
        value = self._pop("email")
        if self.inpublisher:
            self._save_author("email", value, "publisher")
        elif self.inauthor:
            self._save_author("email", value)
        elif self.incontributor:
            self._save_contributor("email", value)

    def _start_url(self, attrs: dict[str, str]) -> None:
        self._push("href", 1)

    def _end_url(self) -> None:
        value = self._pop("href")
        if self.inauthor:
            self._save_author("href", value)
        elif self.incontributor:
            self._save_contributor("href", value)

    def _start_webmaster(self, attrs: dict[str, str]) -> None:
        self._push("publisher", 1)

    def _end_webmaster(self) -> None:
        self._pop("publisher")
        self._sync_author_detail("publisher")

    def _start_itunes_owner(self, attrs: dict[str, str]) -> None:
        self.inpublisher = 1
        self._push("publisher", 0)

    def _end_itunes_owner(self) -> None:
        self._pop("publisher")
        self.inpublisher = 0
        self._sync_author_detail("publisher")

    def _start_subtitle(self, attrs: dict[str, str]) -> None:
        self._push_content("subtitle", attrs, "text/plain", 1)

    def _end_subtitle(self) -> None:
        self._pop_content("subtitle")

    def _start_rights(self, attrs: dict[str, str]) -> None:
        self._push_content("rights", attrs, "text/plain", 1)

    def _end_rights(self) -> None:
        self._pop_content("rights")

    def _start_info(self, attrs: dict[str, str]) -> None:
        self._push_content("info", attrs, "text/plain", 1)

    def _end_info(self) -> None:
        self._pop_content("info")

    def _start_item(self, attrs: dict[str, str]) -> None:
        self._check_deadline()
        self.entries.append({})
        self.entry_depths.append({})
        self._push("item", 0)
        self.inentry = 1
        self.guidislink = 0
        self.title_depth = -1
        about = attrs.get(self._standard("rdf:about"))
        if about:
            self._context()["id"] = about
        self._cdf_common(attrs)

    def _standard(self, name: str) -> str:
        prefix, suffix = name.split(":", 1)
        return self.namespacemap.get(prefix, prefix) + ":" + suffix

    def _end_item(self) -> None:
        self._pop("item")
        self.inentry = 0
        self.has_content = 0

    def _start_language(self, attrs: dict[str, str]) -> None:
        self._push("language", 1)

    def _end_language(self) -> None:
        self.lang = self._pop("language")

    def _start_published(self, attrs: dict[str, str]) -> None:
        self._push("published", 1)

    def _end_published(self) -> None:
        self._save("published_parsed", parse_date(self._pop("published")), overwrite=True)

    def _start_updated(self, attrs: dict[str, str]) -> None:
        self._push("updated", 1)

    def _end_updated(self) -> None:
        self._save("updated_parsed", parse_date(self._pop("updated")), overwrite=True)

    def _start_created(self, attrs: dict[str, str]) -> None:
        self._push("created", 1)

    def _end_created(self) -> None:
        self._save("created_parsed", parse_date(self._pop("created")), overwrite=True)

    def _start_expirationdate(self, attrs: dict[str, str]) -> None:
        self._push("expired", 1)

    def _end_expirationdate(self) -> None:
        self._pop("expired")  # expired_parsed is not read

    def _start_category(self, attrs: dict[str, str]) -> None:
        self._add_tag(attrs.get("term"), attrs.get("scheme", attrs.get("domain")), attrs.get("label"))
        self._push("category", 1)

    def _end_category(self) -> None:
        value = self._pop("category")
        if not value:
            return
        tags = self._context()["tags"]
        if value and len(tags) and not tags[-1]["term"]:
            self._retag_last(tags, value)
        else:
            self._add_tag(value, None, None)

    def _start_media_category(self, attrs: dict[str, str]) -> None:
        attrs.setdefault("scheme", "http://search.yahoo.com/mrss/category_schema")
        self._start_category(attrs)

    def _start_itunes_category(self, attrs: dict[str, str]) -> None:
        self._add_tag(attrs.get("text"), "http://www.itunes.com/", None)
        self._push("category", 1)

    def _start_tags(self, attrs: dict[str, str]) -> None:
        self._push("tags", 1)

    def _end_tags(self) -> None:
        value = self._pop("tags")
        if value is None:
            raise Deferred("<tags> out of place")
        for term in value.split(","):
            self._add_tag(term.strip(), None, None)

    def _keywords_list(self, element: str, scheme: str | None) -> None:
        value = self._pop(element)
        if value is None:
            raise Deferred(f"<{element}> with attributes")
        for term in value.split(","):
            if term.strip():
                self._add_tag(term.strip(), scheme, None)

    def _end_itunes_keywords(self) -> None:
        self._keywords_list("itunes_keywords", "http://www.itunes.com/")

    def _end_media_keywords(self) -> None:
        self._keywords_list("media_keywords", None)

    def _start_cloud(self, attrs: dict[str, str]) -> None:
        self._context()["cloud"] = dict(attrs)

    def _start_link(self, attrs: dict[str, str]) -> None:
        attrs.setdefault("rel", "alternate")
        attrs.setdefault("type", "application/atom+xml" if attrs["rel"] == "self" else "text/html")
        context = self._context()
        attrs = self._enforce_href(attrs)
        if "href" in attrs:
            attrs["href"] = _urljoin_plain(self.baseuri or "", attrs["href"])
        expecting_text = self.infeed or self.inentry or self.insource
        links = context.setdefault("links", [])
        if not (self.inentry and self.inimage):
            links.append(dict(attrs))
        if "href" in attrs:
            if attrs.get("rel") == "alternate" and _map_content_type(attrs.get("type") or "") in _HTML_TYPES:
                context["link"] = attrs["href"]
        else:
            self._push("link", expecting_text)

    def _end_link(self) -> None:
        self._pop("link")

    def _start_guid(self, attrs: dict[str, str]) -> None:
        self.guidislink = attrs.get("ispermalink", "true") == "true"
        self._push("id", 1)

    def _end_guid(self) -> None:
        value = self._pop("id")
        self._save("guidislink", self.guidislink and "link" not in self._context())
        if self.guidislink:
            self._save("link", value)

    def _start_title(self, attrs: dict[str, str]) -> None:
        self._push_content("title", attrs, "text/plain", self.infeed or self.inentry or self.insource)

    def _end_title(self) -> None:
        value = self._pop_content("title")
        if not value:
            return
        self.title_depth = self.depth

    def _end_media_title(self) -> None:
        title_depth = self.title_depth
        self._end_title()
        self.title_depth = title_depth

    def _start_description(self, attrs: dict[str, str]) -> None:
        context = self._context()
        if "summary" in context and not self.has_content:
            self.summary_key = "content"
            self._start_content(attrs)
        else:
            self._push_content("description", attrs, "text/html", self.infeed or self.inentry or self.insource)

    def _start_abstract(self, attrs: dict[str, str]) -> None:
        self._push_content("description", attrs, "text/plain", self.infeed or self.inentry or self.insource)

    def _end_description(self) -> None:
        if self.summary_key == "content":
            self._end_content()
        else:
            self._pop_content("description")
        self.summary_key = None

    def _start_generator(self, attrs: dict[str, str]) -> None:
        self._push("generator", 1)  # generator_detail is not read

    def _start_summary(self, attrs: dict[str, str]) -> None:
        context = self._context()
        if "summary" in context and not self.has_content:
            self.summary_key = "content"
            self._start_content(attrs)
        else:
            self.summary_key = "summary"
            self._push_content("summary", attrs, "text/plain", 1)

    def _end_summary(self) -> None:
        if self.summary_key == "content":
            self._end_content()
        else:
            self._pop_content(self.summary_key or "summary")
        self.summary_key = None

    def _start_enclosure(self, attrs: dict[str, str]) -> None:
        attrs = self._enforce_href(attrs)
        context = self._context()
        attrs["rel"] = "enclosure"
        context.setdefault("links", []).append(dict(attrs))

    def _start_source(self, attrs: dict[str, str]) -> None:
        if "url" in attrs:
            self.sourcedata["href"] = attrs["url"]
        self._push("source", 1)
        self.insource = 1
        self.title_depth = -1

    def _end_source(self) -> None:
        self.insource = 0
        value = self._pop("source")
        if value:
            self.sourcedata["title"] = value
        self._context()["source"] = dict(self.sourcedata)
        self.sourcedata = {}

    def _start_content(self, attrs: dict[str, str]) -> None:
        self.has_content = 1
        self._push_content("content", attrs, "text/plain", 1)
        src = attrs.get("src")
        if src:
            self.contentparams["src"] = src
        self._push("content", 1)

    def _start_body(self, attrs: dict[str, str]) -> None:
        self._push_content("content", attrs, _XHTML, 1)

    def _start_content_encoded(self, attrs: dict[str, str]) -> None:
        self.has_content = 1
        self._push_content("content", attrs, "text/html", 1)

    def _end_content(self) -> None:
        kind = self.contentparams.get("type")
        if kind is None:
            raise Deferred("content out of place")
        copy_to_summary = _map_content_type(kind) in ("text/plain", "text/html", _XHTML)
        value = self._pop_content("content")
        if copy_to_summary:
            self._save("summary", value)

    def _start_newlocation(self, attrs: dict[str, str]) -> None:
        self._push("newlocation", 1)  # newlocation is not read

    def _start_media_content(self, attrs: dict[str, str]) -> None:
        self._context().setdefault("media_content", []).append(attrs)

    def _start_media_thumbnail(self, attrs: dict[str, str]) -> None:
        context = self._context()
        thumbnails = context.setdefault("media_thumbnail", [])
        self._push("url", 1)
        thumbnails.append(attrs)

    def _end_media_thumbnail(self) -> None:
        url = self._pop("url")
        context = self._context()
        if url is not None and url.strip() and "url" not in context["media_thumbnail"][-1]:
            context["media_thumbnail"][-1]["url"] = url

    def _start_media_group(self, attrs: dict[str, str]) -> None:
        pass

    def _start_itunes_image(self, attrs: dict[str, str]) -> None:
        self._push("itunes_image", 0)
        if attrs.get("href"):
            self._context()["image"] = {"href": attrs.get("href")}
        elif attrs.get("url"):
            self._context()["image"] = {"href": attrs.get("url")}

    # Elements whose only effect on what we read is the text they hold.
    _start_width = _pusher("width", 0)
    _end_width = _popper("width")
    _start_height = _pusher("height", 0)
    _end_height = _popper("height")
    _start_media_credit = _pusher("credit", 1)
    _end_media_credit = _popper("credit")
    _start_media_rating = _pusher("rating", 1)
    _end_media_rating = _popper("rating")
    _start_media_restriction = _pusher("restriction", 1)
    _end_media_restriction = _popper("restriction")
    _start_media_license = _pusher("license", 1)
    _end_media_license = _popper("license")
    # georss: "where" is not read.
    _start_georss_point = _start_georss_line = _start_georss_polygon = _start_georss_box = _pusher("geometry", 0)
    _end_georss_point = _end_georss_line = _end_georss_polygon = _end_georss_box = _popper("geometry")
    _end_abstract = _end_description
    _end_media_category = _end_itunes_category = _end_category
    _end_body = _end_content_encoded = _end_content
    _start_media_title = _start_title
    _start_media_player = _pusher("media_player", 0)
    _end_media_player = _popper("media_player")
    _end_generator = _popper("generator")
    _end_newlocation = _popper("newlocation")


# Element names feedparser handles like another one.
_ALIASES = {
    "managingeditor": "author", "dc_author": "author", "dc_creator": "author", "itunes_author": "author",
    "itunes_name": "name", "itunes_email": "email", "homepage": "url", "uri": "url", "dc_publisher": "webmaster",
    "tagline": "subtitle", "itunes_subtitle": "subtitle", "copyright": "rights", "dc_rights": "rights",
    "feedburner_browserfriendly": "info", "entry": "item", "dc_language": "language",
    "issued": "published", "pubdate": "published", "dcterms_issued": "published",
    "modified": "updated", "lastbuilddate": "updated", "dc_date": "updated", "dcterms_modified": "updated",
    "dcterms_created": "created", "keywords": "category", "dc_subject": "category", "id": "guid",
    "dc_title": "title", "dc_description": "description", "media_description": "description",
    "itunes_summary": "summary", "xhtml_body": "body", "fullitem": "content_encoded", "itunes_link": "itunes_image",
}  # fmt: skip
_START: dict[str, Any] = {name[7:]: f for name, f in vars(_Reader).items() if name.startswith("_start_")}
_END: dict[str, Any] = {name[5:]: f for name, f in vars(_Reader).items() if name.startswith("_end_")}
for _alias, _target in _ALIASES.items():
    if _target in _START:
        _START[_alias] = _START[_target]
    if _target in _END:
        _END[_alias] = _END[_target]
# feedparser handlers that need no port: what they write is never read, and
# they push nothing (so the text around them goes where it would anyway).
_HARMLESS_ENDS = frozenset(("itunes_block", "itunes_explicit"))
