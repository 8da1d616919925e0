"""Property-based fuzzing of parsing over mutated documents (Hypothesis;
profiles in conftest.py): byte flips, truncation, inserted entities, markup
and scripts, and encoding changes of the files in ../shared/corpus/realworld
(marked corpus) and of small documents of our own (always). parse_document raises nothing but ParseError,
takes bounded time and memory, and nothing executable survives sanitising
(no script or other active element, no on* attribute, no javascript:, vbscript:
or data: URL in any HTML or URL field)."""

from __future__ import annotations

import codecs
import gzip
import resource
import time
from datetime import UTC, datetime

import html5lib
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aggregator.model import ParsedFeed, ParseError
from aggregator.parse import parse_document
from tests.conftest import CORPUS
from tests.feedgen import Item, atom, jsonfeed, rss, story

NOW = datetime(2026, 6, 1, tzinfo=UTC)
MAX_SIZE = 400_000  # bytes: larger files make an example slower without exercising anything new

FILES = sorted(
    p.name for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "README.md") and p.stat().st_size <= MAX_SIZE
) if CORPUS else []


def _document(name: str) -> bytes:
    body = (CORPUS / name).read_bytes()
    return gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body


HOSTILE = [
    b"&amp;", b"&#0;", b"&#xD800;", b"&#99999999;", b"&bogus;", b"&", b"<", b"]]>", b"<![CDATA[", b"\x00", b"\xff\xfe",
    b"\xef\xbb\xbf", b"<!--", b"-->", b"<?xml version='1.0' encoding='utf-16'?>", b"<!DOCTYPE x [<!ENTITY a 'b'>]>",
    b"<!ENTITY x SYSTEM 'file:///etc/passwd'>", b"&x;",
    b"<script>alert(1)</script>", b"&lt;script&gt;alert(1)&lt;/script&gt;", b"<img src=x onerror=alert(1)>",
    b"&lt;img src=x onerror=alert(1)&gt;", b"&lt;a href='javascript:alert(1)'&gt;x&lt;/a&gt;",
    b"&lt;a href=&quot;jav&amp;#x09;ascript:alert(1)&quot;&gt;x&lt;/a&gt;", b"<![CDATA[<svg onload=alert(1)>]]>",
    b"<![CDATA[<iframe src=javascript:alert(1)></iframe>]]>", b"<link>javascript:alert(1)</link>",
    b"<guid>javascript:alert(1)</guid>", b"<enclosure url='javascript:alert(1)' type='audio/mpeg'/>",
    b"<![CDATA[<object data=x></object><embed src=x><form action=javascript:x><input formaction=javascript:x>]]>",
    b"<![CDATA[<a href=' data:text/html,<script>x</script>'>x</a><math><mi xlink:href=javascript:x>]]>",
    b"<![CDATA[<div style='background:url(javascript:x)'>x</div><base href=javascript:x>]]>",
    b"<author>a@" + b"b." * 2000 + b"b x</author>", b"<pubDate>Seg, 24 Set 2018 19:42:40 -0300</pubDate>",
    b"<title>" + b"&lt;br" * 5000 + b"</title>",
]
ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "latin-1", "windows-1252", "shift_jis", "koi8-r"]


# Documents of our own, for a clone without the corpus: the three formats, with what real feeds carry
# (HTML in summaries, enclosures, authors, categories, odd dates, a BOM and a leading blank line).
_ITEMS = [
    story(1, summary="<p>Text with <a href='/rel'>a link</a> &amp; <img src='x.png'></p>", author="desk@a.example (Desk)",
          categories=["World", "Kurdistan"], enclosure=("http://e.example/1.mp3", "audio/mpeg", 1234)),
    story(2, date="Qua, 13 Dez 2023 10:00:00 -0300", content="<div><script>alert(1)</script><p>Body</p></div>"),
    Item(title=None, summary="<p>Only text</p>"),
    story(3, title="<b>Bold</b> &amp; title", updated="2026-06-01T10:00:00+02:00"),
]
OWN = {
    "rss": rss(_ITEMS).encode(),
    "atom": atom(_ITEMS).encode(),
    "json": jsonfeed(_ITEMS).encode(),
    "bom-rss": b"\xef\xbb\xbf\n" + rss(_ITEMS[:2]).encode(),
    "latin-1": rss(_ITEMS[:2]).replace('encoding="utf-8"', 'encoding="iso-8859-1"').encode("latin-1", "replace"),
}


@st.composite
def mutated_documents(draw: st.DrawFn, sources: st.SearchStrategy[bytes]) -> bytes:
    body = bytearray(draw(sources))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate", "encoding", "declaration"]))
        at = draw(st.integers(0, len(body)))
        if kind == "flip" and body:
            body[min(at, len(body) - 1)] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del body[at:]
        elif kind == "insert":
            body[at:at] = draw(st.sampled_from(HOSTILE))
        elif kind == "delete":
            del body[at : at + draw(st.integers(1, 200))]
        elif kind == "duplicate":
            body[at:at] = body[at : at + draw(st.integers(1, 5000))]
        elif kind == "encoding":
            # the bytes re-encoded, a BOM added or not, the declaration left saying what it said
            codec = draw(st.sampled_from(ENCODINGS))
            text = bytes(body).decode("utf-8", "replace")
            body = bytearray(text.encode(codec, "replace"))
            if draw(st.booleans()) and codec.startswith("utf-16"):
                body[0:0] = codecs.BOM_UTF16_LE if codec.endswith("le") else codecs.BOM_UTF16_BE
        elif kind == "declaration":
            name = draw(st.sampled_from([b"utf-8", b"utf-16", b"iso-8859-1", b"x-unknown", b"", b"ebcdic-cp-us"]))
            body[0:0] = b'<?xml version="1.0" encoding="' + name + b'"?>'
    return bytes(body)


ACTIVE_ELEMENTS = {"script", "iframe", "object", "embed", "applet", "frame", "frameset", "form", "input", "button",
                   "base", "meta", "link", "style", "svg", "math", "template", "textarea", "select"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "poster", "background", "cite", "longdesc", "srcset",
                  "xlink:href", "usemap", "dynsrc", "lowsrc"}
BAD_SCHEMES = ("javascript:", "vbscript:", "data:")


def _scheme_of(value: str) -> str:
    # browsers ignore ASCII whitespace and control characters inside a scheme
    return "".join(c for c in value if c > " ").lower()


def _assert_safe_html(fragment: str | None) -> None:
    if not fragment:
        return
    tree = html5lib.parseFragment(fragment, treebuilder="etree", namespaceHTMLElements=False)
    for element in tree.iter():
        if not isinstance(element.tag, str):
            continue  # a comment
        assert element.tag.lower() not in ACTIVE_ELEMENTS, fragment[:500]
        for name, value in element.attrib.items():
            assert not name.lower().startswith("on"), fragment[:500]
            assert name.lower() != "style", fragment[:500]
            if name.lower() in URL_ATTRIBUTES:
                assert not _scheme_of(value).startswith(BAD_SCHEMES), fragment[:500]
    assert "<script" not in fragment.lower()


def _assert_safe_url(url: str | None) -> None:
    if url is not None:
        assert url.split(":", 1)[0].lower() in ("http", "https"), url


def _assert_nothing_executable(parsed: ParsedFeed) -> None:
    _assert_safe_url(parsed.site_url)
    _assert_safe_url(parsed.self_url)
    for entry in parsed.entries:
        _assert_safe_html(entry.summary)
        _assert_safe_html(entry.content)
        for url in (entry.url, entry.canonical_url, entry.image, *(e.url for e in entry.enclosures),
                    *(a.url for a in entry.authors)):
            _assert_safe_url(url)
        for text in (entry.title, *(a.name for a in entry.authors), *entry.categories):
            assert text is None or "\x00" not in text  # plain text, escaped on output


def _parses_safely(body: bytes) -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    try:
        parsed = parse_document(body, "http://example.com/feed.xml", {"content-type": "application/rss+xml"}, now=NOW)
    except ParseError:
        parsed = None
    seconds = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    # Bounded: feedparser's lenient parser reads tag soup at a few seconds a
    # megabyte; the process's peak memory never grows by more than a multiple
    # of the input (an entity or decompression bomb would).
    assert seconds < 10 + 20 * len(body) / 1_000_000, f"{seconds:.1f}s for {len(body):,} bytes"
    assert grown < 200_000_000 + 100 * len(body), f"peak memory grew {grown:,} bytes for {len(body):,}"
    if parsed is not None:
        _assert_nothing_executable(parsed)


def _corpus_examples(test):  # type: ignore[no-untyped-def]
    """Documents that once failed, when the corpus is there to build them from."""
    if CORPUS is None:
        return test
    for body in (_document("techcrunch.xml").replace(b"<description>", b"<description>" + HOSTILE[20], 1),
                 b"\n\n" + _document("typepad-news.atom"), b"\xef\xbb\xbf\n" + _document("guardian-uk_rss-parser.rss")):
        test = example(body)(test)
    return test


@pytest.mark.corpus
@given(mutated_documents(st.sampled_from(FILES or ["-"]).map(_document)))
@_corpus_examples
def test_mutated_documents_parse_safely(body: bytes) -> None:
    _parses_safely(body)


@given(mutated_documents(st.sampled_from(sorted(OWN.values()))))
@example(OWN["rss"].replace(b"<description>", b"<description>" + HOSTILE[20], 1))
def test_mutated_documents_of_our_own_parse_safely(body: bytes) -> None:
    _parses_safely(body)


@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_a_feed_or_a_parse_error(body: bytes) -> None:
    try:
        parsed = parse_document(body, "http://example.com/feed")
    except ParseError:
        return
    _assert_nothing_executable(parsed)
