"""Each identity layer of DESIGN §4, through the real pipeline: fixture
server, fetcher, parser, planner, SQLite."""

from __future__ import annotations

from aggregator.model import Outcome
from tests.conftest import Workspace
from tests.feedgen import Item, atom, rss, story
from tests.fixture_server import FeedServer


def articles(ws: Workspace, url: str | None = None) -> list:
    feed_id = ws.feed(url).id if url else None
    return [a for a, _ in ws.store.articles(feed_id=feed_id)]


def test_repoll_unchanged_or_reordered_creates_nothing(ws: Workspace, server: FeedServer) -> None:
    items = [story(i) for i in range(5)]
    url = server.add("/feed", rss(items))
    ws.feeds([url])
    assert ws.poll_url(url).counts.new == 5
    ids = {a.url: a.id for a in articles(ws)}
    assert ws.poll_url(url).outcome is Outcome.UNCHANGED
    server.update("/feed", body=rss(list(reversed(items))))
    report = ws.poll_url(url)
    assert report.outcome is Outcome.OK and report.counts.new == 0 and report.counts.unchanged == 5
    assert {a.url: a.id for a in articles(ws)} == ids


def test_guid_flip_http_to_https_keeps_the_article(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1, guid="http://news.example.com/story/1")]))
    ws.feeds([url])
    ws.poll_url(url)
    [before] = articles(ws)
    server.update("/feed", body=rss([story(1, guid="https://news.example.com/story/1",
                                          link="https://news.example.com/story/1")]))
    report = ws.poll_url(url)
    assert report.counts.new == 0
    assert report.counts.folded == {"same-canonical-url-in-feed": 1}
    [after] = articles(ws)
    assert after.id == before.id == "http://news.example.com/story/1"
    # And the new guid is remembered: the next poll finds it by key directly.
    server.update("/feed", body=rss([story(1, guid="https://news.example.com/story/1",
                                          link="https://news.example.com/story/1", title="Story 1 (edited)")]))
    report = ws.poll_url(url)
    assert report.counts.new == 0 and report.counts.updated == 1 and not report.counts.folded


def test_slug_change_in_guid_with_same_link(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1, guid="https://news.example.com/2026/old-slug",
                                         link="https://news.example.com/p/1?utm_source=rss")]))
    ws.feeds([url])
    ws.poll_url(url)
    server.update("/feed", body=rss([story(1, guid="https://news.example.com/2026/new-slug",
                                          link="https://news.example.com/p/1?utm_source=twitter")]))
    assert ws.poll_url(url).counts.new == 0
    assert len(articles(ws)) == 1


def test_guidless_entries_use_links(ws: Workspace, server: FeedServer) -> None:
    items = [Item(title=f"T{i}", link=f"https://blog.example.com/{i}", date="Mon, 01 Jun 2026 10:00:00 GMT")
             for i in range(3)]
    url = server.add("/feed", rss(items))
    ws.feeds([url])
    assert ws.poll_url(url).counts.new == 3
    stored = articles(ws)
    assert {a.entry_key for a in stored} == {f"https://blog.example.com/{i}" for i in range(3)}
    assert all(a.id.startswith("tag:") for a in stored)  # no guid: minted ids
    server.update("/feed", body=rss(list(reversed(items)) + [Item(title="T9", link="https://blog.example.com/9")]))
    assert ws.poll_url(url).counts.new == 1


def test_entries_without_guid_or_link_use_title_and_date(ws: Workspace, server: FeedServer) -> None:
    items = [Item(title="Alert A", date="Mon, 01 Jun 2026 10:00:00 GMT"), Item(title="Alert B", date="Mon, 01 Jun 2026 11:00:00 GMT")]
    url = server.add("/feed", rss(items))
    ws.feeds([url])
    assert ws.poll_url(url).counts.new == 2
    server.update("/feed", body=rss(list(reversed(items))))
    assert ws.poll_url(url).counts.new == 0


def test_duplicate_guids_in_one_fetch_fall_back_to_links(ws: Workspace, server: FeedServer) -> None:
    items = [Item(title=f"T{i}", guid="same-guid", link=f"https://e.example.com/{i}") for i in range(3)]
    url = server.add("/feed", rss(items))
    ws.feeds([url])
    report = ws.poll_url(url)
    assert report.counts.new == 3
    assert {a.entry_key for a in articles(ws)} == {f"https://e.example.com/{i}" for i in range(3)}


def test_same_story_in_two_feeds_is_one_story(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1, guid="a-1", link="http://www.news.example.com/world/1?utm_source=a&utm_medium=rss")]))
    b = server.add("/b", atom([story(1, guid="urn:b:1", link="https://news.example.com/world/1/?fbclid=xyz")]))
    ws.feeds([a, b])
    ra = ws.poll_url(a)
    rb = ws.poll_url(b)
    assert (ra.counts.new, ra.counts.duplicates) == (1, 0)
    assert (rb.counts.new, rb.counts.duplicates) == (1, 1)
    [first] = articles(ws, a)
    [second] = articles(ws, b)
    assert first.duplicate_of is None
    assert second.duplicate_of == first.id
    assert first.canonical_url == second.canonical_url == "https://news.example.com/world/1"
    assert first.url == "http://www.news.example.com/world/1"  # published link keeps scheme, minus trackers
    stories = ws.store.latest(100, 10)
    assert len(stories) == 1 and stories[0].also[0].source.feed_id == ws.feed(b).id


def test_a_third_feed_points_at_the_first_representative(ws: Workspace, server: FeedServer) -> None:
    urls = [server.add(f"/{n}", rss([story(1, guid=f"{n}-1")])) for n in "abc"]
    ws.feeds(urls)
    for url in urls:
        ws.poll_url(url)
    first = articles(ws, urls[0])[0]
    assert [articles(ws, u)[0].duplicate_of for u in urls] == [None, first.id, first.id]


def test_edited_entry_updates_in_place(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1, summary="<p>First version</p>")]))
    ws.feeds([url])
    ws.poll_url(url)
    [before] = articles(ws)
    server.update("/feed", body=rss([story(1, summary="<p>Corrected version</p>", title="Story 1 (corrected)")]))
    report = ws.poll_url(url)
    assert (report.counts.new, report.counts.updated) == (0, 1)
    [after] = articles(ws)
    assert after.id == before.id and after.first_seen_at == before.first_seen_at
    assert after.title == "Story 1 (corrected)" and after.summary == "<p>Corrected version</p>"
    assert after.updated_at is not None and after.published_at == before.published_at


def test_shared_link_in_one_document_is_not_an_identity(ws: Workspace, server: FeedServer) -> None:
    # A podcast linking every episode to its show page: each episode is its own article.
    items = [Item(title=f"Episode {i}", guid=f"ep-{i}", link="https://pod.example.com/show") for i in range(3)]
    url = server.add("/feed", rss(items))
    ws.feeds([url])
    assert ws.poll_url(url).counts.new == 3


def test_output_ids(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1, guid="https://a.example.com/1", link="https://a.example.com/1"),
                              story(2, guid="12345", link="https://a.example.com/2")]))
    b = server.add("/b", rss([story(3, guid="https://a.example.com/1", link="https://b.example.com/3")]))
    ws.feeds([a, b])
    ws.poll_url(a)
    ws.poll_url(b)
    ids = {x.url: x.id for x in articles(ws)}
    assert ids["https://a.example.com/1"] == "https://a.example.com/1"  # its own absolute id
    assert ids["https://a.example.com/2"].startswith("tag:")  # "12345" is no URI
    assert ids["https://b.example.com/3"].startswith("tag:")  # already taken by feed a's article
    assert len(set(ids.values())) == 3


def test_undated_entry_gets_first_seen_and_keeps_it(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([Item(title="Undated", link="https://e.example.com/u")]))
    ws.feeds([url])
    ws.poll_url(url)
    [article] = articles(ws)
    assert article.published_at == article.first_seen_at
    server.update("/feed", body=rss([Item(title="Undated!", link="https://e.example.com/u")]))
    ws.poll_url(url)
    [again] = articles(ws)
    assert again.published_at == article.first_seen_at


def test_future_dated_entry_is_clamped_to_first_seen(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([Item(title="From the future", link="https://e.example.com/f",
                                        date="Tue, 01 Jan 2999 00:00:00 GMT")]))
    ws.feeds([url])
    ws.poll_url(url)
    [article] = articles(ws)
    assert article.published_at == article.first_seen_at
