"""The reading pages as documents: which exist, their stable URLs and bytes,
what is rendered again after a change (only what changed), the bounds on how
many there are, hidden articles, the static mirror, and the web routes.
(How a browser renders them: tests/test_pages_browser.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Iterator

import html5lib
import pytest

import aggregator.publish as publish
from aggregator.model import Article, iso, utcnow
from aggregator.publish import Publisher, Snapshot, write_static
from aggregator.publish.html import STYLE, story_path, summary_text
from aggregator.web import App, SnapshotHolder
from tests.conftest import Workspace
from tests.feedgen import Item, rss
from tests.fixture_server import FeedServer
from tests.hostile import html_problems
from tests.newsdesk import EVENT_TITLE, Newsdesk, build, subscriptions


@pytest.fixture
def desk(ws: Workspace, server: FeedServer) -> Iterator[Newsdesk]:
    ws.write_config(stories={"enabled": True}, output={"entries": 20, "per_source": 10},
                    http={"base_url": "https://news.example.org/"})
    newsroom = build(server)
    ws.feeds(subscriptions(newsroom))
    ws.poll_all()
    yield newsroom


def pages(snapshot: Snapshot, prefix: str) -> list[str]:
    return sorted(p for p in snapshot.documents if p.startswith(prefix))


def links(body: bytes) -> list[str]:
    return re.findall(r'href="https://news\.example\.org/([^"]*)"', body.decode())


def test_the_pages_and_their_links(ws: Workspace, desk: Newsdesk) -> None:
    snapshot = Publisher(ws.store, ws.config()).build()
    assert pages(snapshot, "archive") == ["archive", "archive/2026-06-01.html", "archive/2026-06-02-2.html",
                                          "archive/2026-06-02.html", "archive/2026-06-03.html"]
    feeds = {f.id: f for f in ws.store.feeds()}
    assert pages(snapshot, "sources/") == sorted(f"sources/{fid}.html" for fid in feeds)
    home = snapshot.documents[""].body
    # A story reported by several outlets has a page (one of one report is all on its entry).
    shown = [m for m in links(home) if m.startswith("stories/")]
    assert len(shown) == home.count(b"Also reported by") == 1 and home.count(b"<article>") >= 15
    assert pages(snapshot, "stories/") == shown
    # Tag links open the tag's HTML page; the tag page keeps its feeds.
    assert [p for p in links(home) if p.startswith("tags/")] == ["tags/kurdistan.html", "tags/tech.html",
                                                                 "tags/world.html"]
    assert {"tags/world.atom", "tags/world.rss", "tags/world.json"} <= set(links(snapshot.documents["tags/world.html"].body))
    # "Older stories" goes on from the home page's last story, at its archive page.
    older = re.search(r'rel="next" href="https://news\.example\.org/(archive/[^"]+)">Older stories', home.decode())
    last_title = re.findall(r"<h2><a [^>]*>([^<]+)</a></h2>", home.decode())[-1]
    assert older and last_title.encode() in snapshot.documents[older.group(1)].body
    # The days link each other in reading order: newer to older.
    order = ["archive/2026-06-03.html", "archive/2026-06-02.html", "archive/2026-06-02-2.html",
             "archive/2026-06-01.html"]
    for newer, older in zip(order, order[1:]):
        assert re.search(rf'rel="next" href="https://news\.example\.org/{older}"', snapshot.documents[newer].body.decode())
        assert re.search(rf'rel="prev" href="https://news\.example\.org/{newer}"', snapshot.documents[older].body.decode())
    assert snapshot.documents["archive/2026-06-02.html"].body.count(b"<article>") == publish.ARCHIVE_PAGE
    assert snapshot.documents["archive/2026-06-02-2.html"].body.count(b"<article>") == 58 - publish.ARCHIVE_PAGE
    # Every page is valid HTML5 without active content; every link to us points at a document.
    for path, document in snapshot.documents.items():
        if path in ("", "feeds", "archive") or path.endswith(".html"):
            html5lib.HTMLParser(strict=True).parse(document.body)
            assert not html_problems(document.body.decode(), path, document=True, own_style=STYLE)
            for target in links(document.body):
                assert target.split("?")[0] in snapshot.documents or target in ("search", ""), (path, target)


def test_the_story_page_lists_every_outlet(ws: Workspace, desk: Newsdesk) -> None:
    snapshot = Publisher(ws.store, ws.config()).build()
    view = next(v for v in ws.store.stories_overview(100) if len(v.members) == 3)
    page = snapshot.documents[story_path(view.id)].body.decode()
    assert page.count("<li>") == 3 and "3 reports from 3 outlets" in page
    for member in view.members:
        assert f'href="{member.article.url}"' in page and member.feed.display_title in page
    assert re.findall(r'<time datetime="([^"]+)">', page) == ["2026-06-03T09:10:00Z", "2026-06-03T09:40:00Z",
                                                               "2026-06-03T10:05:00Z"]
    assert f"<h1>{EVENT_TITLE}</h1>" in page


def test_pages_are_rendered_again_only_when_what_they_show_changes(ws: Workspace, desk: Newsdesk,
                                                                   server: FeedServer) -> None:
    publisher = Publisher(ws.store, ws.config())
    first = publisher.build()
    again = publisher.build(first)
    assert all(again.documents[p] is d for p, d in first.documents.items())  # nothing changed: nothing rendered
    # A new story on the newest day from one outlet (its feed keeps its other entries).
    solar = Item(title="Solar farm opens south of Erbil", link=server.url("/news/tech/"), guid="solar",
                 date="Wed, 03 Jun 2026 11:00:00 +0000", summary="<p>Forty megawatts.</p>")
    server.update("/feeds/tech.xml", body=rss([solar, *desk.items["Tech Wire"]], title="Tech Wire",
                                              link=server.url("/news/tech/")))
    ws.poll_url(desk.feeds["Tech Wire"])
    # That poll ends a minute after the others: the last poll is an empty feed's updated time, and no page's else.
    with ws.store._writing() as conn:
        conn.execute("UPDATE feeds SET last_fetch_at = ? WHERE url = ?",
                     (iso(utcnow() + timedelta(minutes=1)), desk.feeds["Tech Wire"]))
    after = publisher.build(first)
    changed = {p for p, d in after.documents.items() if p not in first.documents or first.documents[p] is not d}
    unchanged = {p for p in after.documents if p not in changed}
    # The past days' pages, the other sources' pages and the story pages of untouched stories keep their objects.
    assert {"archive/2026-06-01.html", "archive/2026-06-02.html", "archive/2026-06-02-2.html"} <= unchanged
    tech = next(f.id for f in ws.store.feeds() if f.display_title == "Tech Wire")
    assert {p for p in changed if p.startswith("sources/")} == {f"sources/{tech}.html"}
    assert {"", "archive", "archive/2026-06-03.html", "latest.atom", "tags/tech.html"} <= changed
    assert "tags/kurdistan.html" in unchanged
    # ... and a rebuild from scratch gives the same bytes for every page.
    fresh = Publisher(ws.store, ws.config()).build()
    assert {p: d.body for p, d in fresh.documents.items()} == {p: d.body for p, d in after.documents.items()}


def test_source_and_archive_pages_follow_within_the_interval_when_they_are_costly(
        ws: Workspace, desk: Newsdesk, server: FeedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    publisher = Publisher(ws.store, ws.config())
    first = publisher.build()

    def add(title: str, minute: int) -> None:
        item = Item(title=title, link=server.url("/news/tech/"), guid=title, summary="<p>New.</p>",
                    date=f"Wed, 03 Jun 2026 11:{minute:02d}:00 +0000")
        server.update("/feeds/tech.xml", body=rss([item, *desk.items["Tech Wire"]], title="Tech Wire",
                                                  link=server.url("/news/tech/")))
        ws.poll_url(desk.feeds["Tech Wire"])

    # Cheap (a small install): the service's 30 s interval does not hold them back.
    add("Solar farm opens south of Erbil", 0)
    cheap = publisher.build(first, sources_every=30)
    assert b"Solar farm" in cheap.documents["archive/2026-06-03.html"].body
    # Costly (thousands of feeds): the home page at once, the source and archive pages at most every 30 s.
    monkeypatch.setattr(publish, "CHEAP_PAGES", -1.0)
    add("Wind farm opens north of Erbil", 1)
    held = publisher.build(cheap, sources_every=30)
    assert b"Wind farm" in held.documents[""].body
    assert held.documents["archive/2026-06-03.html"] is cheap.documents["archive/2026-06-03.html"]
    assert not any(b"Wind farm" in d.body for p, d in held.documents.items() if p.startswith(("sources/", "archive")))
    publisher.pages_built -= 30  # the interval has passed: the next build, even without a change, catches up
    caught_up = publisher.build(held, sources_every=30)
    assert b"Wind farm" in caught_up.documents["archive/2026-06-03.html"].body
    fresh = Publisher(ws.store, ws.config()).build()
    assert {p: d.body for p, d in fresh.documents.items()} == {p: d.body for p, d in caught_up.documents.items()}


def test_a_hidden_article_leaves_every_page(ws: Workspace, desk: Newsdesk) -> None:
    publisher = Publisher(ws.store, ws.config())
    first = publisher.build()
    assert sum(b"Citadel restoration" in d.body for d in first.documents.values()) >= 4  # home, archive, source, story
    ws.store.refilter(lambda article, feed: "config: block title: citadel" if "Citadel" in article.title else None)
    after = publisher.build(first)
    assert [p for p, d in after.documents.items() if b"Citadel restoration" in d.body] == []
    assert not any(b"Citadel" in d.body for d in Publisher(ws.store, ws.config()).build().documents.values())


def test_the_bounds(ws: Workspace, desk: Newsdesk, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "public"
    write_static(Publisher(ws.store, ws.config()).build(), out)
    assert len(list((out / "stories").iterdir())) == 1 and (out / "archive" / "2026-06-02-2.html").exists()
    monkeypatch.setattr(publish, "MAX_STORY_PAGES", 0)
    monkeypatch.setattr(publish, "MAX_SOURCE_PAGES", 2)
    monkeypatch.setattr(publish, "ARCHIVE_STORIES", 30)
    snapshot = Publisher(ws.store, ws.config()).build()
    stories = pages(snapshot, "stories/")
    assert stories == []
    home = snapshot.documents[""].body
    assert b"Also reported by" in home and b"/stories/" not in home  # no page, no link
    assert len(pages(snapshot, "sources/")) == 2
    sources_table = snapshot.documents["feeds"].body
    assert sorted(p for p in links(sources_table) if p.startswith("sources/")) == pages(snapshot, "sources/")
    # The newest 30 stories end inside the busy day: only whole days are kept.
    assert pages(snapshot, "archive") == ["archive", "archive/2026-06-03.html"]
    assert b"keeps the newest 30 stories" in snapshot.documents["archive"].body
    # The static mirror follows: pages that are no longer made are removed.
    write_static(snapshot, out)
    assert list((out / "stories").iterdir()) == []
    assert sorted(p.name for p in (out / "archive").iterdir()) == ["2026-06-03.html", "index.html"]


def _article(summary: str) -> Article:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    return Article(id="x", feed_id="f", entry_key="k", guid=None, url=None, canonical_url=None, title="t", authors=(),
                   summary=summary, content=None, categories=(), enclosures=(), image=None, language=None,
                   published_at=now, updated_at=None, first_seen_at=now, content_hash="h")


@pytest.mark.parametrize("summary, text", [
    ('<p>The text.<a href="https://x.example/1">Read more</a></p>', "The text."),
    ('<p>The text.</p><p><a href="https://x.example/1">Read more »</a></p>', "The text."),
    ("<p>The text … Continue reading The Title →</p>", "The text"),
    ("<p>The text [Read more...]</p>", "The text"),
    ("<p>We will read more books.</p>", "We will read more books."),  # a sentence is not a link label
    ("<p>See the report.<a href='https://x.example/'>The report</a></p>", "See the report. The report"),
])
def test_summary_text_without_read_more(summary: str, text: str) -> None:
    assert summary_text(_article(summary)) == text


def test_the_web_routes_serve_every_page(ws: Workspace, desk: Newsdesk) -> None:
    snapshot = Publisher(ws.store, ws.config()).build()
    app = App(SnapshotHolder(snapshot))

    def status(path: str) -> str:
        seen: list[str] = []
        b"".join(app({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda s, h: seen.append(s)))
        return seen[0]

    for path in snapshot.documents:
        if path.endswith(".html") or path in ("archive", "feeds"):
            assert status("/" + path) == "200 OK", path
    for alias in ("/archive/", "/archive/index.html", "/index.html", "/feeds/index.html"):
        assert status(alias) == "200 OK", alias
    for bad in ("/sources/../feeds", "/stories/x.html", "/archive/2026-06-02.atom", "/sources/ABC.html"):
        assert status(bad) == "404 Not Found", bad
