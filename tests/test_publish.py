"""The Latest feed in every format: round trip through feedparser,
stability, tags, ordering, static files, the HTML page."""

from __future__ import annotations

import html
import io
import json
import re
import xml.dom.minidom
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import html5lib
import pytest

from aggregator.model import Article, Author, Source, Story, utcnow
from aggregator.publish import Publisher, Snapshot, write_static
from aggregator.publish.atom import render_atom
from aggregator.publish.common import FeedMeta, fit
from aggregator.publish.jsonfeed import render_json
from aggregator.publish.rss import render_rss
from tests.conftest import Workspace, run_cli
from tests.feedgen import Item, atom, jsonfeed, rss, story
from tests.fixture_server import FeedServer


def publish(ws: Workspace) -> Snapshot:
    return Publisher(ws.store, ws.config()).build()


def parsed(snapshot: Snapshot, path: str) -> feedparser.FeedParserDict:
    return feedparser.parse(io.BytesIO(snapshot.documents[path].body))


@pytest.fixture
def newsroom(ws: Workspace, server: FeedServer) -> dict[str, str]:
    """Three sources: a duplicate across feeds, an undated entry, an
    enclosure, non-ASCII and HTML titles, authors, categories."""
    ws.write_config(http={"base_url": "https://news.example.org/"})
    a = server.add("/a", rss([
        story(1, title="Talks <b>resume</b> in Erbil", author="desk@a.example (Rudaw Desk)", categories=["Kurdistan"],
              enclosure=("https://cdn.a.example/1.mp3", "audio/mpeg", 1234), date="Mon, 01 Jun 2026 10:00:00 GMT"),
        story(2, title="ئاشتی لە هەولێر", date="Mon, 01 Jun 2026 11:00:00 GMT"),
        Item(title="Undated note", link="https://a.example/undated"),
    ], title="Source A"))
    b = server.add("/b", atom([
        story(1, guid="urn:b:1", link="https://news.example.com/story/1?utm_source=b", title="Erbil talks resume",
              date="2026-06-01T10:05:00Z", author="B Writer"),
        story(3, guid="urn:b:3", title="<script>alert('x')</script>Café news", date="2026-06-01T12:00:00Z"),
    ], title="Source B"))
    c = server.add("/c", jsonfeed([story(4, title="JSON story", date="2026-06-01T09:00:00Z", author="C Person")],
                                  title="Source C"), content_type="application/feed+json")
    ws.feeds([{"url": a, "tags": ["kurdistan", "world"]}, {"url": b, "tags": ["world"]}, {"url": c, "tags": ["tech"]}])
    ws.poll_url(a)
    ws.poll_url(b)
    ws.poll_url(c)
    return {"a": a, "b": b, "c": c}


def test_atom_round_trip(ws: Workspace, newsroom: dict[str, str]) -> None:
    snapshot = publish(ws)
    feed = parsed(snapshot, "latest.atom")
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.id == "tag:news.example.org,2026:latest"
    assert {l.rel: l.href for l in feed.feed.links} == {"self": "https://news.example.org/latest.atom",
                                                         "alternate": "https://news.example.org/"}
    stored = {a.id: (a, f) for a, f in ws.store.articles()}
    representatives = [a for a, _ in stored.values() if a.duplicate_of is None]
    assert len(feed.entries) == len(representatives) == 5
    for entry in feed.entries:
        article, source = stored[entry.id]
        assert entry.title == article.title
        assert entry.get("link") == article.url
        assert entry.published_parsed is not None and entry.updated_parsed is not None
        assert entry.source.title == source.display_title
        assert entry.source.id == source.url
    by_title = {e.title: e for e in feed.entries}
    first = by_title["Talks resume in Erbil"]
    assert first.author_detail.name == "Rudaw Desk" and first.author_detail.email == "desk@a.example"
    assert [t.term for t in first.tags] == ["Kurdistan"]
    assert first.enclosures[0].href == "https://cdn.a.example/1.mp3" and first.enclosures[0].length == "1234"
    related = [l for l in first.links if l.rel == "related"]
    assert related and related[0].href == "https://news.example.com/story/1"
    assert "Also reported by" in first.content[0].value and "Source B" in first.content[0].value
    assert "ئاشتی لە هەولێر" in by_title
    assert "Café news" in by_title  # the <script> is gone from the title, the text stays
    undated = by_title["Undated note"]
    undated_article = stored[undated.id][0]
    # Undated: a fallback date from when it was first seen, a second per place in its document (DESIGN §3).
    assert undated.published_parsed[:6] == undated_article.published_at.timetuple()[:6]
    assert timedelta(0) <= undated_article.first_seen_at - undated_article.published_at < timedelta(minutes=1)


def test_rss_round_trip(ws: Workspace, newsroom: dict[str, str]) -> None:
    feed = parsed(publish(ws), "latest.rss")
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "rss20"
    assert feed.feed.link == "https://news.example.org/"
    stored = {a.id: (a, f) for a, f in ws.store.articles()}
    assert len(feed.entries) == 5
    for entry in feed.entries:
        article, source = stored[entry.id]
        assert entry.title == article.title and entry.get("link") == article.url
        assert entry.source.title == source.display_title and entry.source.href == source.url
    raw = publish(ws).documents["latest.rss"].body.decode()
    for permalink, guid in re.findall(r'<guid isPermaLink="(true|false)">([^<]*)</guid>', raw):
        article = stored[html.unescape(guid)][0]
        assert (permalink == "true") == (article.id == article.url)
    first = next(e for e in feed.entries if e.title == "Talks resume in Erbil")
    assert first.author == "Rudaw Desk"
    assert first.enclosures[0].href == "https://cdn.a.example/1.mp3" and first.enclosures[0].type == "audio/mpeg"
    assert "Also reported by" in first.content[0].value


def test_rss_dates_are_english_whatever_the_locale(ws: Workspace, newsroom: dict[str, str]) -> None:
    import locale

    previous = locale.setlocale(locale.LC_TIME)
    try:
        for name in ("de_DE.UTF-8", "fr_FR.UTF-8", "ar_IQ.UTF-8"):
            try:
                locale.setlocale(locale.LC_TIME, name)
                break
            except locale.Error:
                continue
        body = publish(ws).documents["latest.rss"].body.decode()
    finally:
        locale.setlocale(locale.LC_TIME, previous)
    assert "<pubDate>Mon, 01 Jun 2026 10:00:00 GMT</pubDate>" in body
    english = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT"
    assert re.search(f"<lastBuildDate>{english}</lastBuildDate>", body)
    assert len(re.findall(f"<pubDate>{english}</pubDate>", body)) == 5


def test_json_feed(ws: Workspace, newsroom: dict[str, str]) -> None:
    data = json.loads(publish(ws).documents["latest.json"].body)
    assert data["version"] == "https://jsonfeed.org/version/1.1"
    assert data["feed_url"] == "https://news.example.org/latest.json"
    assert data["home_page_url"] == "https://news.example.org/"
    items = {i["title"]: i for i in data["items"]}
    first = items["Talks resume in Erbil"]
    assert first["url"] == "http://news.example.com/story/1"
    assert first["authors"] == [{"name": "Rudaw Desk"}]
    assert first["attachments"] == [{"url": "https://cdn.a.example/1.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 1234}]
    assert first["_source"]["title"] == "Source A" and first["_source"]["feed_url"].endswith("/a")
    assert first["date_published"] == "2026-06-01T10:00:00Z"
    assert first["tags"] == ["Kurdistan"]
    assert "summary" in first and "<" not in first["summary"]
    for item in data["items"]:
        assert {"id", "title", "content_html", "date_published", "_source"} <= set(item)


def test_order_newest_first_and_feed_updated_is_the_newest_entry(ws: Workspace, newsroom: dict[str, str]) -> None:
    feed = parsed(publish(ws), "latest.atom")
    titles = [e.title for e in feed.entries]
    # The undated note was first seen now: min(published, first seen) puts it first.
    assert titles[0] == "Undated note"
    assert titles[1:] == ["Café news", "ئاشتی لە هەولێر", "Talks resume in Erbil", "JSON story"]
    newest = max(e.updated_parsed for e in feed.entries)
    assert feed.feed.updated_parsed == newest


def test_publishing_twice_gives_identical_bytes(ws: Workspace, newsroom: dict[str, str], tmp_path: Path) -> None:
    first = publish(ws)
    second = publish(ws)
    assert {p: d.body for p, d in first.documents.items()} == {p: d.body for p, d in second.documents.items()}
    assert {p: d.etag for p, d in first.documents.items()} == {p: d.etag for p, d in second.documents.items()}
    written = write_static(first, tmp_path / "out")
    assert "latest.atom" in written and "index.html" in written and "tags/world.rss" in written
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert write_static(second, tmp_path / "out") == []  # nothing changed: nothing written
    assert mtimes == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert not list((tmp_path / "out").rglob(".*.tmp"))


def test_edited_entry_keeps_its_id_with_a_new_updated(ws: Workspace, server: FeedServer, newsroom: dict[str, str]) -> None:
    before = {e.id: e for e in parsed(publish(ws), "latest.atom").entries}
    server.update("/b", body=atom([
        story(1, guid="urn:b:1", link="https://news.example.com/story/1?utm_source=b", title="Erbil talks resume",
              date="2026-06-01T10:05:00Z", author="B Writer"),
        story(3, guid="urn:b:3", title="Café news (updated)", date="2026-06-01T12:00:00Z", summary="<p>More</p>"),
    ], title="Source B"))
    ws.poll_url(newsroom["b"])
    after = {e.id: e for e in parsed(publish(ws), "latest.atom").entries}
    assert set(after) == set(before)
    changed = [i for i in after if after[i].title != before[i].title]
    assert len(changed) == 1 and after[changed[0]].title == "Café news (updated)"
    assert after[changed[0]].updated_parsed > before[changed[0]].updated_parsed


def test_source_changing_its_guids_keeps_output_ids(ws: Workspace, server: FeedServer, newsroom: dict[str, str]) -> None:
    before = sorted(e.id for e in parsed(publish(ws), "latest.atom").entries)
    server.update("/c", body=jsonfeed([story(4, guid="https://news.example.com/new-id-scheme/4", title="JSON story",
                                             date="2026-06-01T09:00:00Z", author="C Person")], title="Source C"))
    ws.poll_url(newsroom["c"])
    assert sorted(e.id for e in parsed(publish(ws), "latest.atom").entries) == before


def test_tag_outputs_hold_only_their_tag(ws: Workspace, newsroom: dict[str, str]) -> None:
    snapshot = publish(ws)
    sources = {t: {e.source.title for e in parsed(snapshot, f"tags/{t}.atom").entries} for t in ("kurdistan", "world", "tech")}
    assert sources == {"kurdistan": {"Source A"}, "world": {"Source A", "Source B"}, "tech": {"Source C"}}
    tech = parsed(snapshot, "tags/tech.rss")
    assert not tech.bozo and [e.title for e in tech.entries] == ["JSON story"]
    assert json.loads(snapshot.documents["tags/tech.json"].body)["feed_url"] == "https://news.example.org/tags/tech.json"
    assert parsed(snapshot, "tags/world.atom").feed.id == "tag:news.example.org,2026:latest/tags/world"


def test_a_new_feeds_backlog_does_not_push_out_fresh_stories(ws: Workspace, server: FeedServer) -> None:
    ws.write_config(output={"entries": 10, "per_source": 3})
    now = utcnow()
    fresh = server.add("/fresh", rss([story(i, date=(now - timedelta(minutes=i)).strftime("%a, %d %b %Y %H:%M:%S GMT"),
                                            site="http://fresh.example") for i in range(4)], title="Fresh"))
    backlog = server.add("/backlog", rss([story(i, site="http://old.example",
                                                date=(now - timedelta(minutes=30 + i)).strftime("%a, %d %b %Y %H:%M:%S GMT"))
                                          for i in range(50)], title="Backlog"))
    ws.feeds([fresh, backlog])
    ws.poll_all()
    entries = parsed(publish(ws), "latest.atom").entries
    by_source: dict[str, int] = {}
    for e in entries:
        by_source[e.source.title] = by_source.get(e.source.title, 0) + 1
    assert by_source == {"Fresh": 3, "Backlog": 3}
    assert [e.title for e in entries[:3]] == ["Story 0", "Story 1", "Story 2"]


def test_html_page(ws: Workspace, newsroom: dict[str, str]) -> None:
    snapshot = publish(ws)
    page = snapshot.documents[""].body
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    tree = parser.parse(page)
    alternates = {l.get("type"): l.get("href") for l in tree.iter("link") if l.get("rel") == "alternate"}
    assert alternates == {"application/atom+xml": "https://news.example.org/latest.atom",
                          "application/rss+xml": "https://news.example.org/latest.rss",
                          "application/feed+json": "https://news.example.org/latest.json"}
    assert not list(tree.iter("script"))
    text = page.decode()
    assert "<script>" not in text and "Café news" in text
    titles = [a.text for h2 in tree.iter("h2") for a in h2.iter("a")]
    assert "Talks resume in Erbil" in titles
    assert 'name="viewport"' in text
    sources = snapshot.documents["feeds"].body
    html5lib.HTMLParser(strict=True).parse(sources)
    assert b"Source A" in sources and b"Source C" in sources


def test_hostile_markup_cannot_break_documents(ws: Workspace, server: FeedServer) -> None:
    evil = "]]></title><script>alert(1)</script><title>&amp;&lt;\x00\x07"
    url = server.add("/evil", rss([Item(title=evil, link="https://e.example/1?a=1&b=\"2\"", guid="https://e.example/1?a=1&b=2",
                                        author="x@e.example (<img src=x onerror=alert(1)>)", categories=["<b>c</b>"],
                                        summary="<p onclick=x>hi</p><script>bad()</script>")],
                                  title="<i>Evil</i> feed & co"))
    ws.feeds([url])
    ws.poll_url(url)
    snapshot = publish(ws)
    for path in ("latest.atom", "latest.rss", "opml"):
        xml.dom.minidom.parseString(snapshot.documents[path].body)  # well-formed
    json.loads(snapshot.documents["latest.json"].body)
    tree = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(snapshot.documents[""].body)
    assert not list(tree.iter("script")) and not any(el.get("onerror") or el.get("onclick") for el in tree.iter())
    for path in ("latest.atom", "latest.rss"):
        assert not feedparser.parse(io.BytesIO(snapshot.documents[path].body)).bozo


ATOM_NS = "{http://www.w3.org/2005/Atom}"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_outputs_follow_their_specifications(ws: Workspace, newsroom: dict[str, str], server: FeedServer) -> None:
    """The W3C validator cannot be reached from here, so its main rules are
    checked directly: RFC 4287 for Atom, RSS 2.0, JSON Feed 1.1."""
    import xml.etree.ElementTree as ET

    bare = server.add("/bare", rss([Item(title="No link, no text", date="Mon, 01 Jun 2026 08:00:00 GMT")], title="Bare"))
    ws.feeds([*[{"url": u} for u in newsroom.values()], bare])
    ws.poll_url(bare)
    snapshot = publish(ws)
    feed = ET.fromstring(snapshot.documents["latest.atom"].body)
    for name in ("id", "title", "updated"):
        assert len(feed.findall(ATOM_NS + name)) == 1, name
    assert RFC3339.match(feed.findtext(ATOM_NS + "updated") or "")
    assert any(l.get("rel") == "self" and l.get("href", "").startswith("https://") for l in feed.findall(ATOM_NS + "link"))
    entries = feed.findall(ATOM_NS + "entry")
    assert len(entries) == 6
    for entry in entries:
        for name in ("id", "title", "updated", "published"):
            assert len(entry.findall(ATOM_NS + name)) == 1, (name, entry.findtext(ATOM_NS + "title"))
        assert RFC3339.match(entry.findtext(ATOM_NS + "updated") or "")
        assert re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", entry.findtext(ATOM_NS + "id") or "")  # an IRI
        authors = entry.findall(ATOM_NS + "author")
        assert authors and all((a.findtext(ATOM_NS + "name") or "").strip() for a in authors)
        alternate = [l for l in entry.findall(ATOM_NS + "link") if l.get("rel") == "alternate"]
        assert alternate or entry.find(ATOM_NS + "content") is not None  # 4.1.1
        source = entry.find(ATOM_NS + "source")
        assert source is not None and all(source.find(ATOM_NS + n) is not None for n in ("id", "title", "updated"))
    rss_doc = ET.fromstring(snapshot.documents["latest.rss"].body)
    channel = rss_doc.find("channel")
    assert channel is not None and all(channel.findtext(n) for n in ("title", "link", "description"))
    for item in channel.findall("item"):
        assert item.findtext("title") or item.findtext("description")
        guid = item.find("guid")
        assert guid is not None and (guid.get("isPermaLink") == "false" or (guid.text or "").startswith("http"))
        assert re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT$", item.findtext("pubDate") or "")
        for enclosure in item.findall("enclosure"):
            assert enclosure.get("url", "").startswith("http") and (enclosure.get("length") or "").isdigit() and enclosure.get("type")
    data = json.loads(snapshot.documents["latest.json"].body)
    assert {"version", "title", "items"} <= set(data)
    for item in data["items"]:
        assert isinstance(item["id"], str) and ("content_html" in item or "content_text" in item)
        assert RFC3339.match(item["date_published"])
        assert all(k.startswith("_") or k in {"id", "url", "external_url", "title", "content_html", "content_text",
                                               "summary", "image", "banner_image", "date_published", "date_modified",
                                               "authors", "tags", "language", "attachments"} for k in item)


# --- defects found by tests/test_fuzz_render.py, kept as regular tests -----------------------------

def _story(**fields: object) -> Story:
    article = Article(id="tag:news.example,2026:1", feed_id="f", entry_key="k", guid=None, url="https://a.example/1",
                      canonical_url=None, title="T", authors=(), summary=None, content=None, categories=(),
                      enclosures=(), image=None, language=None, published_at=None, updated_at=None,
                      first_seen_at=datetime(2026, 6, 1, tzinfo=UTC), content_hash="h")
    article = replace(article, **{k: v for k, v in fields.items() if k != "source_title"})
    source = Source(feed_id="f", title=str(fields.get("source_title", "S")), feed_url="https://a.example/feed",
                    site_url=None, updated_at=None)
    return Story(article=article, source=source)


def _render(stories: list[Story]) -> dict[str, bytes]:
    meta = FeedMeta(title="Latest", subtitle="s", id="tag:news.example,2026:latest", base_url="https://n.example/",
                    path="latest")
    fitted = fit(stories)
    return {"atom": render_atom(fitted, meta), "rss": render_rss(fitted, meta), "json": render_json(fitted, meta)}


@pytest.mark.parametrize("url", ["//a.example/story", "https://a.example/\ud800"])
def test_a_long_body_is_cut_whatever_the_articles_url(url: str) -> None:
    # fit() re-cleans a body cut at its cap against the article's URL; ammonia
    # refused a protocol-relative or surrogate-holding base with ValueError,
    # and publishing stopped.
    documents = _render([_story(url=url, content="<p><a href='/x'>a</a> " + "word " * 30_000 + "</p>")])
    entry = feedparser.parse(documents["atom"]).entries[0]
    assert len(entry.content[0].value) < 110_000 and "word word" in entry.content[0].value


def test_a_lone_surrogate_in_any_field_is_dropped_from_the_json_feed() -> None:
    # json.dumps(ensure_ascii=False) keeps it; encoding the document raised UnicodeEncodeError.
    story = _story(title="a\ud800b", authors=(Author(name="\udfffWriter"),), categories=("x\ud800",),
                   source_title="S\ud800")
    item = json.loads(_render([story])["json"])["items"][0]
    assert item["title"] == "ab" and item["authors"] == [{"name": "Writer"}] and item["tags"] == ["x"]
    assert item["_source"]["title"] == "S"


def test_an_id_with_a_carriage_return_is_the_same_in_every_format() -> None:
    # An XML parser reads a bare CR as a line feed: Atom and RSS said "a\nb" where JSON said "a\rb".
    documents = _render([_story(id="tag:x,2026:a\rb")])
    assert feedparser.parse(documents["atom"]).entries[0].id == "tag:x,2026:a\rb"
    assert xml.dom.minidom.parseString(documents["rss"]).getElementsByTagName("guid")[0].firstChild.data == (
        "tag:x,2026:a\rb")
    assert json.loads(documents["json"])["items"][0]["id"] == "tag:x,2026:a\rb"


# --- `aggregator publish --out DIR` ------------------------------------------------------------------

def _files(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under out: (inode, mtime). A file replaced by rename gets a new inode."""
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def test_publish_out_writes_atomically_only_what_changed_and_removes_stale_files(ws: Workspace, server: FeedServer,
                                                                                 tmp_path: Path) -> None:
    world = server.add("/world", rss([story(1, title="Kurdistan talks"), story(2)], title="World"))
    sport = server.add("/sport", rss([story(1, site="http://sport.example", title="Match report")], title="Sport"))
    ws.feeds([{"url": world, "tags": ["world"]}, {"url": sport, "tags": ["sport"]}])
    ws.write_config(searches=[{"name": "kurdistan", "query": "kurdistan"}])
    ws.poll_all()
    ws.close()
    out = tmp_path / "site"

    def publish_cli() -> str:
        proc = run_cli("publish", "--out", str(out), "--config", str(ws.config_path))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stdout

    said = publish_cli()
    first = _files(out)
    for name in ("latest.atom", "latest.rss", "latest.json", "index.html", "tags/world.atom", "tags/sport.rss",
                 "search/kurdistan.atom", "search/kurdistan.json"):
        assert name in first, sorted(first)
    assert re.fullmatch(rf"Published (\d+) documents to {re.escape(str(out))}: \1 changed \(.*\)\n", said), said
    assert not feedparser.parse((out / "latest.atom").read_bytes()).bozo
    assert [e.title for e in feedparser.parse((out / "search/kurdistan.atom").read_bytes()).entries] == [
        "Kurdistan talks"]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]

    # Nothing changed: nothing written, not even touched.
    assert publish_cli().endswith(": 0 changed\n")
    assert _files(out) == first

    # One feed changes: its files and the merged ones are replaced (a new inode: renamed over,
    # never rewritten in place, so a reader sees the old file or the new one); the rest are left alone.
    server.update("/sport", body=rss([story(3, site="http://sport.example", title="Late goal"),
                                      story(1, site="http://sport.example", title="Match report")], title="Sport"))
    ws.poll_url(sport)
    ws.close()
    said = publish_cli()
    second = _files(out)
    changed = {name for name in second if second[name] != first.get(name)}
    assert {"latest.atom", "latest.rss", "latest.json", "tags/sport.atom", "tags/sport.rss"} <= changed, changed
    assert all(second[name][0] != first[name][0] for name in changed & set(first))  # replaced by rename
    assert not {"tags/world.atom", "tags/world.rss", "tags/world.json", "search/kurdistan.atom"} & changed
    assert f": {len(changed)} changed" in said and b"Late goal" in (out / "tags/sport.atom").read_bytes()

    # A tag and a saved search that are gone take their files with them; other files there stay.
    (out / "tags" / "notes.txt").write_text("not ours")
    ws.feeds([{"url": world, "tags": ["world"]}, {"url": sport}])
    ws.write_config(searches=[])
    publish_cli()
    third = _files(out)
    assert not [name for name in third if name.startswith(("tags/sport.", "search/kurdistan."))], sorted(third)
    assert "tags/world.atom" in third and "tags/notes.txt" in third
