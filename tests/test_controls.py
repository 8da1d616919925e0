"""The desk's controls (issue 13): filters, saved searches, per-feed
settings and a quiet first poll, through the real commands and outputs."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from pathlib import Path

import feedparser
import pytest
import yaml

from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.filters import RuleSet, Subject, compile_rules, hidden_by
from aggregator.model import utcnow
from aggregator.publish import Publisher
from aggregator.query import QueryError, parse, to_fts5
from aggregator.subscriptions import load_subscriptions
from tests.conftest import Workspace, run_cli
from tests.feedgen import Item, rss, story
from tests.fixture_server import FeedServer


def _date(hours_ago: float) -> str:
    return (utcnow() - timedelta(hours=hours_ago)).strftime("%a, %d %b %Y %H:%M:%S GMT")


# --- filters: the rules themselves ------------------------------------------------------------------------


def _hides(raw: dict, **subject: object) -> str | None:
    return hidden_by(Subject(**subject), [compile_rules(raw, "everything")])  # type: ignore[arg-type]


def test_words_are_whole_case_and_accent_insensitive() -> None:
    rules = {"block": [{"title": "sponsored"}, {"text": "Café crème"}]}
    assert _hides(rules, title="SPONSORED: the best deals") == "everything: block title: sponsored"
    assert _hides(rules, title="Our sponsor speaks") is None  # a whole word, not a prefix
    assert _hides(rules, text="They met at the cafe CREME on Monday") == "everything: block text: Café crème"
    assert _hides(rules, text="café and later crème") is None  # a phrase: the words in a row


def test_regular_expressions_fields_and_keep() -> None:
    rules = {"block": [{"text": "re:casino|betting"}, {"url": "re:/sponsored/"}, {"author": "PR Desk"},
                       {"category": ["Ads", "Promotions"]}]}
    assert _hides(rules, text="New BETTING rules") == "everything: block text: re:casino|betting"
    assert _hides(rules, url="https://x.example/sponsored/123") is not None
    assert _hides(rules, authors=("pr desk",)) is not None and _hides(rules, categories=("promotions",)) is not None
    keep = {"keep": [{"category": "politics"}]}
    assert _hides(keep, categories=("Politics",)) is None
    assert _hides(keep, categories=("Sport",)) == "everything: keep (no keep rule matched)"


def test_a_pattern_that_would_backtrack_forever_runs_in_linear_time() -> None:
    rules = {"block": [{"title": "re:(a+)+$"}, {"text": "re:(x+x+)+y"}]}
    started = time.monotonic()
    assert _hides(rules, title="a" * 90_000 + "!", text="x" * 90_000) is None
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("rule,problem", [
    ({"titel": "x"}, "unknown field 'titel' (expected one of: title, text, author, category, url)"),
    ({"text": r"re:(a)\1"}, r"text: invalid regular expression 're:(a)\\1': invalid escape sequence"),
    ({"text": "re:(?<=a)b"}, "text: invalid regular expression"),
    ({"title": "!!!"}, "has no words to match"),
    ({"title": "a", "text": "b"}, "expected one field and its words"),
])
def test_a_bad_rule_is_named_with_its_file_entry_and_problem(tmp_path: Path, rule: dict, problem: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"filters": {"block": [{"title": "fine"}, rule]}}))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert f"{config}: filters: block[2]: " in str(info.value) and problem in str(info.value), str(info.value)
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "x.yaml").write_text(yaml.safe_dump({"feeds": [{"url": "https://a.example/f", "filters": {"keep": [rule]}},
                                                            "https://b.example/f"]}))
    subs = load_subscriptions(feeds)
    assert [s.url for s in subs.feeds] == ["https://b.example/f"]
    assert "x.yaml: feed #1 (https://a.example/f): filters: keep[1]: " in subs.errors[0] and problem in subs.errors[0]


# --- filters: end to end -------------------------------------------------------------------------------------------


def _feed(server: FeedServer) -> str:
    items = [
        Item(title="Sponsored: win big tonight", link="http://n.example/1", guid="n1", date=_date(1),
             summary="<p>Bonus offers</p>"),
        Item(title="Erbil council approves budget", link="http://n.example/2", guid="n2", date=_date(2),
             summary="<p>The council voted.</p>", categories=["Politics"]),
        Item(title="Derby preview", link="http://n.example/3", guid="n3", date=_date(3),
             summary="<p>Casino sponsors the stadium.</p>", categories=["Sport"]),
    ]
    return server.add("/news", rss(items, title="News desk"))


def _outputs(ws: Workspace) -> str:
    snapshot = Publisher(ws.store, ws.config()).build()
    return "".join(d.body.decode() for p, d in snapshot.documents.items() if p not in ("feeds", "opml"))


def _articles(ws: Workspace) -> dict[str, dict]:
    out = run_cli("articles", "--json", "--limit", "0", "--config", str(ws.config_path), check=True).stdout
    return {row["title"]: row for row in map(json.loads, out.splitlines())}


def test_a_blocked_article_is_stored_with_its_rule_and_in_no_output(ws: Workspace, server: FeedServer) -> None:
    url = _feed(server)
    ws.write_config(filters={"block": [{"title": "sponsored"}]}, tags={"local": {"filters": {"block": [{"text": "casino"}]}}})
    ws.feeds([{"url": url, "tags": ["local"]}])
    ws.poll_all()
    rows = _articles(ws)
    assert rows["Sponsored: win big tonight"]["hidden_by"] == "everything: block title: sponsored"
    assert rows["Derby preview"]["hidden_by"] == "tag:local: block text: casino"
    assert rows["Erbil council approves budget"]["hidden_by"] is None
    text = _outputs(ws)
    assert "Erbil council approves budget" in text
    assert "Sponsored" not in text and "Derby preview" not in text


def test_filters_apply_after_a_rule_change_and_filters_test(ws: Workspace, server: FeedServer) -> None:
    url = _feed(server)
    ws.feeds([{"url": url, "filters": {"keep": [{"category": "politics"}]}}])
    ws.poll_all()
    assert _articles(ws)["Derby preview"]["hidden_by"] == f"feed:{url}: keep (no keep rule matched)"
    tried = run_cli("filters", "test", "title: derby", "--config", str(ws.config_path), check=True).stdout
    assert "title: derby: would hide 1 of 3 stored articles." in tried and "Derby preview" in tried
    ws.feeds([{"url": url, "filters": {"block": [{"title": "derby"}]}}])
    ids_before = {r["id"] for r in _articles(ws).values()}
    applied = run_cli("filters", "apply", "--config", str(ws.config_path), check=True).stdout
    assert "Filters applied: 2 articles changed visibility." in applied
    rows = _articles(ws)
    assert rows["Derby preview"]["hidden_by"] == f"feed:{url}: block title: derby"
    assert rows["Sponsored: win big tonight"]["hidden_by"] is None
    assert {r["id"] for r in rows.values()} == ids_before
    ws.close()
    assert "Sponsored: win big tonight" in _outputs(ws) and "Derby preview" not in _outputs(ws)


# --- saved searches ---------------------------------------------------------------------------------------------


def test_query_language() -> None:
    query = parse('Kurdistan OR Erbil -football "peace talks" tag:world source:rudaw')
    assert [[t.words for t in g] for g in query.groups] == [["Kurdistan", "Erbil"], ["peace talks"]]
    assert [t.words for t in query.excluded] == ["football"] and query.tags == ("world",)
    assert to_fts5(query) == '("Kurdistan" OR "Erbil") AND "peace talks" NOT "football"'
    assert to_fts5(parse('say "he said ""no"""')) .count('"') % 2 == 0
    for bad, message in (('"open', "not closed"), ("OR x", "OR needs"), ("x OR", "OR needs"), ("-", "needs a word"),
                         ("", "nothing to search for"), ("x " * 60, "too many")):
        with pytest.raises(QueryError, match=message):
            parse(bad)


def test_a_saved_search_is_a_feed_that_follows_new_articles(ws: Workspace, server: FeedServer) -> None:
    items = [Item(title="Erbil airport reopens", link="http://k.example/1", guid="k1", date=_date(3),
                  summary="<p>Flights resume in Erbil.</p>"),
             Item(title="Football: Erbil wins derby", link="http://k.example/2", guid="k2", date=_date(2),
                  summary="<p>Erbil SC beat Duhok.</p>"),
             Item(title="Market prices rise", link="http://k.example/3", guid="k3", date=_date(1), summary="<p>x</p>")]
    url = server.add("/k", rss(items, title="Kurdish news"))
    ws.write_config(searches=[{"name": "kurdistan", "query": "Kurdistan OR Erbil -football"}])
    ws.feeds([url])
    ws.poll_all()
    snapshot = Publisher(ws.store, ws.config()).build()
    atom = feedparser.parse(snapshot.documents["search/kurdistan.atom"].body)
    assert [e.title for e in atom.entries] == ["Erbil airport reopens"]
    assert atom.feed.id.endswith("/search/kurdistan") and not atom.bozo
    assert b"Erbil airport reopens" in snapshot.documents["search/kurdistan.html"].body
    assert json.loads(snapshot.documents["search/kurdistan.json"].body)["items"][0]["title"] == "Erbil airport reopens"
    server.update("/k", body=rss([Item(title="Kurdistan region holds talks", link="http://k.example/4", guid="k4",
                                       date=_date(0.5), summary="<p>In Sulaymaniyah.</p>"), *items]))
    ws.poll_all()
    atom = feedparser.parse(Publisher(ws.store, ws.config()).build().documents["search/kurdistan.atom"].body)
    assert [e.title for e in atom.entries] == ["Kurdistan region holds talks", "Erbil airport reopens"]
    cli = run_cli("search", "erbil -football", "--json", "--config", str(ws.config_path), check=True)
    assert [json.loads(line)["title"] for line in cli.stdout.splitlines()] == ["Erbil airport reopens"]
    bad = run_cli("search", '"unclosed', "--config", str(ws.config_path))
    assert bad.returncode == 2 and "not closed" in bad.stderr and "Traceback" not in bad.stderr


def test_a_bad_saved_search_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"searches": [{"name": "Bad Name", "query": "x"}, {"name": "ok", "query": "OR"}]}))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert "searches.0.name: expected a name of lower-case letters" in str(info.value)
    assert "searches.1.query: OR needs a word on each side" in str(info.value)


# --- a quiet first poll, and per-feed settings ----------------------------------------------------------------------


def test_a_first_poll_of_130_entries_puts_10_in_latest_and_none_of_the_rest_later(ws: Workspace,
                                                                               server: FeedServer) -> None:
    ws.write_config(output={"backfill": 10, "entries": 100, "per_source": 100})
    episodes = [story(n, site="http://podcast.example", date=_date(n * 24)) for n in range(130)]
    url = server.add("/podcast", rss(episodes, title="Podcast"))
    ws.feeds([url])
    ws.poll_all()
    shown = feedparser.parse(Publisher(ws.store, ws.config()).build().documents["latest.atom"].body).entries
    assert [e.title for e in shown] == [f"Story {n}" for n in range(10)]
    rows = _articles(ws)
    assert len(rows) == 130 and sum(r["backfill"] for r in rows.values()) == 120
    server.update("/podcast", body=rss([story(200, site="http://podcast.example", date=_date(0)), *episodes]))
    ws.poll_all()
    shown = feedparser.parse(Publisher(ws.store, ws.config()).build().documents["latest.atom"].body).entries
    assert [e.title for e in shown] == ["Story 200"] + [f"Story {n}" for n in range(10)]


def test_per_feed_settings_enabled_and_user_agent(ws: Workspace, server: FeedServer) -> None:
    on = server.add("/on", rss([story(1)]))
    off = server.add("/off", rss([story(2)]))
    ws.feeds([{"url": on, "user_agent": "SpecialReader/2.0"}, {"url": off, "enabled": False}])
    run_cli("poll", "--no-progress", "--config", str(ws.config_path), check=True)
    assert server.requests_for("/on")[0].headers["user-agent"] == "SpecialReader/2.0"
    assert server.requests_for("/off") == []
    listed = {json.loads(line)["url"]: json.loads(line)["status"]
              for line in run_cli("feeds", "list", "--json", "--config", str(ws.config_path)).stdout.splitlines()}
    assert listed == {on: "active", off: "disabled"}


def test_rule_sets_know_nothing_of_each_other() -> None:
    assert not RuleSet("everything") and compile_rules({"block": [{"title": "x"}]}, "s")


# --- full text ------------------------------------------------------------------------------------------------------


def test_full_text_is_read_once_per_article_and_a_failure_keeps_the_summary(ws: Workspace, server: FeedServer) -> None:
    from tests.test_fulltext import FIXTURES

    page = (FIXTURES / "cloudflare-migp.html").read_bytes()
    # A run of plain words from the article body (no quotes or entities to compare).
    expected = re.search(r"[A-Za-z][A-Za-z ]{40,}[A-Za-z]", (FIXTURES / "cloudflare-migp.txt").read_text()).group(0)
    article = server.add("/article", page, content_type="text/html; charset=utf-8")
    missing = server.url("/gone")
    items = [Item(title="Read the whole thing", link=article, guid="a1", date=_date(1), summary="<p>Teaser.</p>"),
             Item(title="Broken link", link=missing, guid="a2", date=_date(2), summary="<p>Kept teaser.</p>")]
    url = server.add("/summaries", rss(items, title="Teasers"))
    ws.feeds([{"url": url, "full_text": True}])
    ws.poll_all()
    rows = _articles(ws)
    whole = rows["Read the whole thing"]
    assert whole["full_text"] is True and expected in whole["content"] and whole["full_text_error"] is None
    broken = rows["Broken link"]
    assert broken["full_text"] is False and "Kept teaser." in broken["summary"] and "404" in broken["full_text_error"]
    server.update("/summaries", body=rss([Item(title="Read the whole thing", link=article, guid="a1", date=_date(1),
                                               summary="<p>Teaser, edited.</p>"), items[1]], title="Teasers"))
    ws.poll_all()
    assert len(server.requests_for("/article")) == 1 and len(server.requests_for("/gone")) == 1  # once each
    assert expected in _articles(ws)["Read the whole thing"]["content"]  # an edit keeps the extracted text


def test_the_search_box_answers_over_http_within_limits(ws: Workspace, server: FeedServer) -> None:
    import http.client
    from urllib.parse import quote

    from tests.daemon import Daemon

    items = [Item(title="Erbil airport reopens", link="http://k.example/1", guid="k1", date=_date(3),
                  summary="<p>Flights resume.</p>"),
             Item(title="Market prices rise", link="http://k.example/2", guid="k2", date=_date(1), summary="<p>x</p>")]
    ws.feeds([server.add("/k", rss(items, title="Kurdish news"))])
    daemon = Daemon(ws)
    daemon.start()
    try:
        daemon.wait_until(lambda: b"Erbil airport" in daemon.get("/")[1], 15, "the first stories")
        home = daemon.get("/")[1]
        assert b'<form class="search" role="search" method="get"' in home

        def ask(query: str) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
            conn.request("GET", "/search?q=" + quote(query))
            response = conn.getresponse()
            return response.status, response.read()

        status, body = ask("erbil")
        assert status == 200 and b"Erbil airport reopens" in body and b"Market prices" not in body
        status, body = ask('"unclosed')
        assert status == 400 and b"a phrase is not closed" in body
        status, body = ask("x" * 5000)
        assert status == 400 and b"too long" in body
        status, body = ask("")
        assert status == 200 and b"Type words to search for." in body
        assert "Traceback" not in daemon.log
    finally:
        assert daemon.stop() == 0


def test_block_patterns_of_a_field_are_asked_together_first_and_the_first_matching_rule_is_named() -> None:
    from aggregator.filters import Subject, compile_rules, hidden_by

    rules = compile_rules({"block": [{"title": "re:casino"}, {"text": "re:bett(ing|or)"}, {"text": "re:lotter(y|ies)"},
                                     {"text": "lottery"}]}, "everything")  # fmt: skip
    assert set(rules.block_regex) == {"text"}  # one field with several patterns: combined
    assert hidden_by(Subject("News", "the state lotteries grew"), [rules]) == "everything: block text: re:lotter(y|ies)"
    assert hidden_by(Subject("News", "betting and a lottery"), [rules]) == "everything: block text: re:bett(ing|or)"
    assert hidden_by(Subject("Casino news", "nothing"), [rules]) == "everything: block title: re:casino"
    assert hidden_by(Subject("News", "nothing to see"), [rules]) is None
    # Groups of their own inside the patterns change nothing.
    named = compile_rules({"block": [{"text": "re:(?P<w>odds)"}, {"text": "re:(?P<w>stake)"}]}, "everything")
    assert hidden_by(Subject("News", "a stake in it"), [named]) == "everything: block text: re:(?P<w>stake)"
