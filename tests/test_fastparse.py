"""The fast parse path against feedparser, field by field (issue 15).

For every document we have (the real-world corpus, the fixtures of the
parse, hostile and text-limit suites, the feed builders, and every kind of
feed the benchmark farm generates), ``parse_document`` with the fast path
("auto") and without it ("feedparser") must give equal records: every field
of the feed and of each entry, content hashes and identity included, or the
same error. A document the fast path is not sure about goes to feedparser
(``parse_path == "feedparser"``), which is equal by construction; the tests
also hold the share of the corpus read fast, so "defer everything" cannot
pass. A difference that is right (a feedparser defect we correct on the
fast path, say) would be listed in EXCEPTIONS by document and field, with
its reason; there are none today, and a listed exception that no longer
differs fails too, so the list cannot go stale.
"""

from __future__ import annotations

import ast
import random
import re
import dataclasses
import gzip
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from aggregator import fastparse
from aggregator.model import ParsedFeed, ParseError
from aggregator.parse import PATH_FAST, PATH_FEEDPARSER, PATH_JSON, FastPathDeferred, parse_document, prepared_xml
from bench.feedfarm import FarmSpec, FeedModel
from tests import hostile
from tests.conftest import CORPUS
from tests.feedgen import Item, atom, jsonfeed, rss, story

NOW = datetime(2026, 6, 15, 12, tzinfo=timezone.utc)
TESTS = Path(__file__).resolve().parent

# (document id, field path) -> why the fast path is right to differ. Empty:
# every document we have gives equal records.
EXCEPTIONS: dict[tuple[str, str], str] = {}

# Fields compared besides the entries, and fields that say how, not what.
HOW_FIELDS = {"parse_path", "fast_deferred"}


def both(body: bytes, url: str, headers: dict[str, str] | None = None) -> tuple[Any, Any]:
    """(feedparser's record or error, the fast path's record or error)."""

    def one(engine: str) -> Any:
        try:
            return parse_document(body, url, headers or {}, NOW, engine=engine)
        except ParseError as exc:
            return ("ParseError", str(exc))

    return one("feedparser"), one("auto")


def differences(slow: Any, fast: Any) -> dict[str, tuple[Any, Any]]:
    """Field path -> (feedparser's value, the fast path's value)."""
    if not isinstance(slow, ParsedFeed) or not isinstance(fast, ParsedFeed):
        return {} if slow == fast else {"outcome": (slow, fast)}
    out: dict[str, tuple[Any, Any]] = {}
    a, b = dataclasses.asdict(slow), dataclasses.asdict(fast)
    for key in a:
        if key in HOW_FIELDS or key == "entries":
            continue
        if a[key] != b[key]:
            out[key] = (a[key], b[key])
    if len(a["entries"]) != len(b["entries"]):
        out["entries.count"] = (len(a["entries"]), len(b["entries"]))
    for index, (x, y) in enumerate(zip(a["entries"], b["entries"], strict=False)):
        for key in x:
            if x[key] != y[key]:
                out[f"entries[{index}].{key}"] = (x[key], y[key])
    return out


def check(doc_id: str, body: bytes, url: str, headers: dict[str, str] | None = None) -> Any:
    """Both paths on one document: equal but for the named exceptions. Returns the fast path's result."""
    slow, fast = both(body, url, headers)
    if isinstance(slow, ParsedFeed):
        assert slow.parse_path in (PATH_FEEDPARSER, PATH_JSON)
    found = differences(slow, fast)
    expected = {field for (doc, field) in EXCEPTIONS if doc == doc_id}
    unexplained = {k: v for k, v in found.items() if k not in expected}
    assert not unexplained, f"{doc_id}: the fast path differs: " + "; ".join(
        f"{k}: feedparser {v[0]!r:.300} / fast {v[1]!r:.300}" for k, v in sorted(unexplained.items())[:10]
    )
    stale = expected - set(found)
    assert not stale, f"{doc_id}: listed exceptions that no longer differ: {sorted(stale)}"
    return fast


# --- the real-world corpus ---------------------------------------------------------------

# Empty in a plain clone: the tests that read these are marked corpus and deselected there.
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "README.md")) if CORPUS else []


def corpus_body(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


@pytest.mark.corpus
@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: p.name)
def test_corpus_document_is_equal_on_both_paths(path: Path) -> None:
    check(path.name, corpus_body(path), f"https://corpus.example/{path.name}")


# Documents of the corpus the fast path leaves to feedparser, and why. Any
# change to this list is a decision: a new deferral costs speed, a document
# taken over must pass the field-by-field test above.
CORPUS_DEFERRED = {
    "apple-itunes-sample.xml": "not well-formed",  # an undeclared prefix
    "cre_podcast.xml": "<psc:chapters>",  # podcast chapters: not ported (nothing of them is read)
    "endorphine-fuer-delfine_podcast.rss": "<itunes_keywords> with attributes",
    "ezrss_torrents.xml": "a DOCTYPE",
    "guardian-world_feeder.xml": "not well-formed",
    "intertwingly.atom": "svg or math in xhtml content",
    "lincoln-loop.xml": "not well-formed",  # a control character
    "myanimelist-news.xml": "not well-formed",  # an HTML entity without a DTD
    "next-inpact_full.xml": "not well-formed",  # a control character reference
    "nixos-news.xml": "markup inside a text element",  # unescaped HTML in <description>
    "phys-org_no-decl.rss": "not well-formed",  # a bare '&'
    "youtube-mostpopular_gdata.atom": "base64 content",
}


@pytest.mark.corpus
def test_the_fast_path_reads_nearly_all_of_the_corpus() -> None:
    paths: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for path in CORPUS_FILES:
        try:
            parsed = parse_document(corpus_body(path), f"https://corpus.example/{path.name}", {}, NOW)
        except ParseError:
            continue
        paths[path.name] = parsed.parse_path
        if parsed.fast_deferred:
            reasons[path.name] = parsed.fast_deferred
    deferred = {name for name, p in paths.items() if p == PATH_FEEDPARSER}
    unexpected = deferred - set(CORPUS_DEFERRED)
    assert not unexpected, {name: reasons.get(name) for name in unexpected}
    for name in deferred:
        assert CORPUS_DEFERRED[name] in reasons[name], (name, reasons[name])
    assert sum(1 for p in paths.values() if p == PATH_FAST) >= 120, paths


# --- fixtures of the other suites ----------------------------------------------------------

FIXTURE_FILES = ["test_parse.py", "test_hostile.py", "hostile.py", "test_text_limits.py", "test_review_fixes.py",
                 "test_dates.py", "test_fuzz_parse.py", "test_identity.py", "test_hostile_files.py", "test_cli.py",
                 "test_fetch.py"]  # fmt: skip
MARKERS = (b"<rss", b"<feed", b"<rdf:RDF", b"<?xml", b"jsonfeed.org", b"<RSS", b"<channel")


def literal_documents() -> Iterator[tuple[str, bytes]]:
    """Every string and bytes literal of the fixture files that looks like a
    feed document (inline fixtures, module constants), as written."""
    for name in FIXTURE_FILES:
        tree = ast.parse((TESTS / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
                value = node.value.encode("utf-8", "surrogatepass") if isinstance(node.value, str) else node.value
                if len(value) > 20 and any(marker in value for marker in MARKERS):
                    yield f"{name}:{node.lineno}", value


def builder_documents() -> Iterator[tuple[str, bytes]]:
    """Documents the suites build with code."""
    for levels in (3, 9):
        for one_line in (False, True):
            yield f"billion_laughs({levels}, {one_line})", hostile.billion_laughs(levels, one_line=one_line)
    yield "quadratic_blowup", hostile.quadratic_blowup(1000, 300)
    yield "external_entities", hostile.external_entities(
        "file:///etc/passwd", "http://127.0.0.1:9/x", "http://127.0.0.1:9/dtd", "http://127.0.0.1:9/xsl")
    yield "external_parameter_entity", hostile.external_parameter_entity("http://127.0.0.1:9/pe.dtd")
    from tests import test_hostile

    for name in ("hostile_rss", "hostile_atom", "hostile_json"):
        yield name, getattr(test_hostile, name)().encode("utf-8")
    yield "good_doc", test_hostile.good_doc(3).encode("utf-8") if isinstance(test_hostile.good_doc(3), str) else (
        test_hostile.good_doc(3))

    def encoded(label: str, title: bytes, body: bytes = b"plain") -> bytes:  # test_hostile's encoding cases
        return (b'<?xml version="1.0" encoding="' + label.encode() + b'"?>\n<rss version="2.0"><channel>'
                b"<title>Encoding " + title + b"</title><link>http://enc.example/</link><description>d</description>"
                b"<item><title>" + title + b"</title><link>http://enc.example/1</link><description>" + body
                + b"</description></item></channel></rss>")  # fmt: skip

    yield "invalid-utf8", encoded("utf-8", b"Caf\xe9 \xff\xfe \xc0\xaf \xed\xa0\x80 end")
    yield "control-chars", encoded("utf-8", b"Bell\x07 Esc\x1b Null\x00 VT\x0b FF\x0c NEL\xc2\x85 ref &#x1; &#27;",
                                   b"text \x01\x02\x03 &lt;p&gt;para\x08graph&lt;/p&gt;")
    yield "cp1251-as-utf8", encoded("utf-8", "Новости дня".encode("windows-1251"))
    yield "latin1-as-utf8", encoded("utf-8", "Événement à Zürich".encode("iso-8859-1"))
    yield "utf8-as-latin1", encoded("iso-8859-1", "Événement à Zürich — Новости".encode())
    yield "unknown-encoding", encoded("x-no-such-charset", b"Unknown charset")
    yield "utf8-mojibake", encoded("utf-8", "Ã©tÃ© Â€ \u0080\u0093 quote".encode())
    items = [story(n) for n in range(1, 4)] + [
        Item(title="Full item", link="http://example.com/full?utm_source=x&a=1", guid="g-1", guid_permalink=False,
             date="Mon, 01 Jun 2026 10:00:00 +0000", updated="Tue, 02 Jun 2026 10:00:00 GMT",
             summary="<p>Sum <a href='/rel'>rel</a></p>", content="<p>Body <img src='/i.jpg'></p>",
             author="desk@example.com (Desk)", creator="Jane Doe", categories=["A", "B", "A"],
             enclosure=("http://example.com/a.mp3", "Audio/MPEG", 42), thumbnail="http://example.com/t.jpg"),
        Item(title=None, link=None, guid="only-guid", summary="Text only"),
        Item(title="Extra", link="http://example.com/x", extra="<media:content url='http://example.com/v.mp4' "
             "medium='video' fileSize='9'/><itunes:author>Pod Caster</itunes:author><itunes:keywords>a, b</itunes:keywords>"
             "<dc:subject>Subj</dc:subject><comments>/c</comments><wfw:commentRss>/feed</wfw:commentRss>"),
    ]  # fmt: skip
    yield "feedgen.rss", rss(items).encode()
    yield "feedgen.atom", atom(items).encode()
    yield "feedgen.json", jsonfeed(items).encode()


FIXTURES = list(literal_documents()) + list(builder_documents())


@pytest.mark.parametrize(("doc_id", "body"), FIXTURES, ids=[doc_id for doc_id, _ in FIXTURES])
def test_fixture_document_is_equal_on_both_paths(doc_id: str, body: bytes) -> None:
    for content_type in ("", "application/rss+xml", "text/xml", "text/html; charset=iso-8859-1"):
        headers = {"content-type": content_type} if content_type else {}
        check(f"{doc_id} [{content_type}]", body, "http://fixture.example/feed", headers)


def test_the_fixtures_are_there_and_many_are_read_fast() -> None:
    assert len(FIXTURES) >= 60, len(FIXTURES)
    fast = 0
    for _doc_id, body in FIXTURES:
        try:
            fast += parse_document(body, "http://fixture.example/feed", {}, NOW).parse_path == PATH_FAST
        except ParseError:
            pass
    assert fast >= 20, fast  # most fixtures are hostile: broken on purpose, or with a DTD


# --- the benchmark farm --------------------------------------------------------------------

FARM = FarmSpec(feeds=40, entries=12, seed=7, hosts=4, epoch=1_780_000_000)


@pytest.mark.parametrize("index", range(FARM.feeds))
def test_every_farm_feed_is_read_fast_and_equal(index: int) -> None:
    model = FeedModel(FARM, index, 8080, FARM.epoch)
    for generation in (0, 3):
        rendered = model.render(generation)
        fast = check(f"farm {index} g{generation}", rendered.body, model.url, {"content-type": rendered.content_type})
        assert fast.parse_path == PATH_FAST, fast.fast_deferred
        assert len(fast.entries) == FARM.entries


# --- known hashes: an unchanged entry is recognised whichever path stored it -----------------


@pytest.mark.corpus
def test_hashes_from_feedparser_mark_fast_entries_unchanged() -> None:
    path = CORPUS / "guardian-uk_rss-parser.rss"
    body = corpus_body(path)
    slow = parse_document(body, "https://g.example/rss", {}, NOW, engine="feedparser")
    known = {e.entry_key: e.content_hash for e in slow.entries}
    fast = parse_document(body, "https://g.example/rss", {}, NOW, known, engine="auto")
    assert fast.parse_path == PATH_FAST
    assert fast.entries and all(e.unchanged for e in fast.entries)


# --- security and limits of the fast path itself ---------------------------------------------


def test_the_lxml_parser_resolves_nothing_and_fetches_nothing() -> None:
    options = fastparse._PARSER_OPTIONS
    assert options["resolve_entities"] is False and options["no_network"] is True
    assert options["load_dtd"] is False and options["huge_tree"] is False and options["recover"] is False


@pytest.mark.parametrize(
    "body",
    [
        hostile.billion_laughs(9),
        hostile.quadratic_blowup(10_000, 1_000),
        hostile.external_entities("file:///etc/passwd", "http://127.0.0.1:9/", "http://127.0.0.1:9/d", "x"),
        hostile.external_parameter_entity("http://127.0.0.1:9/pe.dtd"),
    ],
    ids=["billion-laughs", "quadratic-blowup", "external-entities", "parameter-entity"],
)
def test_documents_with_a_dtd_never_reach_the_fast_reader(body: bytes) -> None:
    # Straight to the reader, without parse.prepared_xml removing the internal subset first.
    with pytest.raises(fastparse.Deferred, match="DOCTYPE"):
        fastparse.read(body, "http://e.com/f", {"content-location": "http://e.com/f"})
    with pytest.raises(FastPathDeferred):
        parse_document(body, "http://e.com/f", {}, NOW, engine="fast")
    parsed = parse_document(body, "http://e.com/f", {}, NOW)
    assert parsed.parse_path == PATH_FEEDPARSER
    assert "root:" not in repr(parsed) and all(len(e.title) < 10_000 for e in parsed.entries)


def test_an_undeclared_entity_is_not_well_formed_for_the_fast_reader() -> None:
    body = b'<rss version="2.0"><channel><title>t&xxe;</title><item><title>a</title></item></channel></rss>'
    with pytest.raises(fastparse.Deferred, match="not well-formed"):
        fastparse.read(body, "http://e.com/f", {"content-location": "http://e.com/f"})


def test_the_fast_path_keeps_to_the_time_limit() -> None:
    items = "".join(f"<item><title>t{i}</title><link>http://e.com/{i}</link></item>" for i in range(20_000))
    body = f'<rss version="2.0"><channel><title>t</title>{items}</channel></rss>'.encode()
    started = time.monotonic()
    with pytest.raises(ParseError, match="longer than"):
        parse_document(body, "http://e.com/f", {}, NOW, time_limit=0.05, engine="fast")
    assert time.monotonic() - started < 2
    assert len(parse_document(body, "http://e.com/f", {}, NOW, time_limit=60, engine="fast").entries) == 20_000


def test_an_element_with_very_many_attributes_goes_to_feedparser() -> None:
    attrs = " ".join(f'a{i}="1"' for i in range(5_000))
    body = f'<rss version="2.0"><channel><title>t</title><item {attrs}><title>x</title></item></channel></rss>'.encode()
    started = time.monotonic()
    with pytest.raises(FastPathDeferred, match="attributes"):
        parse_document(body, "http://e.com/f", {}, NOW, engine="fast")
    assert time.monotonic() - started < 2


def test_forcing_feedparser() -> None:
    body = rss([story(1)]).encode()
    assert parse_document(body, "http://e.com/f", {}, NOW).parse_path == PATH_FAST
    forced = parse_document(body, "http://e.com/f", {}, NOW, engine="feedparser")
    assert forced.parse_path == PATH_FEEDPARSER and forced.fast_deferred is None
    assert parse_document(jsonfeed([story(1)]).encode(), "http://e.com/f", {}, NOW).parse_path == PATH_JSON
    with pytest.raises(ValueError, match="engine"):
        parse_document(body, "http://e.com/f", {}, NOW, engine="quick")


def test_prepared_documents_only() -> None:
    # The reader sees what feedparser sees: prepared_xml's output (BOM, blank lines, prolog tidied).
    body = b"\n\n  \xef\xbb\xbf<?xml version='1.0'?>\n<!-- c -->\n" + rss([story(1)]).encode()
    parsed = parse_document(body, "http://e.com/f", {}, NOW)
    assert parsed.parse_path == PATH_FAST and len(parsed.entries) == 1
    assert prepared_xml(body).startswith(b"\xef\xbb\xbf<?xml")


def test_the_fast_date_reading_is_feedparsers() -> None:
    """fastparse.parse_date reads the two commonest forms itself: on these
    and on their near misses it must agree with feedparser's handler chain
    (parse.py's handler first) to the field."""
    from feedparser.datetimes import _parse_date

    rng = random.Random(15)
    months = ["Jan", "Feb", "Jun", "Sep", "Dec", "jun", "JUN", "Sept", "Foo"]
    zones = ["+0000", "-0500", "+0530", "+1500", "-1600", "+9999", "GMT", "UT", "UTC", "Z", "EST", "CEST", "+00:00"]
    samples = []
    for _ in range(4000):
        day, hour, minute, second = rng.randint(0, 32), rng.randint(0, 25), rng.randint(0, 61), rng.randint(0, 61)
        year = rng.choice([1969, 1970, 2000, 2026, 2038, 9999, 0, 1])
        weekday = rng.choice(["", "Mon, ", "Sun, ", "mon, ", "Xyz, "])
        samples.append(f"{weekday}{day:02d} {rng.choice(months)} {year:04d} {hour:02d}:{minute:02d}:{second:02d} "
                       f"{rng.choice(zones)}")  # fmt: skip
        fraction = rng.choice(["", ".5", ".123456789", ".9999999999"])
        zone = rng.choice(["Z", "+02:00", "-05:30", "+99:99", "+0200", "z", ""])
        samples.append(f"{year:04d}-{rng.randint(0, 13):02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}{fraction}{zone}")
    samples += ["Mon, 01 Jun 2026 10:00:00 +0000", "2026-06-01T10:00:00Z", "", "  ", "1 Jun 2026 10:00:00 GMT"]
    for text in samples:
        assert fastparse.parse_date(text) == _parse_date(text), text


def test_each_feed_and_the_metrics_say_which_reader_parsed_it(ws: Any, server: Any, daemons: list[Any]) -> None:
    """The choice is per document and recorded: `feeds list --json` names the
    reader of each feed's last document, /metrics counts documents per reader."""
    import json

    from tests.conftest import run_cli
    from tests.daemon import Daemon

    clean = server.add("/clean", rss([story(1)]))
    entity = server.add("/entity", rss([story(2, site="http://b.example")]).replace("<title>Story 2", "<title>&eacute; 2"))
    as_json = server.add("/json", jsonfeed([story(3, site="http://c.example")]))
    ws.feeds([clean, entity, as_json])
    daemon = Daemon(ws, interval="1h")
    daemons.append(daemon)
    daemon.start()

    def parsed() -> int:
        counts = re.findall(r'^aggregator_documents_parsed_total\{path="\w+"\} (\S+)$', daemon.get("/metrics")[1].decode(), re.M)
        return sum(int(float(n)) for n in counts)

    daemon.wait_until(lambda: parsed() == 3, 15, "three documents parsed")
    metrics = daemon.get("/metrics")[1].decode()
    assert 'aggregator_documents_parsed_total{path="json"} 1.0' in metrics
    assert 'aggregator_documents_parsed_total{path="fast"} 1.0' in metrics
    assert 'aggregator_documents_parsed_total{path="feedparser"} 1.0' in metrics  # an undeclared entity
    assert daemon.stop() == 0
    rows = [json.loads(line) for line in run_cli("feeds", "list", "--json", "--config", str(ws.config_path),
                                                 check=True).stdout.splitlines()]  # fmt: skip
    paths = {row["url"]: row["parse_path"] for row in rows}
    assert paths == {clean: PATH_FAST, entity: PATH_FEEDPARSER, as_json: PATH_JSON}
