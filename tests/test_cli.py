"""The `aggregator` command as a user runs it: real subprocesses."""

from __future__ import annotations

import pytest

import json
from pathlib import Path

import yaml

from aggregator.model import Outcome
from tests.conftest import Workspace, run_cli
from tests.feedgen import Item, atom, jsonfeed, rss, story
from tests.fixture_server import FeedServer

JSON_FIELDS = {"id", "feed_url", "guid", "url", "canonical_url", "title", "authors", "published_at", "updated_at",
               "first_seen_at", "duplicate_of", "enclosures", "image"}


def test_poll_then_articles_json(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1, enclosure=("https://cdn.example.com/1.mp3", "audio/mpeg", 10)),
                              story(2, thumbnail="https://cdn.example.com/2.jpg")]))
    b = server.add("/b", atom([story(1, guid="urn:b:1", link="https://news.example.com/story/1?utm_source=b")]))
    broken = server.add("/broken", b"<html>nope</html>", content_type="text/html")
    ws.feeds([a, b, broken])
    proc = run_cli("poll", "--config", str(ws.config_path))
    assert proc.returncode == 0, proc.stderr
    assert "Polled 3 feeds" in proc.stdout and "2 ok" in proc.stdout and "1 failed" in proc.stdout
    assert "Articles: 3 new (1 of them duplicates of stories from other feeds)" in proc.stdout
    assert f"failed: {broken} <{broken}>: not a feed: the server sent an HTML page" in proc.stdout

    out = run_cli("articles", "--json", "--limit", "0", "--config", str(ws.config_path), check=True).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3
    for record in records:
        assert JSON_FIELDS <= set(record)
        assert record["first_seen_at"].endswith("Z") and record["published_at"].endswith("Z")
    by_feed = {(r["feed_url"], r["url"]): r for r in records}
    one_a = by_feed[(a, "http://news.example.com/story/1")]
    one_b = by_feed[(b, "https://news.example.com/story/1")]
    # Feeds are polled concurrently: whichever came first represents the story.
    assert (one_b["duplicate_of"], one_a["duplicate_of"]) in ((one_a["id"], None), (None, one_b["id"]))
    assert one_a["enclosures"] == [{"url": "https://cdn.example.com/1.mp3", "type": "audio/mpeg", "length": 10}]
    assert by_feed[(a, "http://news.example.com/story/2")]["image"] == "https://cdn.example.com/2.jpg"

    limited = run_cli("articles", "--limit", "1", "--feed", a, "--config", str(ws.config_path), check=True).stdout
    assert len(limited.strip().splitlines()) == 1 and "Story" in limited


def test_poll_one_feed_and_unknown_feed(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1)]))
    b = server.add("/b", rss([story(2)]))
    ws.feeds([a, b])
    proc = run_cli("poll", "--feed", a, "--config", str(ws.config_path))
    assert proc.returncode == 0 and "Polled 1 feed " in proc.stdout
    assert len(server.requests_for("/a")) == 1 and server.requests_for("/b") == []
    unknown = run_cli("poll", "--feed", "http://127.0.0.1:1/unknown", "--config", str(ws.config_path))
    assert unknown.returncode == 2
    assert "is not subscribed; add it with: aggregator feeds add" in unknown.stderr


def test_feeds_list_shows_state(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1), story(2)], title="Alpha News"))
    bad = server.add("/bad", b"x", status=500)
    ws.feeds([{"url": a, "tags": ["world"]}, bad])
    run_cli("poll", "--config", str(ws.config_path), check=True)
    out = run_cli("feeds", "list", "--json", "--config", str(ws.config_path), check=True).stdout
    rows = {r["url"]: r for r in map(json.loads, out.splitlines())}
    assert rows[a]["title"] == "Alpha News" and rows[a]["articles"] == 2 and rows[a]["tags"] == ["world"]
    assert rows[a]["last_status"] == 200 and rows[a]["next_poll_at"] and rows[a]["last_fetch_at"]
    assert rows[bad]["last_error"] == "HTTP 500 Internal Server Error" and rows[bad]["error_count"] == 1
    table = run_cli("feeds", "list", "--config", str(ws.config_path), check=True).stdout
    assert "Alpha News" in table and "HTTP 500 Internal Server Error" in table


def test_feeds_add_with_autodiscovery(ws: Workspace, server: FeedServer) -> None:
    feed = server.add("/news/feed.xml", rss([story(1)], title="Discovered News"))
    server.add("/", """<!doctype html><html><head><title>Site</title>
        <link rel="alternate" type="application/rss+xml" title="RSS" href="/news/feed.xml">
        </head><body>hello</body></html>""", content_type="text/html; charset=utf-8")
    proc = run_cli("feeds", "add", server.url("/"), "--tag", "World", "--config", str(ws.config_path))
    assert proc.returncode == 0, proc.stderr
    assert f"Added Discovered News <{feed}> (found on {server.url('/')})" in proc.stdout
    data = yaml.safe_load((ws.root / "feeds" / "added.yaml").read_text())
    assert data == {"feeds": [{"url": feed, "tags": ["world"]}]}
    again = run_cli("feeds", "add", feed, "--config", str(ws.config_path), check=True)
    assert "Already subscribed" in again.stdout
    nothing = run_cli("feeds", "add", server.url("/missing"), "--config", str(ws.config_path))
    assert nothing.returncode == 1 and "HTTP 404" in nothing.stderr


def test_feeds_add_direct_feed_to_chosen_file(ws: Workspace, server: FeedServer) -> None:
    feed = server.add("/feed.json", jsonfeed([story(1)]), content_type="application/feed+json")
    target = ws.root / "feeds" / "blogs.yaml"
    run_cli("feeds", "add", feed, "--file", str(target), "--config", str(ws.config_path), check=True)
    assert yaml.safe_load(target.read_text()) == {"feeds": [{"url": feed}]}


def test_opml_import_export_round_trip(ws: Workspace, tmp_path: Path) -> None:
    opml = tmp_path / "subs.opml"
    opml.write_text("""<?xml version="1.0"?><opml version="2.0"><head><title>mine</title></head><body>
      <outline text="News"><outline text="Middle East">
        <outline type="rss" text="Rudaw" xmlUrl="https://www.rudaw.net/english/rss"/></outline>
        <outline type="rss" text="BBC" xmlUrl="https://feeds.bbci.co.uk/news/world/rss.xml"/></outline>
    </body></opml>""")
    proc = run_cli("feeds", "import", str(opml), "--config", str(ws.config_path), check=True)
    assert "Imported 2 feeds into" in proc.stdout
    assert "already subscribed" in run_cli("feeds", "import", str(opml), "--config", str(ws.config_path)).stdout
    exported = run_cli("feeds", "export", "--config", str(ws.config_path), check=True).stdout
    round_trip = tmp_path / "round.opml"
    round_trip.write_text(exported)
    from aggregator.subscriptions import load_opml_feeds

    subs = {s.url: s for s in load_opml_feeds(round_trip).feeds}
    assert subs["https://www.rudaw.net/english/rss"].tags[:2] == ("news", "middle-east")
    assert subs["https://www.rudaw.net/english/rss"].title == "Rudaw"
    assert "news" in subs["https://feeds.bbci.co.uk/news/world/rss.xml"].tags


def test_config_errors_exit_2_with_the_message(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("polling:\n  interval: soon\n")
    proc = run_cli("poll", "--config", str(tmp_path / "config.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {tmp_path / 'config.yaml'}: polling.interval: "
                                   "expected a duration like 90s, 15m, 2h or 1d, got 'soon'")


def test_bad_feed_entry_is_named_and_the_rest_poll(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1)]))
    ws.feeds([a, {"url": "notaurl"}])
    proc = run_cli("poll", "--config", str(ws.config_path))
    assert proc.returncode == 0
    assert "feed #2 (notaurl): url: expected an http:// or https:// URL" in proc.stderr
    assert "Polled 1 feed" in proc.stdout


@pytest.mark.sqlite_only
def test_default_config_is_in_the_working_directory(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1)]))
    ws.feeds([a])
    proc = run_cli("poll", cwd=ws.root)
    assert proc.returncode == 0 and "Polled 1 feed" in proc.stdout
    assert (ws.root / "test.db").exists()


def test_hostile_smoke_set(ws: Workspace, server: FeedServer) -> None:
    """Each broken document fails with a clear error, stores nothing bad,
    and never stops the good feed next to it."""
    xxe = (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a SYSTEM "file:///etc/passwd">'
           f'<!ENTITY b SYSTEM "{server.url("/secret")}">]><rss version="2.0"><channel><title>x</title>'
           '<item><title>t&a;&b;</title><link>http://e.com/x</link><description>&a;&b;</description></item></channel></rss>')
    server.add("/secret", b"TOP SECRET")
    paths = {
        "/not-xml": (b"hello world", {}),
        "/empty": (b"", {}),
        "/truncated": (b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><item><title>ok</title>'
                       b'<link>http://e.com/t1</link></item><item><title>cut', {}),
        "/oversized": (b"<rss>" + b" " * 11_000_000 + b"</rss>", {}),
        "/wrong-type": (rss([story(7)]).encode(), {"content_type": "text/plain"}),
        "/xxe": (xxe.encode(), {}),
    }
    urls = {p: server.add(p, body, **kw) for p, (body, kw) in paths.items()}
    good = server.add("/good", rss([story(1)]))
    ws.feeds([good, *urls.values()])
    reports = {r.url: r for r in ws.poll_all()}
    outcome = {p: (reports[u].outcome, reports[u].error) for p, u in urls.items()}
    assert outcome["/not-xml"][0] is Outcome.PARSE_ERROR
    assert outcome["/not-xml"][1].startswith("not a feed: no RSS, Atom or JSON Feed document found (XML error at line")
    assert outcome["/empty"] == (Outcome.PARSE_ERROR, "empty document: the server sent no content")
    assert outcome["/truncated"][0] is Outcome.OK
    assert "ok" in [a.title for a, _ in ws.store.articles(feed_id=ws.feed(urls["/truncated"]).id)]
    assert outcome["/oversized"][0] is Outcome.TOO_LARGE
    assert outcome["/wrong-type"][0] is Outcome.OK and reports[urls["/wrong-type"]].counts.new == 1
    assert outcome["/xxe"][0] is Outcome.OK
    assert reports[good].outcome is Outcome.OK and reports[good].counts.new == 1
    assert server.requests_for("/secret") == []  # the external entity was never fetched
    dump = json.dumps([a.__dict__ for a, _ in ws.store.articles()], default=str)
    assert "TOP SECRET" not in dump and "root:x:" not in dump


def test_what_a_poll_drops_is_counted_per_feed_and_in_metrics(ws: Workspace, server: FeedServer) -> None:
    from aggregator.metrics import Metrics

    items = [story(1), story(1), story(2), Item(title=None, link=None, guid=None, date=None, summary=None)]
    url = server.add("/dups", rss(items))
    ws.write_config(output={"backfill": 1})
    ws.feeds([url])
    metrics = Metrics()
    ws.poll_all(metrics=metrics)
    listed = json.loads(run_cli("feeds", "list", "--json", "--config", str(ws.config_path), check=True).stdout)
    assert listed["last_poll_counts"] == {"entries": 4, "capped": 0, "backfilled": 1,
                                          "folded:empty-entry": 1, "folded:same-key-in-document": 1}
    exposition = metrics.exposition().decode()
    assert 'aggregator_articles_total{result="backfilled"} 1.0' in exposition
    assert 'aggregator_articles_total{result="folded:same-key-in-document"} 1.0' in exposition
