"""Regression tests for defects found in review: each states the behaviour
the defect broke."""

from __future__ import annotations

import json
import time
from datetime import timedelta

from aggregator.model import Outcome, utcnow
from aggregator.parse import parse_document, without_internal_subset
from aggregator.policy import PollFacts, Timing, next_poll_at
from aggregator.publish import Publisher
from tests.conftest import Workspace
from tests.feedgen import Item, rss, story
from tests.fixture_server import FeedServer, Handler

LAUGHS = (b'<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
          b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">')


def test_entity_declarations_are_removed_however_the_dtd_is_written() -> None:
    quoted = b'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "x>y" [' + LAUGHS + b']><rss version="2.0"><channel><title>t</title><item><title>x</title><link>http://e.com/1</link><description>&d;&d;&d;</description></item></channel></rss>'
    late = b'<?xml version="1.0"?><!-- ' + b"pad " * 30000 + b'--><!DOCTYPE rss [' + LAUGHS + b']><rss version="2.0"><channel><title>t</title><item><title>x</title><link>http://e.com/1</link><description>&d;&d;&d;</description></item></channel></rss>'
    tricky = b'<!DOCTYPE rss [<!ENTITY x "]>"><!-- ] > -->' + LAUGHS + b']><rss version="2.0"><channel><title>t</title><item><title>&d;</title><link>http://e.com/1</link></item></channel></rss>'
    for doc in (quoted, late, tricky):
        assert b"<!ENTITY" not in without_internal_subset(doc)
        feed = parse_document(doc, "http://e.com/feed", {"content-type": "application/rss+xml"})
        assert all(len(e.summary or "") + len(e.title) < 5000 for e in feed.entries)


def test_odd_values_and_lone_surrogates_in_a_json_feed_are_dropped_and_its_entries_kept(ws: Workspace, server: FeedServer) -> None:
    doc = {"version": "https://jsonfeed.org/version/1.1", "title": "x", "items": [
        {"id": "1", "url": "https://e.example/1", "title": "ok", "date_published": 1700000000, "content_html": 42},
        {"id": "\ud800", "url": "https://e.example/\ud8002", "title": "surrogates"}]}
    url = server.add("/feed.json", json.dumps(doc), content_type="application/feed+json")
    ws.feeds([url])
    report = ws.poll_url(url)
    assert report.outcome is Outcome.OK and report.counts.new == 2  # odd values ignored, the entries kept
    assert all("\ud800" not in a.id for a, _ in ws.store.articles())


def test_a_fetch_cut_by_the_deadline_is_a_timeout_not_a_short_body(ws: Workspace, server: FeedServer) -> None:
    body = rss([story(i) for i in range(3)]).encode()

    def trickle_then_close(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Connection", "close")  # no Content-Length: the end of the body is the end of the connection
        h.end_headers()
        for i in range(0, len(body), 200):
            h.wfile.write(body[i:i + 200])
            h.wfile.flush()
            time.sleep(0.2)  # the server's own slowness, not a test waiting for an event

    url = server.add("/slow", handler=trickle_then_close)
    ws.write_config(polling={"deadline": "1s", "timeout": "5s"})
    ws.feeds([url])
    report = ws.poll_url(url)
    assert report.outcome is Outcome.TIMEOUT and "total deadline" in (report.error or "")
    assert ws.store.articles() == []


def test_ttl_is_remembered_across_304s(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)], extra_channel="<ttl>180</ttl>"), etag='"v"')
    ws.feeds([url])
    ws.poll_url(url)
    first = ws.feed(url).next_poll_at
    assert ws.poll_url(url).outcome is Outcome.NOT_MODIFIED
    second = ws.feed(url).next_poll_at
    assert first and second and (second - utcnow()) > timedelta(hours=2.9)


def test_adaptive_interval_uses_every_entry_not_only_new_ones(ws: Workspace, server: FeedServer) -> None:
    now = utcnow()
    daily = [story(i, date=(now - timedelta(days=i + 1)).strftime("%a, %d %b %Y %H:%M:%S GMT")) for i in range(20)]
    url = server.add("/feed", rss(daily))
    ws.feeds([url])
    ws.poll_url(url)
    assert ws.feed(url).publish_interval == 86400
    burst = [story(100 + i, date=(now - timedelta(minutes=i)).strftime("%a, %d %b %Y %H:%M:%S GMT")) for i in range(3)]
    server.update("/feed", body=rss(burst + daily))
    ws.poll_url(url)
    # 3 new entries a minute apart among 20 daily ones: still about a day between stories (median gap).
    assert ws.feed(url).publish_interval == 86400


def test_retry_after_may_exceed_the_ceiling_up_to_its_own_cap() -> None:
    t = Timing(interval=60, min_interval=30, max_interval=3600, jitter=0, retry_after_max=7200)
    when = next_poll_at(utcnow(), PollFacts(Outcome.RATE_LIMITED, 1, retry_after=5400), t, None, None, __import__("random").Random(1))
    assert when is not None and timedelta(seconds=5390) < when - utcnow() <= timedelta(seconds=5400)


def test_deleting_a_representative_keeps_the_story_together(ws: Workspace, server: FeedServer) -> None:
    old = "Mon, 01 Jan 2018 10:00:00 GMT"
    urls = [server.add(f"/{n}", rss([story(1, guid=f"{n}-1", date=old if n == "a" else None)])) for n in "abc"]
    ws.feeds(urls)
    for url in urls:
        ws.poll_url(url)
    before = ws.store.latest(100, 10)
    assert len(before) == 1 and len(before[0].also) == 2
    # Only a's copy (dated 2018) is old enough for retention.
    result = ws.store.delete_older_than(utcnow() - timedelta(days=90), batch=10, now=utcnow())
    assert result.deleted == 1
    after = ws.store.latest(100, 10)
    assert len(after) == 1 and len(after[0].also) == 1  # b represents it now, c is still its duplicate


def test_tombstones_of_entries_still_in_the_feed_are_kept(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1), story(2)]))
    ws.feeds([url])
    ws.poll_url(url)
    ws.store.delete_older_than(utcnow() + timedelta(days=1), batch=10, now=utcnow() - timedelta(days=400))
    server.update("/feed", body=rss([story(1), story(2), story(3)]))  # 1 and 2 still listed
    ws.poll_url(url)
    assert ws.store.purge_tombstones(utcnow() - timedelta(days=360)) == 0  # seen again just now
    server.update("/feed", body=rss([story(3), story(4)]))  # 1 and 2 gone from the feed
    ws.poll_url(url, clock=lambda: utcnow() + timedelta(seconds=2))  # a later poll (times are stored to the second)
    assert ws.store.purge_tombstones(utcnow() + timedelta(seconds=5)) == 2


def test_tag_urls_are_encoded(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)]))
    ws.feeds([{"url": url, "tags": ["q&a?#1"]}])
    ws.poll_url(url)
    snapshot = Publisher(ws.store, ws.config()).build()
    assert "tags/q&a?#1.atom" in snapshot.documents  # the path as a server decodes it
    body = snapshot.documents["tags/q&a?#1.atom"].body.decode()
    assert 'href="http://127.0.0.1:8080/tags/q%26a%3F%231.atom"' in body
    # The home page links the tag's HTML page, which links the tag's feeds (issue 10, item 10).
    assert b'href="http://127.0.0.1:8080/tags/q%26a%3F%231.html"' in snapshot.documents[""].body
    assert b'href="http://127.0.0.1:8080/tags/q%26a%3F%231.atom"' in snapshot.documents["tags/q&a?#1.html"].body


def test_untitled_linkless_undated_entries_in_a_feed_are_not_dropped_if_they_have_text() -> None:
    doc = rss([Item(title=None, summary="<p>Only text</p>")]).encode()
    feed = parse_document(doc, "http://e.com/feed", {})
    assert [e.title for e in feed.entries] == ["Only text"]
