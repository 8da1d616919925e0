"""Stories end to end (issue 11): the same event from two outlets, with
different URLs and headlines, is one entry in every output, which lists the
other outlet; re-polls, restarts and guid flips change nothing a subscriber
sees; hand corrections (split, join) stick."""

from __future__ import annotations

import json
from datetime import timedelta

import feedparser

from aggregator.model import utcnow
from aggregator.publish import Publisher
from tests.conftest import Workspace, run_cli
from tests.feedgen import Item, rss
from tests.fixture_server import FeedServer

NOW = utcnow().replace(microsecond=0)


def _date(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).strftime("%a, %d %b %Y %H:%M:%S GMT")


# Three events reported by both outlets (different URLs, headlines and words), and one story each of their own.
EVENTS = {
    "quake": (
        ("Earthquake of magnitude 6.1 strikes Malatya in eastern Turkey",
         "A magnitude 6.1 earthquake struck Malatya province in eastern Turkey on Monday, the disaster agency "
         "AFAD said, damaging buildings in Malatya and Adiyaman."),
        ("Strong quake hits Turkey's Malatya province, buildings damaged",
         "Turkey's disaster agency AFAD said the 6.1 magnitude quake was centred in Malatya; buildings were "
         "damaged in Malatya and neighbouring Adiyaman, and rescue teams were sent."),
    ),
    "speaker": (
        ("Iraqi parliament elects Mahmoud al-Mashhadani as speaker after deadlock",
         "Iraq's parliament elected Mahmoud al-Mashhadani as its speaker on Thursday, ending a deadlock that had "
         "left the post empty for nearly a year in Baghdad."),
        ("Mashhadani chosen as Iraq parliament speaker, ending year-long vacancy",
         "Lawmakers in Baghdad chose Mahmoud al-Mashhadani to be speaker of Iraq's parliament, filling a post "
         "vacant for almost a year of deadlock."),
    ),
    "vote": (
        ("Kurdistan Region votes in long-delayed parliamentary election",
         "Voters in the Kurdistan Region of Iraq cast ballots on Sunday in a parliamentary election delayed "
         "since 2022, with the KDP and PUK competing for Erbil and Sulaymaniyah."),
        ("Iraqi Kurds cast ballots in first Kurdistan parliament election since 2018",
         "Polls opened across the Kurdistan Region for a parliamentary election delayed for two years; the KDP "
         "and the PUK lead the race in Erbil and Sulaymaniyah."),
    ),
}
ALONE = {
    "a": ("Erbil football club wins the Iraqi league title", "Erbil SC beat Al-Zawraa 2-1 to take the championship."),
    "b": ("Heavy snow closes mountain roads near Halabja", "Snowfall of up to 40 cm closed roads around Halabja."),
}


def _items(outlet: int, site: str, guid_prefix: str = "") -> list[Item]:
    items = []
    for hours, (key, versions) in enumerate(EVENTS.items()):
        title, lead = versions[outlet]
        items.append(Item(title=title, link=f"{site}/{key}-{outlet}", guid=f"{guid_prefix}{site}/{key}-{outlet}",
                          date=_date(hours * 5 + outlet), summary=f"<p>{lead}</p>"))
    title, lead = ALONE["ab"[outlet]]
    items.append(Item(title=title, link=f"{site}/alone", guid=f"{guid_prefix}{site}/alone", date=_date(20),
                      summary=f"<p>{lead}</p>"))
    return items


def _newsroom(ws: Workspace, server: FeedServer) -> tuple[str, str]:
    ws.write_config(stories={"enabled": True}, output={"backfill": 1000})
    a = server.add("/a", rss(_items(0, "https://rudaw.example"), title="Outlet A"))
    b = server.add("/b", rss(_items(1, "https://k24.example"), title="Outlet B"))
    ws.feeds([a, b])
    return a, b


def _latest(ws: Workspace) -> dict[str, bytes]:
    """The story outputs (not the sources page, which shows each poll's outcome)."""
    snapshot = Publisher(ws.store, ws.config()).build()
    return {path: doc.body for path, doc in snapshot.documents.items() if path not in ("feeds", "opml")}


def test_two_outlets_three_events_make_three_stories_in_every_output(ws: Workspace, server: FeedServer) -> None:
    a, b = _newsroom(ws, server)
    ws.poll_url(a)
    ws.poll_url(b)
    docs = _latest(ws)
    atom = feedparser.parse(docs["latest.atom"])
    assert not atom.bozo
    titles = {e.title for e in atom.entries}
    # One entry per event (the first outlet's), plus each outlet's story of its own.
    assert titles == {v[0][0] for v in EVENTS.values()} | {ALONE["a"][0], ALONE["b"][0]}
    for entry in atom.entries:
        related = [link for link in entry.links if link.rel == "related"]
        if entry.title in ALONE.values() or entry.title in (ALONE["a"][0], ALONE["b"][0]):
            assert related == []
            continue
        assert len(related) == 1 and related[0].href.startswith("https://k24.example/")
        assert related[0].title.startswith("Outlet B: ")
        assert "Also reported by" in entry.content[0].value
    items = json.loads(docs["latest.json"])["items"]
    stories = {item["title"]: item["_story"] for item in items}
    quake = stories[EVENTS["quake"][0][0]]
    assert quake["size"] == 2 and quake["related"] == [
        {"url": "https://k24.example/quake-1", "title": EVENTS["quake"][1][0], "source": "Outlet B"}]
    assert stories[ALONE["a"][0]] == {"id": stories[ALONE["a"][0]]["id"], "size": 1, "related": []}
    rss_doc = feedparser.parse(docs["latest.rss"])
    quake_item = next(e for e in rss_doc.entries if e.title == EVENTS["quake"][0][0])
    assert "Also reported by" in quake_item.description and "Outlet B" in quake_item.description
    page = docs[""].decode()
    assert "Also reported by" in page and "(2 outlets)" in page


def test_articles_json_story_id_and_the_stories_command(ws: Workspace, server: FeedServer) -> None:
    _newsroom(ws, server)
    run_cli("poll", "--no-progress", "--config", str(ws.config_path), check=True)
    rows = [json.loads(line) for line in run_cli("articles", "--json", "--limit", "0", "--config",
                                                  str(ws.config_path), check=True).stdout.splitlines()]
    assert len(rows) == 8 and all(r["story_id"] for r in rows)
    by_story: dict[str, list[dict]] = {}
    for row in rows:
        by_story.setdefault(row["story_id"], []).append(row)
    assert sorted(len(group) for group in by_story.values()) == [1, 1, 2, 2, 2]
    for group in by_story.values():
        founders = [r for r in group if r["id"] == r["story_id"]]
        assert len(founders) == 1  # the story's id is its first article's id
        assert len({r["feed_id"] for r in group}) == len(group)  # never two articles of one feed
        for row in group:
            assert (row["story_score"] is None) == (row is founders[0])
            assert row["story_score"] is None or 0.22 <= row["story_score"] <= 1
    listing = run_cli("stories", "--json", "--config", str(ws.config_path), check=True).stdout.splitlines()
    views = [json.loads(line) for line in listing]
    assert sorted(v["size"] for v in views) == [1, 1, 2, 2, 2]
    joined = [m for v in views for m in v["articles"] if m["rule"] == "similar"]
    assert len(joined) == 3 and all(m["shared_terms"] for m in joined)
    text = run_cli("stories", "--config", str(ws.config_path), check=True).stdout
    assert "Outlet A" in text and "Outlet B" in text and "similar 0." in text


def test_repoll_restart_and_guid_flip_change_nothing_a_subscriber_sees(ws: Workspace, server: FeedServer) -> None:
    _newsroom(ws, server)
    ws.poll_all()
    before = _latest(ws)
    ws.poll_all()
    assert _latest(ws) == before  # a re-poll: byte-identical outputs
    ws.close()  # a restart: a new store on the same file
    assert _latest(ws) == before
    server.update("/b", body=rss(_items(1, "https://k24.example", guid_prefix="urn:flip:"), title="Outlet B"))
    ws.poll_all()
    after = feedparser.parse(_latest(ws)["latest.atom"]).entries
    assert [(e.id, e.title) for e in after] == [(e.id, e.title) for e in feedparser.parse(before["latest.atom"]).entries]


def test_split_and_join_persist_across_a_repoll(ws: Workspace, server: FeedServer) -> None:
    _newsroom(ws, server)
    config = str(ws.config_path)
    run_cli("poll", "--no-progress", "--config", config, check=True)

    def articles() -> dict[str, dict]:
        out = run_cli("articles", "--json", "--limit", "0", "--config", config, check=True).stdout
        return {row["url"]: row for row in map(json.loads, out.splitlines())}

    rows = articles()
    quakes = [rows["https://rudaw.example/quake-0"], rows["https://k24.example/quake-1"]]
    assert quakes[0]["story_id"] == quakes[1]["story_id"]
    quake_b = next(q for q in quakes if q["id"] != q["story_id"])  # whichever outlet was polled second
    split = run_cli("stories", "split", quake_b["id"], "--config", config)
    assert split.returncode == 0, split.stderr
    alone_a, alone_b = rows["https://rudaw.example/alone"], rows["https://k24.example/alone"]
    joined = run_cli("stories", "join", alone_b["id"], alone_a["id"], "--config", config)
    assert joined.returncode == 0, joined.stderr
    for _ in range(2):  # the corrections stick through re-polls (even of changed documents)
        rows = articles()
        assert rows[quake_b["url"]]["story_id"] == quake_b["id"]
        assert rows["https://k24.example/alone"]["story_id"] == rows["https://rudaw.example/alone"]["story_id"]
        run_cli("poll", "--no-progress", "--config", config, check=True)
    ids_before = {row["id"] for row in rows.values()}
    assert ids_before == {row["id"] for row in articles().values()}  # no id ever changes
    refused = run_cli("stories", "join", rows["https://rudaw.example/quake-0"]["id"],
                      rows["https://rudaw.example/speaker-0"]["id"], "--config", config)
    assert refused.returncode != 0 and "two articles of one feed" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_feed_with_cluster_false_never_joins(ws: Workspace, server: FeedServer) -> None:
    ws.write_config(stories={"enabled": True})
    a = server.add("/a", rss(_items(0, "https://rudaw.example"), title="Outlet A"))
    b = server.add("/b", rss(_items(1, "https://k24.example"), title="Outlet B"))
    ws.feeds([a, {"url": b, "cluster": False}])
    ws.poll_all()
    assert len(ws.store.latest(100, 10)) == 8
    assert all(story.size == 1 and not story.also for story in ws.store.latest(100, 10))


def test_the_story_index_names_the_stories_of_a_key_unless_too_many_articles_carry_it(
    ws: Workspace, server: FeedServer
) -> None:
    ws.write_config(stories={"enabled": True}, output={"backfill": 1000})
    items = [Item(title=f"Erbil council meets on water plan {i}", link=f"https://c.example/{i}",
                  guid=f"https://c.example/{i}", date=_date(i / 10), summary="<p>Erbil council water plan.</p>")
             for i in range(30)]  # fmt: skip
    url = server.add("/council", rss(items, title="Council"))
    ws.feeds([url])
    ws.poll_all()
    feed = ws.feed(url)
    with ws.store.ingest(feed.id) as tx:
        around = (NOW - timedelta(days=1), NOW + timedelta(hours=1))
        listed = tx.story_index_rows(["erbil", "nowhere"], *around, most=30)
        common = tx.story_index_rows(["erbil"], *around, most=29)
        narrow = tx.story_index_rows(["erbil"], NOW - timedelta(minutes=45), NOW, most=29)
    erbil = listed["erbil"]
    assert erbil is not None and len(erbil) == 30 and len(set(erbil)) == 30  # one story each: same feed
    assert listed["nowhere"] == []
    assert common == {"erbil": None}  # 30 > 29: too common to name candidates
    assert narrow["erbil"] is not None and len(narrow["erbil"]) == 8  # the window bounds it: 0-42 minutes ago


def test_a_new_feeds_held_backfill_is_neither_compared_nor_joined(ws: Workspace, server: FeedServer) -> None:
    """Held articles never reach an output: each stays its own story, out of
    the story index, so a later outlet's report joins nothing invisible."""
    ws.write_config(stories={"enabled": True}, output={"backfill": 1})
    a = server.add("/a", rss(_items(0, "https://rudaw.example"), title="Outlet A"))
    b = server.add("/b", rss(_items(1, "https://k24.example"), title="Outlet B"))
    ws.feeds([a, b])
    ws.poll_url(a)
    ws.poll_url(b)
    rows = ws.store._read("SELECT seq, held, story_id, id FROM articles ORDER BY seq")
    held = [r for r in rows if r["held"]]
    assert len(held) == len(rows) - 2  # one article of each feed's first poll is shown
    assert all(r["story_id"] == r["id"] for r in held)  # each its own story
    indexed = {r[0] for r in ws.store._read("SELECT DISTINCT seq FROM story_index")}
    assert indexed == {r["seq"] for r in rows if not r["held"]}


def test_a_first_poll_computes_story_features_only_for_what_it_may_show() -> None:
    """Where the document is parsed: features for the newest `features_for`
    dated entries and every undated one (whatever dedupe then shows but was
    left out is computed in the transaction, see the test above)."""
    from aggregator.worker import parse_for_ingest

    items = [Item(title=f"Story {n} about the harbour", link=f"https://a.example/{n}", date=_date(n)) for n in range(4)]
    items.append(Item(title="Undated story about the harbour", link="https://a.example/undated"))
    body = rss(items).encode()
    parsed = parse_for_ingest(body, "https://a.example/feed", {}, NOW, {}, features_for=2)
    with_features = {e.title for e in parsed.entries if e.story_features}
    assert with_features == {"Story 0 about the harbour", "Story 1 about the harbour", "Undated story about the harbour"}
    every = parse_for_ingest(body, "https://a.example/feed", {}, NOW, {})
    assert all(e.story_features for e in every.entries)
