"""Property-based fuzzing of the renderers (Hypothesis; profiles in
conftest.py): any article a store can hold (control characters, lone
surrogates, huge fields, odd URLs, empty and missing fields, stories with
many related outlets), capped by publish.common.fit() as the publisher does,
renders to Atom and RSS that a strict XML parser and feedparser read without
error (no bozo) and to JSON that loads; every story is one entry, and its
output id is the same in every format and every render."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime

import feedparser
from hypothesis import example, given
from hypothesis import strategies as st
from lxml import etree

from aggregator.model import AlsoReported, Article, Author, Enclosure, Source, Story
from aggregator.publish.atom import render_atom
from aggregator.publish.common import FeedMeta, fit
from aggregator.publish.jsonfeed import render_json
from aggregator.publish.rss import render_rss

ATOM = "{http://www.w3.org/2005/Atom}"
META = FeedMeta(title="Latest", subtitle="The newest stories", id="tag:news.example,2026:latest",
                base_url="http://127.0.0.1:8080/", path="latest")

ODD = [
    "", " ", "\x00", "\x0b", "\x1b[31m", "\x7f", "\x85", "\x9f", "\ud800", "\udfff", "a\udc80b", "\ufffe", "\uffff",
    "\u2028", "\u202e", "\ufeff", "]]>", "<![CDATA[", "&", "&amp;", "&#0;", "&#xD800;", "<", "<script>alert(1)</script>",
    '"', "'", "\t\n\r", "\r", "é", "\U0001f600", "<p>unclosed <b>bold", "<a href='/relative'>x</a>",
]  # fmt: skip
# Over every cap of publish.common (MAX_BODY is 100,000 characters): cut, then cleaned again.
HUGE = ["x" * 120_000, "<p>" * 40_000, "&lt;" * 30_000, "a\ud800" * 60_000, "<b>é</b>" * 15_000]
# Lone surrogates reach a str from a decoder's "surrogateescape" or a JSON "\udXXX"; Hypothesis leaves them out unless asked.
ALL_CHARACTERS = st.characters(exclude_categories=())
TEXT = st.one_of(st.text(ALL_CHARACTERS, max_size=60), st.sampled_from(ODD), st.text(max_size=20))


def sometimes_huge(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Mostly the strategy's values; one time in forty a field far over its cap
    (feedparser reads a document full of escaped markup at ~1 s a megabyte)."""
    return st.integers(0, 39).flatmap(lambda n: st.sampled_from(HUGE) if n == 0 else strategy)


OPTIONAL_TEXT = st.one_of(st.none(), TEXT)
URLS = st.one_of(
    st.none(),
    st.sampled_from([
        "", "http://a.example/x?a=1&b=2#f", "https://a.example/", "http://[::1]/", "https://例え.jp/パス?q=é",
        "http://a.example/\x00x", "javascript:alert(1)", "http://a.example/" + "x" * 5000, "http://a.example/ space",
        "http://a.example/\"quote'<>", "//a.example/x", "relative/path", "http://a.example/\ud800", "mailto:a@b.example",
        "tag:a.example,2026:x", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "http://a.example/\r\nX: y",
    ]),
    st.text(ALL_CHARACTERS, max_size=40).map(lambda s: "http://a.example/" + s),
)  # fmt: skip
IDS = st.one_of(
    st.sampled_from(["http://a.example/1", "https://a.example/story?id=2&x=y", "tag:news.example,2026:abc",
                     "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "tag:aggregator.invalid,2026:f/abc/def"]),
    st.text(ALL_CHARACTERS, min_size=1, max_size=40),
    st.sampled_from([s for s in ODD if s]),
)
# What a store can hold: dates from parsing are 1971 to a day ahead, UTC (parse._date); first seen is a clock time.
DATES = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
LENGTHS = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, -1, 2**63 - 1]))

AUTHORS = st.builds(Author, name=st.none() | sometimes_huge(TEXT), email=OPTIONAL_TEXT, url=URLS)
ENCLOSURES = st.builds(Enclosure, url=URLS.map(lambda u: u if u is not None else "http://a.example/e.mp3"),
                       type=OPTIONAL_TEXT, length=LENGTHS)
SOURCES = st.builds(Source, feed_id=st.text(max_size=12), title=sometimes_huge(TEXT), feed_url=URLS.map(lambda u: u or ""),
                    site_url=URLS, updated_at=st.one_of(st.none(), DATES))
ALSO = st.builds(AlsoReported, source=SOURCES, url=URLS, title=sometimes_huge(TEXT))


@st.composite
def articles(draw: st.DrawFn, output_id: str) -> Article:
    return Article(
        id=output_id, feed_id=draw(st.text(max_size=12)), entry_key=draw(TEXT), guid=draw(OPTIONAL_TEXT),
        url=draw(URLS), canonical_url=draw(URLS), title=draw(sometimes_huge(TEXT)),
        authors=tuple(draw(st.lists(AUTHORS, max_size=3))), summary=draw(st.none() | sometimes_huge(TEXT)),
        content=draw(st.none() | sometimes_huge(TEXT)),
        categories=tuple(draw(st.lists(TEXT, max_size=4))), enclosures=tuple(draw(st.lists(ENCLOSURES, max_size=3))),
        image=draw(URLS), language=draw(st.one_of(st.none(), st.sampled_from(["en", "ar", "", "x\x00", "\ud800"]))),
        published_at=draw(st.one_of(st.none(), DATES)), updated_at=draw(st.one_of(st.none(), DATES)),
        first_seen_at=draw(DATES), content_hash="h",
    )  # fmt: skip


@st.composite
def story_lists(draw: st.DrawFn) -> list[Story]:
    ids = draw(st.lists(IDS, min_size=1, max_size=4, unique=True))
    out = []
    for output_id in ids:
        many = draw(st.integers(0, 9)) == 0  # now and then a story that 60 outlets carried
        also = draw(st.lists(ALSO, min_size=60 if many else 0, max_size=60 if many else 3))
        out.append(Story(article=draw(articles(output_id)), source=draw(SOURCES), also=also,
                         story_id=draw(st.one_of(st.just(""), IDS)), size=1 + len(also),
                         joined_at=draw(st.one_of(st.none(), DATES))))
    return out


def _strict_xml(body: bytes) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=False, huge_tree=True)
    return etree.fromstring(body, parser)


def _feedparser(body: bytes, kind: str) -> feedparser.FeedParserDict:
    # No sanitising, no resolving of relative links: the reading is checked, and those passes were 90% of its time.
    parsed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    assert not parsed.bozo, f"{kind}: feedparser: {parsed.get('bozo_exception')!r}"
    return parsed


def _ids(stories: list[Story]) -> dict[str, list[str]]:
    """Each format's entry ids, in order, read back by a strict parser."""
    atom = _strict_xml(render_atom(stories, META))
    rss = _strict_xml(render_rss(stories, META))
    items = json.loads(render_json(stories, META).decode("utf-8"))["items"]
    return {
        "atom": [e.findtext(f"{ATOM}id") or "" for e in atom.iter(f"{ATOM}entry")],
        "rss": [e.findtext("guid") or "" for e in rss.iter("item")],
        "json": [item["id"] for item in items],
    }


RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _one(**fields: object) -> list[Story]:
    article = Article(id="tag:x,2026:1", feed_id="f", entry_key="k", guid=None, url="https://a.example/1",
                      canonical_url=None, title="t", authors=(), summary=None, content=None, categories=(),
                      enclosures=(), image=None, language=None, published_at=None, updated_at=None,
                      first_seen_at=datetime(2026, 6, 1, tzinfo=UTC), content_hash="h")
    source = Source(feed_id="f", title="s", feed_url="http://a.example/feed", site_url=None, updated_at=None)
    return [Story(article=replace(article, **fields), source=source)]  # type: ignore[arg-type]


@given(story_lists())
@example(_one(url="//a.example/x", content="<p>" + "x" * 120_000))  # ammonia refused the base (ValueError)
@example(_one(title="a\ud800b", categories=("\udfff",)))  # JSON: UnicodeEncodeError
def test_any_stored_story_renders_to_documents_that_parse(stories: list[Story]) -> None:
    fitted = fit(stories)
    assert fitted, "fit() keeps at least one story"
    atom = render_atom(fitted, META)
    rss = render_rss(fitted, META)
    document = render_json(fitted, META)
    atom_root = _strict_xml(atom)
    rss_root = _strict_xml(rss)
    assert atom_root.tag == f"{ATOM}feed" and rss_root.tag == "rss"
    atom_parsed = _feedparser(atom, "atom")
    rss_parsed = _feedparser(rss, "rss")
    items = json.loads(document.decode("utf-8"))["items"]
    assert len(atom_parsed.entries) == len(rss_parsed.entries) == len(items) == len(fitted)
    for element in atom_root.iter(f"{ATOM}updated", f"{ATOM}published"):
        assert RFC3339.fullmatch(element.text or ""), element.text
    for item in items:
        for key in ("date_published", "date_modified"):
            assert key not in item or RFC3339.fullmatch(item[key]), item[key]


@given(story_lists(), st.randoms(use_true_random=False))
@example(_one(id="tag:x,2026:a\rb"), None)  # Atom and RSS read "a\nb"
def test_output_ids_are_the_same_in_every_format_and_every_render(stories: list[Story], rng: object) -> None:
    fitted = fit(stories)
    first = _ids(fitted)
    # (characters XML cannot carry are dropped from it in every format)
    assert first["atom"] == first["rss"] == first["json"], first
    assert len(first["json"]) == len(fitted)
    # Another render (the same stories, in another order, with other stories
    # or alone, after a restart's fresh objects) gives each story the same id.
    shuffled = list(fitted)
    if rng is not None:
        rng.shuffle(shuffled)  # type: ignore[attr-defined]
    again = _ids([replace(s, article=replace(s.article)) for s in shuffled])
    by_story = {id(s): n for n, s in enumerate(fitted)}
    for fmt in ("atom", "rss", "json"):
        for position, story in enumerate(shuffled):
            assert again[fmt][position] == first[fmt][by_story[id(story)]], fmt
        for n, story in enumerate(fitted):
            assert _ids([story])[fmt] == [first[fmt][n]], fmt
