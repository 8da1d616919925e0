"""Hostile input: servers and documents built to hurt a poller.

For every hostile feed the required outcome is the same: the feed's error is
recorded with a clear, specific message (the feed's `last_error`, shown by
`aggregator feeds list --json`, and a log line naming the feed), the other
feeds keep being polled, stored and published, memory stays bounded, and
nothing already stored is lost. Most cases poll in-process next to a good
feed; `test_cli_poll_*` and `test_daemon_*` run the same kind of feeds
through the real command and the real service.

Small limits keep the suite fast: 1 MB bodies, a 2 s read timeout, a 3 s
total deadline, 3 redirects. Nothing leaves 127.0.0.0/8: name lookups are
answered by a fake resolver (`.invalid` fails, as RFC 6761 says it must).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import feedparser
import pytest

from aggregator.subscriptions import feed_id_for
from aggregator.model import Outcome, PollReport, utcnow
from aggregator.publish import Publisher
from tests.conftest import Workspace, run_cli
from tests.daemon import Daemon, write_feeds
from tests.feedgen import Item, atom, jsonfeed, rss, story
from tests.fixture_server import FeedServer, Handler
from tests.hostile import (
    GB, MB, LimitedDaemon, PeakRSS, Sent, Switch, all_output_text, billion_laughs, close_fast, closed_port,
    endless_chunked, external_entities, external_parameter_entity, feeds_list, gzip_bomb, html_problems, huge_feed,
    local_only_getaddrinfo, quadratic_blowup, send, serve_body, silent, snapshot_problems, text_problems, trickle,
)

LIMITS = {"max_bytes": "1MB", "deadline": "3s", "timeout": "2s", "connect_timeout": "2s", "max_redirects": 3}
DEADLINE = 3.0
SLACK = 1.5  # what a poll may take beyond the deadline (parsing, writing, thread wake-ups)
MEMORY_BOUND = 100 * MB  # growth allowed while polling one hostile feed

GOOD_SITE = "http://good.example"
HOSTILE_SITE = "http://hostile.example"


# --- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """Name -> loopback address the fake resolver answers; nothing else resolves."""
    names: dict[str, str | None] = {}
    monkeypatch.setattr(socket, "getaddrinfo", local_only_getaddrinfo(socket.getaddrinfo, names))
    return names


@pytest.fixture
def server() -> Iterator[FeedServer]:
    srv = FeedServer()
    yield srv
    close_fast(srv)


@pytest.fixture
def hws(ws: Workspace) -> Workspace:
    ws.write_config(polling=dict(LIMITS), logging={"level": "info"})
    return ws


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown: lets hung handlers of the fixture server end."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def public_server() -> Iterator[FeedServer]:
    """127.0.0.2 plays a public host (the tests declare only 127.0.0.1/32 private)."""
    srv = FeedServer(host="127.0.0.2")
    yield srv
    close_fast(srv)


# --- the standard scenario: a good feed next to one that turns hostile ------------------------------------


def good_doc(*numbers: int) -> str:
    return rss([story(n, site=GOOD_SITE, title=f"Good story {n}") for n in numbers], title="Good feed",
               link=GOOD_SITE + "/")


EARLIER = "Earlier hostile story"


def earlier_doc() -> str:
    return rss([story(1, site=HOSTILE_SITE, title=EARLIER)], title="Hostile feed", link=HOSTILE_SITE + "/")


@dataclass
class Scenario:
    ws: Workspace
    server: FeedServer
    good_url: str
    hostile_url: str
    switch: Switch | None

    def titles(self, url: str) -> list[str]:
        return [a.title for a, _ in self.ws.store.articles(feed_id=feed_id_for(url))]

    def break_and_poll(self, behaviour: Callable[[Handler], None] | None = None) -> tuple[dict[str, PollReport], float]:
        """Turn the hostile feed hostile, give the good feed a new story, poll
        both; returns the reports by URL and how long the round took."""
        if behaviour is not None:
            assert self.switch is not None
            self.switch.set(behaviour)
        self.server.update("/good", body=good_doc(2, 1))
        started = time.monotonic()
        reports = {r.url: r for r in self.ws.poll_all()}
        return reports, time.monotonic() - started


def scenario(ws: Workspace, server: FeedServer, hostile_url: str | None = None, seed: bool = True) -> Scenario:
    """/good and a hostile feed (by default /hostile on the same server) both
    polled once while healthy, so each has a stored story."""
    good_url = server.add("/good", good_doc(1))
    switch = None
    if hostile_url is None:
        switch = Switch(serve_body(earlier_doc()))
        hostile_url = server.add("/hostile", handler=switch)
    ws.feeds([good_url, hostile_url])
    sc = Scenario(ws, server, good_url, hostile_url, switch)
    if seed:
        reports = {r.url: r for r in ws.poll_all()}
        assert reports[good_url].outcome is Outcome.OK, reports[good_url]
        assert reports[hostile_url].outcome is Outcome.OK, reports[hostile_url]
        assert sc.titles(hostile_url) == [EARLIER]
    return sc


def assert_isolated(sc: Scenario, reports: dict[str, PollReport], outcome: Outcome, error: str,
                    caplog: pytest.LogCaptureFixture, seeded: bool = True) -> PollReport:
    """The hostile feed failed with exactly this error (a regex), recorded on
    the feed and logged with the feed's URL; the good feed's new story is
    stored; the hostile feed's earlier story is still there."""
    bad = reports[sc.hostile_url]
    assert bad.outcome is outcome, (bad.outcome, bad.error)
    assert bad.error is not None and re.fullmatch(error, bad.error), bad.error
    feed = sc.ws.feed(sc.hostile_url)
    assert feed.last_error == bad.error
    assert feed.error_count == 1 and feed.last_outcome == outcome.value
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(sc.hostile_url in line and bad.error in line for line in logged), logged
    good = reports[sc.good_url]
    assert good.outcome is Outcome.OK and good.counts.new == 1, good
    assert "Good story 2" in sc.titles(sc.good_url)
    if seeded:
        assert sc.titles(sc.hostile_url) == [EARLIER]  # nothing already stored is lost
    return bad


# --- size ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
def test_40mb_feed_stops_reading_at_the_limit(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture,
                                              declared: bool) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    sent = Sent()
    with PeakRSS() as memory:
        reports, took = sc.break_and_poll(huge_feed(40 * MB, sent, declare_length=declared))
    error = (r"body of 40,000,000 bytes is over the 1,000,000-byte limit" if declared
             else r"body is over the 1,000,000-byte limit \(decompressed\); stopped reading")
    assert_isolated(sc, reports, Outcome.TOO_LARGE, error, caplog)
    assert sent.finished.wait(10), "the server was still writing 10 s after the poll"
    assert sent.bytes < 16 * MB, f"the client drained {sent.bytes:,} bytes of a 40 MB body"
    assert memory.growth < MEMORY_BOUND, f"memory grew by {memory.growth / MB:.0f} MB"
    assert took < DEADLINE + SLACK


@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
def test_gzip_bomb_is_never_inflated_whole(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture,
                                           declared: bool) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    sent = Sent()
    # 2 GB of zeros streamed; or, with a Content-Length, 0.5 GB (~0.5 MB on the
    # wire, under the 1 MB limit, so only the decompressed size can catch it).
    size = 500 * MB if declared else 2 * GB
    with PeakRSS() as memory:
        reports, took = sc.break_and_poll(gzip_bomb(size, sent, declare_length=declared))
    assert_isolated(sc, reports, Outcome.TOO_LARGE,
                    r"body is over the 1,000,000-byte limit \(decompressed\); stopped reading", caplog)
    assert memory.growth < MEMORY_BOUND, f"memory grew by {memory.growth / MB:.0f} MB"
    assert sent.finished.wait(10)
    assert reports[sc.hostile_url].bytes_read < 100_000  # a few KB on the wire were enough to say no
    assert took < DEADLINE + SLACK


def test_endless_chunked_response_stops_at_the_limit(hws: Workspace, server: FeedServer,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    sent = Sent()
    with PeakRSS() as memory:
        reports, took = sc.break_and_poll(endless_chunked(sent))
    assert_isolated(sc, reports, Outcome.TOO_LARGE,
                    r"body is over the 1,000,000-byte limit \(decompressed\); stopped reading", caplog)
    assert memory.growth < MEMORY_BOUND
    assert sent.finished.wait(10) and sent.client_left
    assert took < DEADLINE + SLACK


def test_slow_endless_chunked_response_hits_the_deadline(hws: Workspace, server: FeedServer,
                                                        caplog: pytest.LogCaptureFixture,
                                                        release: threading.Event) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    sent = Sent()
    reports, took = sc.break_and_poll(endless_chunked(sent, pause=0.4, release=release))
    assert_isolated(sc, reports, Outcome.TIMEOUT, r"total deadline of 3s exceeded", caplog)
    assert DEADLINE - 0.2 < reports[sc.hostile_url].fetch_seconds < DEADLINE + SLACK
    assert took < DEADLINE + SLACK


# --- time ----------------------------------------------------------------------------------------------


def test_server_that_never_answers(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture,
                                   release: threading.Event) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    reports, took = sc.break_and_poll(silent(release))
    assert_isolated(sc, reports, Outcome.TIMEOUT, r"read timeout: no data for 2s", caplog)
    assert took < 2 + SLACK


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "status-line-and-headers"])
def test_trickling_server_is_cut_off_at_the_total_deadline(hws: Workspace, server: FeedServer,
                                                           caplog: pytest.LogCaptureFixture,
                                                           release: threading.Event, headers_too: bool) -> None:
    """A byte a second never trips the 2 s read timeout; the 3 s deadline must hold."""
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    reports, took = sc.break_and_poll(trickle(release, every=1.0, headers_too=headers_too))
    assert_isolated(sc, reports, Outcome.TIMEOUT, r"total deadline of 3s exceeded", caplog)
    assert reports[sc.hostile_url].fetch_seconds < DEADLINE + SLACK
    assert took < DEADLINE + SLACK


def test_dns_failure(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture,
                     dns: dict[str, str | None]) -> None:
    caplog.set_level(logging.INFO)
    name = "news.hostile.invalid"
    dns[name] = "127.0.0.1"  # resolvable while the feed is seeded...
    hostile = server.add("/dns", earlier_doc()).replace("127.0.0.1", name)
    sc = scenario(hws, server, hostile_url=hostile)
    del dns[name]  # ...then the name stops resolving, as .invalid names do
    reports, took = sc.break_and_poll()
    assert_isolated(sc, reports, Outcome.CONNECTION, r"DNS lookup failed: host not found", caplog)
    assert took < SLACK


def test_connection_refused(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    gone_away = FeedServer()  # served the feed once, then the port closed
    gone_away.add("/feed", earlier_doc())
    sc = scenario(hws, server, hostile_url=gone_away.url("/feed"))
    close_fast(gone_away)
    reports, took = sc.break_and_poll()
    assert_isolated(sc, reports, Outcome.CONNECTION, r"connection refused", caplog)
    assert took < SLACK
    never = f"http://127.0.0.1:{closed_port()}/feed"  # and a port nobody ever listened on
    hws.feeds([sc.good_url, sc.hostile_url, never])
    report = {r.url: r for r in hws.poll_all()}[never]
    assert (report.outcome, report.error) == (Outcome.CONNECTION, "connection refused")


# --- HTTP ----------------------------------------------------------------------------------------------


RETRY_AFTER = 7200  # longer than the first backoff (30 min interval +- 10 %), so its effect shows


def http_date_in(seconds: int) -> str:
    return email.utils.formatdate(time.time() + seconds, usegmt=True)


HTTP_CASES = [
    # id, status, extra headers, outcome, error (regex), Retry-After honoured (seconds) or None
    ("500", 500, {}, Outcome.HTTP_ERROR, r"HTTP 500 Internal Server Error", None),
    ("500-retry-after", 500, {"Retry-After": str(RETRY_AFTER)}, Outcome.HTTP_ERROR, r"HTTP 500 Internal Server Error", None),
    ("503", 503, {}, Outcome.RATE_LIMITED, r"HTTP 503 Service Unavailable", None),
    ("503-retry-after", 503, {"Retry-After": str(RETRY_AFTER)}, Outcome.RATE_LIMITED,
     r"HTTP 503 Service Unavailable, retry after 7200s", RETRY_AFTER),
    ("503-retry-after-date", 503, {"Retry-After": "DATE+10800"}, Outcome.RATE_LIMITED,
     r"HTTP 503 Service Unavailable, retry after 10[78]\d\d(\.\d+)?s", 10_700),
    ("429", 429, {}, Outcome.RATE_LIMITED, r"HTTP 429 Too Many Requests", None),
    ("429-retry-after", 429, {"Retry-After": str(RETRY_AFTER)}, Outcome.RATE_LIMITED,
     r"HTTP 429 Too Many Requests, retry after 7200s", RETRY_AFTER),
    ("429-retry-after-garbage", 429, {"Retry-After": "soon"}, Outcome.RATE_LIMITED, r"HTTP 429 Too Many Requests", None),
    ("404", 404, {}, Outcome.HTTP_ERROR, r"HTTP 404 Not Found", None),
]


@pytest.mark.parametrize("status,headers,outcome,error,honoured", [c[1:] for c in HTTP_CASES],
                         ids=[c[0] for c in HTTP_CASES])
def test_http_errors(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture, status: int,
                     headers: dict[str, str], outcome: Outcome, error: str, honoured: int | None) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    headers = {k: (http_date_in(int(v.split("+")[1])) if v.startswith("DATE+") else v) for k, v in headers.items()}
    before = utcnow()
    reports, _ = sc.break_and_poll(serve_body(b"<html><body>busy</body></html>", "text/html", headers, status))
    assert_isolated(sc, reports, outcome, error, caplog)
    feed = hws.feed(sc.hostile_url)
    assert feed.next_poll_at is not None
    wait = (feed.next_poll_at - before).total_seconds()
    if honoured is not None:
        assert wait >= honoured - 5, f"Retry-After not honoured: next poll in {wait:.0f}s"
        assert feed.retry_after is not None
    else:
        assert wait < RETRY_AFTER - 60  # an ordinary backoff: 30 min +- jitter
        assert wait >= 600  # never below the floor
    assert reports[sc.hostile_url].status == status


def redirect(location: str, status: int = 302) -> Callable[[Handler], None]:
    return lambda h: send(h, status, b"", None, {"Location": location})


def test_redirect_loop(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    server.add("/loop-b", handler=redirect("/loop-c", 301))
    server.add("/loop-c", handler=redirect("/hostile", 307))
    reports, _ = sc.break_and_poll(redirect("/loop-b", 302))
    assert_isolated(sc, reports, Outcome.REDIRECT, re.escape(f"redirect loop at {sc.hostile_url}"), caplog)
    assert len(server.requests_for("/loop-b")) == 1 and len(server.requests_for("/loop-c")) == 1


def test_redirect_chain_longer_than_the_limit(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    for i in range(1, 10):
        server.add(f"/hop{i}", handler=redirect(f"/hop{i + 1}", 301))
    server.add("/hop10", earlier_doc())
    reports, _ = sc.break_and_poll(redirect("/hop1", 301))
    assert_isolated(sc, reports, Outcome.REDIRECT, r"more than 3 redirects", caplog)
    assert server.requests_for("/hop4") == [] and server.requests_for("/hop10") == []  # stopped at the limit
    assert hws.feed(sc.hostile_url).url == sc.hostile_url and hws.feed(sc.hostile_url).redirect_url is None


def test_redirect_to_a_non_http_scheme(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    reports, _ = sc.break_and_poll(redirect("file:///etc/passwd", 301))
    assert_isolated(sc, reports, Outcome.REDIRECT, r"redirect to a non-HTTP URL: file:///etc/passwd", caplog)


def test_301_from_public_to_private_is_refused(hws: Workspace, server: FeedServer, public_server: FeedServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    hws.write_config(polling={"private_networks": ["127.0.0.1/32"]})
    internal = server.add("/internal/admin.xml", rss([story(9, title="Internal secret story")]))
    switch = Switch(serve_body(earlier_doc()))
    hostile = public_server.add("/feed", handler=switch)
    sc = scenario(hws, server, hostile_url=hostile)
    sc.switch = switch
    reports, _ = sc.break_and_poll(redirect(internal, 301))
    assert_isolated(sc, reports, Outcome.REDIRECT,
                    re.escape("refused redirect from a public address to a private one (127.0.0.1)"), caplog)
    assert server.requests_for("/internal/admin.xml") == []  # not one request reached it
    feed = hws.feed(hostile)
    assert feed.url == hostile and feed.redirect_url is None  # and the 301 was not remembered
    assert "Internal secret story" not in json.dumps([a.title for a, _ in hws.store.articles()])


def test_410_gone_stops_polling_and_keeps_the_articles(hws: Workspace, server: FeedServer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    reports, _ = sc.break_and_poll(serve_body(b"gone", "text/plain", status=410))
    bad = reports[sc.hostile_url]
    assert (bad.outcome, bad.error) == (Outcome.GONE, "HTTP 410 Gone: the publisher removed this feed")
    feed = hws.feed(sc.hostile_url)
    assert feed.status.value == "gone" and feed.next_poll_at is None and feed.last_error == bad.error
    assert sc.titles(sc.hostile_url) == [EARLIER]
    assert any(sc.hostile_url in r.getMessage() and "410" in r.getMessage() for r in caplog.records)
    requests = len(server.requests_for("/hostile"))
    hws.poll_all()
    assert len(server.requests_for("/hostile")) == requests  # never requested again
    snapshot = Publisher(hws.store, hws.config()).build()
    assert EARLIER in snapshot.documents["latest.atom"].body.decode()  # its stories stay published


PARSE_FAILURES = [
    ("empty", b"", "application/rss+xml", r"empty document: the server sent no content"),
    ("whitespace", b" \r\n\t \n", "application/rss+xml", r"empty document: the server sent no content"),
    ("html-page", b"<!DOCTYPE html><html><head><title>Welcome</title></head><body><h1>Our news</h1></body></html>",
     "text/html; charset=utf-8",
     re.escape("not a feed: the server sent an HTML page (look for the feed's own URL on that page)")),
    ("html-page-labelled-rss", b"<html><body><p>Please enable cookies</p></body></html>", "application/rss+xml",
     re.escape("not a feed: the server sent an HTML page (look for the feed's own URL on that page)")),
    ("binary", bytes(range(256)) * 8, "application/rss+xml",
     r"not a feed: no RSS, Atom or JSON Feed document found.*"),
    ("broken-json", b'{"version": "https://jsonfeed.org/version/1.1", "items": [', "application/feed+json",
     r"not a feed: invalid JSON \(.+\)"),
    ("plain-text", b"Service temporarily unavailable. Try later.", "text/plain",
     r"not a feed: no RSS, Atom or JSON Feed document found.*"),
]


@pytest.mark.parametrize("body,content_type,error", [c[1:] for c in PARSE_FAILURES], ids=[c[0] for c in PARSE_FAILURES])
def test_200_without_a_feed(hws: Workspace, server: FeedServer, caplog: pytest.LogCaptureFixture, body: bytes,
                            content_type: str, error: str) -> None:
    caplog.set_level(logging.INFO)
    sc = scenario(hws, server)
    reports, _ = sc.break_and_poll(serve_body(body, content_type))
    assert_isolated(sc, reports, Outcome.PARSE_ERROR, error, caplog)
    # A failed parse must not be remembered as "this body was seen": the same
    # bytes again are parsed (and fail) again, not skipped as unchanged.
    assert hws.feed(sc.hostile_url).body_hash != hashlib.sha256(body).hexdigest()
    again = {r.url: r for r in hws.poll_all()}[sc.hostile_url]
    assert again.outcome is Outcome.PARSE_ERROR and hws.feed(sc.hostile_url).error_count == 2


@pytest.mark.parametrize("content_type", [None, "text/html", "text/plain", "application/octet-stream",
                                          "image/png", "application/json", "text/html; charset=iso-8859-1"])
@pytest.mark.parametrize("kind", ["rss", "atom", "json"])
def test_valid_feed_with_wrong_or_missing_content_type(hws: Workspace, server: FeedServer, kind: str,
                                                       content_type: str | None) -> None:
    build = {"rss": rss, "atom": atom, "json": jsonfeed}[kind]
    doc = build([story(1, site=HOSTILE_SITE, title="Mislabelled one"), story(2, site=HOSTILE_SITE, title="Mislabelled two")])
    url = server.add("/mislabelled", doc, content_type=content_type)
    good = server.add("/good", good_doc(1))
    hws.feeds([good, url])
    reports = {r.url: r for r in hws.poll_all()}
    assert reports[url].outcome is Outcome.OK, reports[url].error
    assert reports[url].counts.new == 2
    assert sorted(a.title for a, _ in hws.store.articles(feed_id=feed_id_for(url))) == ["Mislabelled one", "Mislabelled two"]
    assert hws.feed(url).last_error is None


# --- XML -----------------------------------------------------------------------------------------------


def all_stored_text(ws: Workspace, url: str | None = None) -> str:
    rows = ws.store.articles(feed_id=feed_id_for(url) if url else None)
    return json.dumps([{k: v for k, v in a.__dict__.items()} for a, _ in rows], default=str, ensure_ascii=False)


@pytest.mark.parametrize("one_line,padding", [(False, 0), (True, 0), (True, 250_000)],
                         ids=["multi-line-dtd", "one-line-dtd", "one-line-dtd-250kb-document"])
def test_billion_laughs_is_not_expanded(hws: Workspace, server: FeedServer, one_line: bool, padding: int) -> None:
    """Nested entities, 10**9 'lol's. On one line the DTD reaches the XML
    parser; its amplification guard is a ratio (100x the document once 8 MiB
    have been expanded), so a bigger document buys a bigger expansion: a
    250 KB one may not cost more memory or time than the limits allow."""
    sc = scenario(hws, server)
    doc = billion_laughs(9, one_line=one_line, padding=padding)
    with PeakRSS() as memory:
        reports, took = sc.break_and_poll(serve_body(doc))
    bad = reports[sc.hostile_url]
    assert bad.outcome in (Outcome.OK, Outcome.PARSE_ERROR), (bad.outcome, bad.error)
    if bad.outcome is Outcome.OK:  # a bad DTD; the other entries are still usable
        assert "Plain laughs entry" in sc.titles(sc.hostile_url)
    assert EARLIER in sc.titles(sc.hostile_url)
    assert "lollollol" not in all_stored_text(hws, sc.hostile_url)
    assert memory.growth < MEMORY_BOUND, f"memory grew by {memory.growth / MB:.0f} MB parsing a {len(doc):,}-byte document"
    assert took < 5, f"{took:.1f}s"
    assert "Good story 2" in sc.titles(sc.good_url)


@pytest.mark.parametrize("one_line", [False, True], ids=["multi-line-dtd", "one-line-dtd"])
def test_quadratic_entity_blowup_is_not_expanded(hws: Workspace, server: FeedServer, one_line: bool) -> None:
    """One flat 10 KB entity referenced 3,000 times: 30 MB if expanded, from a
    19 KB document (a 1 MB document could ask for 80 GB the same way)."""
    sc = scenario(hws, server)
    value = 10_000
    doc = quadratic_blowup(value, 3_000, one_line=one_line)
    with PeakRSS() as memory:
        reports, took = sc.break_and_poll(serve_body(doc))
    bad = reports[sc.hostile_url]
    assert bad.outcome in (Outcome.OK, Outcome.PARSE_ERROR), (bad.outcome, bad.error)
    if bad.outcome is Outcome.OK:
        assert "Plain blowup entry" in sc.titles(sc.hostile_url)
    expanded = all_stored_text(hws, sc.hostile_url).count("Q")
    assert expanded <= value, f"{expanded:,} characters of the entity stored from a {len(doc):,}-byte document"
    assert memory.growth < MEMORY_BOUND, f"memory grew by {memory.growth / MB:.0f} MB"
    assert took < 5, f"{took:.1f}s"
    assert "Good story 2" in sc.titles(sc.good_url)


def test_external_entities_are_never_resolved(hws: Workspace, server: FeedServer, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("HOSTILE-SECRET-TOKEN root:x:0:0:root:/root:/bin/bash\n")
    sc = scenario(hws, server)
    for path in ("/secret", "/ext.dtd", "/style.xsl", "/pe.dtd", "/passwd-proxy"):
        server.add(path, b"SERVER-SECRET-TOKEN", content_type="text/plain")
    doc = external_entities(secret.as_uri(), server.url("/secret"), server.url("/ext.dtd"), server.url("/style.xsl"))
    reports, _ = sc.break_and_poll(serve_body(doc))
    assert reports[sc.hostile_url].outcome is Outcome.OK, reports[sc.hostile_url].error
    assert "Innocent XXE entry" in sc.titles(sc.hostile_url)
    # The parameter-entity form, and /etc/passwd itself, as a second feed.
    pe_url = server.add("/pe-feed", external_parameter_entity(server.url("/pe.dtd")))
    passwd_url = server.add("/passwd-feed", external_entities("file:///etc/passwd", server.url("/passwd-proxy"),
                                                              server.url("/ext.dtd"), server.url("/style.xsl")))
    hws.feeds([sc.good_url, sc.hostile_url, pe_url, passwd_url])
    more = {r.url: r for r in hws.poll_all()}
    assert more[pe_url].outcome is Outcome.OK and more[passwd_url].outcome is Outcome.OK
    for path in ("/secret", "/ext.dtd", "/style.xsl", "/pe.dtd", "/passwd-proxy"):
        assert server.requests_for(path) == [], f"{path} was fetched while parsing"
    stored = all_stored_text(hws)
    snapshot = Publisher(hws.store, hws.config()).build()
    published = all_output_text(snapshot)
    for leak in ("HOSTILE-SECRET-TOKEN", "SERVER-SECRET-TOKEN", "root:x:0:0", "root:", "/bin/bash", "/usr/sbin/nologin"):
        assert leak not in stored, leak
        assert leak not in published, leak
    assert "Innocent XXE entry" in published and "Good story 2" in published


TRUNCATED = rss([story(n, site=HOSTILE_SITE, title=f"Complete {n}") for n in (1, 2, 3)]).encode()


def test_truncated_document_with_nothing_usable(hws: Workspace, server: FeedServer,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    empty = server.add("/empty-channel", rss([], title="Nothing yet"))  # well-formed, no entries: not an error
    sc = scenario(hws, server)
    hws.feeds([sc.good_url, sc.hostile_url, empty])
    # Cut in its header: nothing usable, so an error that names the XML problem.
    reports, _ = sc.break_and_poll(serve_body(TRUNCATED[: TRUNCATED.index(b"<channel>") + 14]))
    assert reports[empty].outcome is Outcome.OK and hws.feed(empty).last_error is None
    assert_isolated(sc, reports, Outcome.PARSE_ERROR, r"not a feed: .*(XML|truncated|no element|unclosed|syntax).*", caplog)


def test_truncated_document_keeps_its_complete_entries_only(hws: Workspace, server: FeedServer) -> None:
    url = server.add("/cut-in-item", TRUNCATED[: TRUNCATED.index(b"<title>Complete 3") + 12])
    hws.feeds([url])
    assert hws.poll_url(url).outcome is Outcome.OK
    titles = sorted(a.title for a, _ in hws.store.articles(feed_id=feed_id_for(url)))
    assert {"Complete 1", "Complete 2"} <= set(titles)  # the complete entries of a cut document are kept...
    # ...but the cut-off tail (no title, link, id or text) is not an article.
    assert titles == ["Complete 1", "Complete 2"], titles
    server.update("/cut-in-item", body=TRUNCATED)  # the whole document next time: just the third is new
    assert hws.poll_url(url).counts.new == 1
    assert sorted(a.title for a, _ in hws.store.articles(feed_id=feed_id_for(url))) == [
        "Complete 1", "Complete 2", "Complete 3"]


def test_invalid_bytes_control_characters_and_wrong_encodings(hws: Workspace, server: FeedServer) -> None:
    """None of these may crash a poll; every entry is stored; the outputs stay well-formed."""

    def doc(encoding_label: str, title_bytes: bytes, body_bytes: bytes = b"plain") -> bytes:
        return (b'<?xml version="1.0" encoding="' + encoding_label.encode() + b'"?>\n<rss version="2.0"><channel>'
                b"<title>Encoding " + title_bytes + b"</title><link>http://enc.example/</link><description>d</description>"
                b"<item><title>" + title_bytes + b"</title><link>http://enc.example/" + encoding_label.encode()
                + b"/1</link><description>" + body_bytes + b"</description></item>"
                b"<item><title>Second entry</title><link>http://enc.example/" + encoding_label.encode()
                + b"/2</link><description>ok</description></item></channel></rss>")

    cases = {
        "/invalid-utf8": doc("utf-8", b"Caf\xe9 \xff\xfe \xc0\xaf \xed\xa0\x80 end"),
        "/control-chars": doc("utf-8", b"Bell\x07 Esc\x1b Null\x00 VT\x0b FF\x0c NEL\xc2\x85 ref &#x1; &#27;",
                              b"text \x01\x02\x03 &lt;p&gt;para\x08graph&lt;/p&gt;"),
        "/cp1251-as-utf8": doc("utf-8", "Новости дня".encode("windows-1251")),
        "/latin1-as-utf8": doc("utf-8", "Événement à Zürich".encode("iso-8859-1")),
        "/utf8-as-latin1": doc("iso-8859-1", "Événement à Zürich — Новости".encode("utf-8")),
        "/unknown-encoding": doc("x-no-such-charset", b"Unknown charset"),
    }
    urls = {path: server.add(path, body) for path, body in cases.items()}
    good = server.add("/good", good_doc(1))
    hws.feeds([good, *urls.values()])
    reports = {r.url: r for r in hws.poll_all()}
    failures = {}
    for path, url in urls.items():
        report = reports[url]
        titles = [a.title for a, _ in hws.store.articles(feed_id=feed_id_for(url))]
        if report.outcome is not Outcome.OK or len(titles) != 2:
            failures[path] = (report.outcome.value, report.error, titles)
    assert not failures, failures
    assert reports[good].outcome is Outcome.OK
    stored = [a for a, _ in hws.store.articles()]
    control = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f]")
    for article in stored:
        for value in (article.title, article.summary or "", article.content or ""):
            assert not control.search(value), (article.url, value)
    snapshot = Publisher(hws.store, hws.config()).build()
    assert snapshot_problems(snapshot) == []  # includes: every Atom/RSS document parses as XML
    for path in ("latest.atom", "latest.rss"):
        feedparser_view = feedparser.parse(snapshot.documents[path].body)
        assert not feedparser_view.bozo, (path, feedparser_view.bozo_exception)
    json.loads(snapshot.documents["latest.json"].body)


# --- content -------------------------------------------------------------------------------------------

PAYLOAD_HTML = """<p>Lead paragraph that must survive.</p>
<script>alert('script')</script><script src="http://evil.example/x.js"></script>
<img src="http://img.example/photo.jpg" width="600" height="400" alt="A real photo" onerror="alert('onerror')">
<img src=x onerror=alert(1)><img src="http://img.example/a.jpg" onload="alert(2)">
<iframe src="http://evil.example/frame"></iframe><iframe srcdoc="&lt;script&gt;alert(3)&lt;/script&gt;"></iframe>
<object data="http://evil.example/x.swf" type="application/x-shockwave-flash"></object>
<embed src="http://evil.example/x.swf"><applet code="Evil.class"></applet>
<a href="javascript:alert('js')">js link</a> <a href="JaVaScRiPt:alert(1)">mixed case</a>
<a href=" &#x09;javascript:alert(1)">spaced</a> <a href="&#106;avascript:alert(1)">entity</a>
<a href="java&#x0A;script:alert(1)">newline</a> <a href="vbscript:msgbox(1)">vb</a>
<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">data link</a>
<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">
<img srcset="javascript:alert(1) 1x, http://img.example/b.jpg 2x" src="http://img.example/b.jpg">
<div style="width:expression(alert('css'))">css expression</div><p style="background:url(javascript:alert(1))">bg</p>
<style>body { background: url("javascript:alert(1)") } p { behavior: url(x.htc) }</style>
<svg onload="alert('svg')"><script>alert(4)</script></svg><math><mtext><script>alert(5)</script></mtext></math>
<form action="javascript:alert(6)"><input type="text" onfocus="alert(7)" autofocus><button formaction="javascript:alert(8)">go</button></form>
<meta http-equiv="refresh" content="0;url=javascript:alert(9)"><base href="javascript:alert(10)//">
<link rel="stylesheet" href="http://evil.example/x.css"><video poster="javascript:alert(11)" src="http://v.example/v.mp4"></video>
<details open ontoggle="alert(12)">x</details><body onload="alert(13)"><marquee onstart="alert(14)">m</marquee>
<noscript><p title="</noscript><img src=x onerror=alert(15)>"></p></noscript>
<template><script>alert(16)</script></template><table background="javascript:alert(17)"><tr><td>cell</td></tr></table>
<p>Closing paragraph that must survive.</p>"""

EVIL_TITLE = "<b>Bold</b> title <script>alert('title')</script><img src=x onerror=alert('title-img')>"
EVIL_NAME = "<script>alert('name')</script>Eve <img src=x onerror=alert('name-img')>"
EVIL_FEED_NAME = "<script>alert('feed')</script>Evil <i>Feed</i> <iframe src=//evil.example></iframe>"
EVIL_LINK = "javascript:alert('link')"


def hostile_rss() -> str:
    items = [
        Item(title=EVIL_TITLE, link=EVIL_LINK, guid="urn:hostile:rss:1", date="Mon, 01 Jun 2026 10:00:00 +0000",
             summary=PAYLOAD_HTML, content=PAYLOAD_HTML, creator=EVIL_NAME, categories=["<script>alert('cat')</script>news"],
             enclosure=("javascript:alert('enclosure')", "audio/mpeg", 10), thumbnail="javascript:alert('thumb')"),
        Item(title="Data link item", link="data:text/html,<script>alert(1)</script>", guid="urn:hostile:rss:2",
             date="Mon, 01 Jun 2026 10:01:00 +0000", summary="<p onclick=alert(1)>click me</p>",
             author="eve@evil.example (<script>alert('author')</script>Eve)",
             thumbnail="data:image/png;base64,iVBORw0KGgo="),
    ]
    return rss(items, title=EVIL_FEED_NAME, link="javascript:alert('site')")


def hostile_atom() -> str:
    items = [
        Item(title=EVIL_TITLE, link="http://atom.example/1", guid="urn:hostile:atom:1", date="2026-06-01T11:00:00Z",
             updated="2026-06-01T11:00:00Z", summary=PAYLOAD_HTML, content=PAYLOAD_HTML, author=EVIL_NAME,
             extra='<author><name>Second</name><uri>javascript:alert(\'uri\')</uri></author>'
                   '<link rel="enclosure" href="javascript:alert(1)" type="audio/mpeg"/>'),
        Item(title=None, link="http://atom.example/2", guid="urn:hostile:atom:2", date="2026-06-01T11:01:00Z",
             extra='<title type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml">XHTML <script>alert(\'x\')</script>'
                   '<b onmouseover="alert(1)">title</b></div></title>'
                   '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>xhtml body</p>'
                   '<script>alert(\'xhtml\')</script><a href="javascript:alert(1)">x</a>'
                   '<img src="http://img.example/c.jpg" onerror="alert(1)"/></div></content>'),
    ]
    return atom(items, title=EVIL_FEED_NAME, link="javascript:alert('atom-site')")


def hostile_json() -> str:
    feed = json.loads(jsonfeed([
        Item(title=EVIL_TITLE, link="javascript:alert('json-url')", guid="urn:hostile:json:1",
             date="2026-06-01T12:00:00Z", content=PAYLOAD_HTML, author=EVIL_NAME,
             thumbnail="javascript:alert('json-image')", categories=["<img src=x onerror=alert(1)>"],
             enclosure=("data:audio/mpeg;base64,AAAA", "audio/mpeg", 4)),
    ], title=EVIL_FEED_NAME, home="javascript:alert('home')"))
    feed["items"][0]["authors"][0]["url"] = "javascript:alert('author-url')"
    feed["items"][0]["external_url"] = "javascript:alert('external')"
    feed["items"][0]["summary"] = "<script>alert('summary')</script>Summary"
    return json.dumps(feed)


def poll_hostile_content(ws: Workspace, server: FeedServer) -> dict[str, str]:
    """The RSS, Atom and JSON feeds full of active content, next to a good
    feed, polled once; returns their URLs by kind."""
    urls = {
        "rss": server.add("/hostile.rss", hostile_rss()),
        "atom": server.add("/hostile.atom", hostile_atom(), content_type="application/atom+xml"),
        "json": server.add("/hostile.json", hostile_json(), content_type="application/feed+json"),
    }
    good = server.add("/good", good_doc(1))
    ws.feeds([good, {"url": urls["rss"], "tags": ["world"]}, {"url": urls["atom"], "tags": ["world"]},
              {"url": urls["json"], "title": "Configured JSON feed"}])
    reports = {r.url: r for r in ws.poll_all()}
    for kind, url in urls.items():
        assert reports[url].outcome is Outcome.OK, (kind, reports[url].error)
        assert reports[url].counts.new >= 1
    assert reports[good].outcome is Outcome.OK
    return urls


def test_active_content_is_not_stored(hws: Workspace, server: FeedServer) -> None:
    urls = poll_hostile_content(hws, server)
    articles = [a for a, _ in hws.store.articles()]
    assert len(articles) == 6
    # Sanitised HTML, no active URL...
    for a in articles:
        for html in (a.summary, a.content):
            if html:
                assert html_problems(html, f"stored {a.id}") == []
        for url in [a.url, a.image, *(e.url for e in a.enclosures), *(x.url for x in a.authors)]:
            assert url is None or url.startswith(("http://", "https://")), (a.id, url)
    rich = [a for a in articles if a.content and "Lead paragraph" in a.content]
    assert len(rich) == 3  # ...while rss, atom and json each kept the harmless parts
    for a in rich:
        assert "Closing paragraph that must survive." in a.content and "http://img.example/photo.jpg" in a.content
    # Where the source's field is HTML (RSS titles, names and categories carry
    # escaped HTML by convention; Atom type="html"), it is reduced to text.
    html_fields = [(a.id, v) for a, _ in hws.store.articles(feed_id=feed_id_for(urls["rss"]))
                   for v in [a.title, *(x.name or "" for x in a.authors), *a.categories]]
    html_fields += [(a.id, a.title) for a, _ in hws.store.articles(feed_id=feed_id_for(urls["atom"]))]
    html_fields += [("rss feed title", hws.feed(urls["rss"]).title or "")]
    leftovers = [(where, v) for where, v in html_fields if text_problems(v, str(where))]
    assert not leftovers, leftovers


def test_active_content_never_reaches_any_output(hws: Workspace, server: FeedServer) -> None:
    poll_hostile_content(hws, server)
    snapshot = Publisher(hws.store, hws.config()).build()
    assert {"latest.atom", "latest.rss", "latest.json", "", "feeds", "opml", "tags/world.atom", "tags/world.rss",
            "tags/world.json"} <= set(snapshot.documents)
    problems = snapshot_problems(snapshot)
    assert problems == [], "\n".join(problems)
    published = all_output_text(snapshot)
    assert "Lead paragraph that must survive." in published and "Good story 1" in published


def test_the_checkers_see_active_content() -> None:
    """The checks above are only as good as html_problems and friends: on the
    raw payload they must flag every kind of active content it carries."""
    found = "\n".join(html_problems(PAYLOAD_HTML, "raw"))
    for expected in ("<script>", "<iframe>", "<object>", "<embed>", "<applet>", "<style>", "<svg>", "<math>", "<form>",
                     "<base>", "<meta>", "<link>", "onerror=", "onload=", "onfocus=", "ontoggle=", "javascript:alert('js')",
                     "JaVaScRiPt:", "java\\nscript:", "vbscript:", "data:text/html", "data:image/svg+xml", "srcset=",
                     "expression(", "url(javascript:", "formaction=", "poster=", "background="):
        assert expected in found, expected

    class Doc:
        def __init__(self, body: str) -> None:
            self.body = body.encode()

    class Snap:
        documents = {
            "latest.rss": Doc('<rss version="2.0"><channel><title>t</title><item><title>&lt;b&gt;x&lt;/b&gt;</title>'
                              "<link>javascript:alert(1)</link><description>&lt;img src=x onerror=alert(1)&gt;"
                              "</description></item></channel></rss>"),
            "latest.json": Doc(json.dumps({"items": [{"id": "1", "url": "data:text/html,x",
                                                      "content_html": "<iframe src=x></iframe>"}]})),
            "": Doc("<!DOCTYPE html><html><head><title>x</title></head><body><a href='javascript:x'>y</a></body></html>"),
        }

    problems = "\n".join(snapshot_problems(Snap()))
    for expected in ("/latest.rss <title>: markup", "/latest.rss: <link>'javascript:alert(1)'", "onerror=",
                     "content_html: <iframe>", "url 'data:text/html,x'", "/: <a href='javascript:x'>"):
        assert expected in problems, (expected, problems)


PIXELS = {
    "quoted": '<img src="http://t.example/p1.gif" width="1" height="1">',
    "unquoted-upper": '<IMG SRC=http://t.example/p2.gif WIDTH=1 HEIGHT=1>',
    "single-quoted-reversed": "<img height='1' width='1' src='http://t.example/p3.gif' alt=''>",
    "px-units": '<img src="http://t.example/p4.gif" width="1px" height="1px" border="0">',
    "zero-size": '<img src="http://t.example/p5.gif" width="0" height="0">',
    "css-size": '<img src="http://t.example/p6.gif" style="width:1px;height:1px;border:0">',
    "self-closing-xhtml": '<img src="http://t.example/p7.gif" height="1" width="1" />',
}


@pytest.mark.parametrize("pixel", list(PIXELS.values()), ids=list(PIXELS))
def test_tracking_pixels_are_removed(hws: Workspace, server: FeedServer, pixel: str) -> None:
    content = f'<p>Story text.</p>{pixel}<p>More text.</p><img src="http://img.example/real.jpg" width="640" height="1">'
    url = server.add("/pixels", rss([story(1, site=HOSTILE_SITE, summary=content)]))
    hws.feeds([url])
    assert {r.url: r for r in hws.poll_all()}[url].outcome is Outcome.OK
    article = hws.store.articles(feed_id=feed_id_for(url))[0][0]
    assert "t.example" not in (article.summary or ""), article.summary
    assert "http://img.example/real.jpg" in (article.summary or "")  # a thin banner is not a pixel
    snapshot = Publisher(hws.store, hws.config()).build()
    assert "t.example" not in all_output_text(snapshot)


# --- identity abuse ------------------------------------------------------------------------------------


def test_every_entry_with_the_same_guid(hws: Workspace, server: FeedServer) -> None:
    items = [story(n, site=HOSTILE_SITE, guid="same-guid-for-all", title=f"Same guid {n}") for n in range(1, 8)]
    url = server.add("/same-guid", rss(items))
    hws.feeds([url])
    first = hws.poll_url(url)
    assert first.outcome is Outcome.OK and first.counts.new == 7
    stored = hws.store.articles(feed_id=feed_id_for(url))
    assert sorted(a.title for a, _ in stored) == sorted(f"Same guid {n}" for n in range(1, 8))
    assert len({a.id for a, _ in stored}) == 7
    assert {a.entry_key for a, _ in stored} == {f"{HOSTILE_SITE}/story/{n}" for n in range(1, 8)}  # keyed by link
    # Re-polled (body changed slightly so it is parsed again): nothing new, nothing lost.
    server.update("/same-guid", body=rss(items, extra_channel="<ttl>60</ttl>"))
    second = hws.poll_url(url)
    assert second.outcome is Outcome.OK and second.counts.new == 0 and second.counts.updated == 0
    assert len(hws.store.articles(feed_id=feed_id_for(url))) == 7


def test_guids_that_change_on_every_request(hws: Workspace, server: FeedServer) -> None:
    counter = {"n": 0}

    def rotating(h: Handler) -> None:
        counter["n"] += 1
        items = [story(n, site=HOSTILE_SITE, guid=f"urn:uuid:{os.urandom(16).hex()}", title=f"Rotating {n}")
                 for n in range(1, 6)]
        send(h, 200, rss(items).encode())

    url = server.add("/rotating", handler=rotating)
    hws.feeds([url])
    assert hws.poll_url(url).counts.new == 5
    ids = {a.id for a, _ in hws.store.articles(feed_id=feed_id_for(url))}
    for _ in range(3):
        report = hws.poll_url(url)
        assert report.outcome is Outcome.OK and report.counts.new == 0, report.counts
    assert counter["n"] == 4
    assert {a.id for a, _ in hws.store.articles(feed_id=feed_id_for(url))} == ids  # output ids never change


def test_ten_thousand_entries_in_one_feed(ws: Workspace, server: FeedServer) -> None:
    ws.write_config(polling={**LIMITS, "max_bytes": "20MB", "deadline": "30s", "timeout": "10s"},
                    logging={"level": "info"})
    items = [Item(title=f"Bulk {n}", link=f"{HOSTILE_SITE}/bulk/{n}", guid=f"{HOSTILE_SITE}/bulk/{n}",
                  date=f"Mon, 01 Jun 2026 {n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d} +0000",
                  summary=f"<p>Bulk entry {n}</p>") for n in range(10_000)]
    url = server.add("/bulk", rss(items, title="Bulk feed"))
    good = server.add("/good", good_doc(1))
    ws.feeds([good, url])
    with PeakRSS() as memory:
        reports = {r.url: r for r in ws.poll_all()}
    assert reports[url].outcome is Outcome.OK and reports[url].counts.new == 10_000
    assert reports[good].outcome is Outcome.OK
    assert len(ws.store.articles(feed_id=feed_id_for(url))) == 10_000
    assert memory.growth < 300 * MB
    server.update("/bulk", body=rss(items, title="Bulk feed", extra_channel="<ttl>60</ttl>"))  # parsed again
    again = ws.poll_url(url)
    assert again.outcome is Outcome.OK and again.counts.new == 0 and again.counts.updated == 0
    assert len(ws.store.articles(feed_id=feed_id_for(url))) == 10_000
    snapshot = Publisher(ws.store, ws.config()).build()
    latest = feedparser.parse(snapshot.documents["latest.atom"].body)
    assert "Good story 1" in [e.title for e in latest.entries]  # the backlog does not push the rest out
    assert sum(e.title.startswith("Bulk ") for e in latest.entries) <= ws.config().settings.output.per_source


def test_dates_in_1970_and_2999(hws: Workspace, server: FeedServer) -> None:
    items = [
        story(1, site=HOSTILE_SITE, title="Epoch story", date="Thu, 01 Jan 1970 00:00:00 +0000"),
        story(2, site=HOSTILE_SITE, title="Far future story", date="Tue, 01 Jan 2999 00:00:00 +0000",
              updated="2999-01-01T00:00:00Z"),
        story(3, site=HOSTILE_SITE, title="Negative story", date="Wed, 31 Dec 1969 23:59:59 +0000"),
        story(4, site=HOSTILE_SITE, title="Future dc:date story", date=None,
              extra="<dc:date>2999-12-31T23:59:59Z</dc:date>"),
    ]
    url = server.add("/dates", rss(items, extra_channel="<lastBuildDate>Tue, 01 Jan 2999 00:00:00 +0000</lastBuildDate>"))
    atom_url = server.add("/dates.atom", atom([story(5, site="http://atom-dates.example", title="Atom future story",
                                                     date="2999-06-01T00:00:00Z", updated="2999-06-01T00:00:00Z")],
                                              updated="2999-06-01T00:00:00Z"), content_type="application/atom+xml")
    hws.feeds([url, atom_url])
    before = utcnow()
    reports = hws.poll_all()
    after = utcnow()
    assert all(r.outcome is Outcome.OK for r in reports), reports
    stored = {a.title: a for a, _ in hws.store.articles()}
    assert set(stored) == {"Epoch story", "Far future story", "Negative story", "Future dc:date story", "Atom future story"}
    for title in ("Far future story", "Atom future story", "Future dc:date story"):
        a = stored[title]
        # Clamped to first seen (a second earlier per undated entry stored just before: no two share a date).
        assert timedelta(0) <= a.first_seen_at - a.published_at <= timedelta(seconds=10), (title, a.published_at)
        assert a.updated_at is None or a.updated_at <= after + timedelta(days=1), (title, a.updated_at)
    for a in stored.values():
        assert a.published_at is not None and a.published_at <= after
    snapshot = Publisher(hws.store, hws.config()).build()
    limit = after + timedelta(minutes=1)
    for path in ("latest.atom", "latest.rss"):
        parsed = feedparser.parse(snapshot.documents[path].body)
        stamps = [dict.get(parsed.feed, "updated_parsed")] + [
            dict.get(e, k) for e in parsed.entries for k in ("published_parsed", "updated_parsed")]
        for stamp in stamps:
            if stamp:
                when = datetime(*stamp[:6], tzinfo=timezone.utc)
                assert when <= limit, (path, when)
    body = snapshot.documents["latest.atom"].body.decode()
    assert "2999" not in body
    items_json = json.loads(snapshot.documents["latest.json"].body)["items"]
    for item in items_json:
        for key in ("date_published", "date_modified"):
            if key in item:
                assert datetime.fromisoformat(item[key].replace("Z", "+00:00")) <= limit, item
    assert "2999" not in snapshot.documents[""].body.decode()
    assert before.replace(microsecond=0) <= max(a.first_seen_at for a in stored.values()) <= after


def test_feed_claiming_another_feeds_url_as_its_self_link(hws: Workspace, server: FeedServer) -> None:
    victim = server.url("/victim")
    server.add("/victim", atom([story(1, site="http://victim.example", guid="urn:victim:1", title="Victim story 1"),
                                story(2, site="http://victim.example", guid="urn:victim:2", title="Victim story 2")],
                               title="Victim feed", feed_id="urn:victim:feed"), content_type="application/atom+xml")
    impostor_doc = atom(
        [story(1, site="http://victim.example", guid="urn:victim:1", title="Victim story 1 (copied)"),
         story(3, site="http://impostor.example", guid="urn:impostor:3", title="Impostor story 3")],
        title="Impostor feed", feed_id="urn:victim:feed",
    ).replace("<title>", f'<link rel="self" href="{victim}"/><title>', 1)
    impostor = server.add("/impostor", impostor_doc, content_type="application/atom+xml")
    hws.feeds([victim])
    assert hws.poll_url(victim).counts.new == 2
    victim_ids = {a.title: a.id for a, _ in hws.store.articles(feed_id=feed_id_for(victim))}
    hws.feeds([victim, impostor])
    for _ in range(2):
        reports = {r.url: r for r in hws.poll_all()}
        assert all(r.outcome in (Outcome.OK, Outcome.UNCHANGED) for r in reports.values()), reports
    v, i = hws.feed(victim), hws.feed(impostor)
    assert (v.url, v.title) == (victim, "Victim feed")
    assert (i.url, i.title) == (impostor, "Impostor feed")
    assert {a.title: a.id for a, _ in hws.store.articles(feed_id=feed_id_for(victim))} == victim_ids
    impostor_articles = {a.title: a for a, _ in hws.store.articles(feed_id=feed_id_for(impostor))}
    assert set(impostor_articles) == {"Victim story 1 (copied)", "Impostor story 3"}
    copied = impostor_articles["Victim story 1 (copied)"]
    assert copied.id not in victim_ids.values()  # the copy gets its own id...
    assert copied.duplicate_of == victim_ids["Victim story 1"]  # ...and is folded into the original
    snapshot = Publisher(hws.store, hws.config()).build()
    entries = {e.id: e for e in feedparser.parse(snapshot.documents["latest.atom"].body).entries}
    assert entries["urn:victim:1"].source.get("id") == victim  # the story is still the victim's
    assert entries[impostor_articles["Impostor story 3"].id].source.get("id") == impostor


# --- configuration and operator errors -------------------------------------------------------------------


def test_config_that_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.mkdir()
    proc = run_cli("poll", "--config", str(path))
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "directory" in proc.stderr.lower()
    assert "Traceback" not in proc.stderr


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"database: caf\xe9.db\n")
    proc = run_cli("poll", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: not UTF-8 text (invalid continuation byte at byte 13); save it as UTF-8"


def test_unknown_keys_exact_messages(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("databse: x.db\n")
    proc = run_cli("poll", "--config", str(path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {path}: databse: unknown setting (expected one of: database, feeds_dir, "
                                   "http, polling, output, retention, logging, stories, filters, tags, searches)")
    path.write_text("polling:\n  max_byte: 1MB\n")
    proc = run_cli("poll", "--config", str(path))
    assert proc.returncode == 2
    message = proc.stderr.strip()
    assert message.startswith(f"error: {path}: polling.max_byte: unknown setting (expected one of: interval, ")
    assert "max_bytes" in message and message.count("\n") == 0
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "aggregator.db").exists()


def test_feeds_file_with_bad_entries_names_them_and_polls_the_rest(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", good_doc(1))
    b = server.add("/b", rss([story(5, site="http://b.example")]))
    path = ws.feeds([a, {"url": "notaurl"}, {"url": b, "colour": "red"}, {"url": b + "?x=1", "interval": "soon"}, 42, b])
    (ws.root / "feeds" / "broken.yaml").write_text("feeds: [\n")
    proc = run_cli("poll", "--config", str(ws.config_path))
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: feed #2 (notaurl): url: expected an http:// or https:// URL, got 'notaurl'" in proc.stderr
    assert f"{path}: feed #3 ({b}): colour: unknown setting (expected one of: url, title, tags, interval," in proc.stderr
    assert f"{path}: feed #4 ({b}?x=1): interval: expected a duration like 90s, 15m, 2h or 1d, got 'soon'" in proc.stderr
    assert f"{path}: feed #5: expected a mapping with a 'url', got int" in proc.stderr
    assert "broken.yaml:2:1: invalid YAML" in proc.stderr
    assert "Polled 2 feeds" in proc.stdout and "2 ok" in proc.stdout
    assert len(server.requests_for("/a")) == 1 and len(server.requests_for("/b")) == 1


@pytest.mark.parametrize("content", [b"this is not a database, just text\n" * 50,
                                     b"SQLite format 3\x00" + bytes(range(256)) * 64, b"\x00" * 4096],
                         ids=["text", "sqlite-header-then-garbage", "zeros"])
@pytest.mark.sqlite_only
def test_database_file_that_is_not_sqlite(ws: Workspace, server: FeedServer, content: bytes) -> None:
    ws.feeds([server.add("/a", good_doc(1))])
    db = ws.config().database_path
    db.write_bytes(content)
    stamp = db.stat().st_mtime_ns
    for command in (["poll"], ["feeds", "list"], ["articles"], ["run"]):
        proc = run_cli(*command, "--config", str(ws.config_path), timeout=30)
        assert proc.returncode == 2, (command, proc.returncode, proc.stderr)
        assert proc.stderr.startswith(f"error: {db}: "), (command, proc.stderr)
        assert re.search(r"not an SQLite database|not a database|cannot open the database", proc.stderr), proc.stderr
        assert "Traceback" not in proc.stderr
    assert db.read_bytes() == content and db.stat().st_mtime_ns == stamp  # untouched
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}-journal").exists()
    assert server.requests_for("/a") == []


def _make_read_only(directory: Path) -> Callable[[], None]:
    """Make a directory unwritable, also for root; returns the undo."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return lambda: directory.chmod(0o755)
    # root ignores permission bits; the immutable attribute stops root too (ext4, xfs, btrfs...).
    proc = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if proc.returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(directory)], check=True)
    raise RuntimeError(f"cannot make {directory} read-only as root: chattr: {proc.stderr.strip()}")


def test_read_only_database_directory(ws: Workspace, server: FeedServer) -> None:
    """As root, chmod 0o555 does not stop writes; `chattr +i` does. (If this
    file system had no immutable attribute, _make_read_only raises: the test
    then fails loudly instead of passing without testing anything.)"""
    ws.feeds([server.add("/a", good_doc(1))])
    ws.write_config(database="data/test.db")
    (ws.root / "data").mkdir()
    run_cli("poll", "--config", str(ws.config_path), check=True)
    db = ws.root / "data" / "test.db"
    before = db.read_bytes()
    undo = _make_read_only(ws.root / "data")
    try:
        with pytest.raises(OSError):  # really read-only, also for this (root) process
            (ws.root / "data" / "probe").write_text("x")
        server.update("/a", body=good_doc(2, 1))
        expected = (f"error: {ws.root / 'data'}: the database directory is not writable; "
                    "SQLite needs it for its journal files")
        proc = run_cli("poll", "--config", str(ws.config_path), timeout=30)
        assert (proc.returncode, proc.stderr.strip()) == (2, expected)
        # The service reports the same problem the same way (exit 2: a setup error, not a crash).
        proc = run_cli("run", "--config", str(ws.config_path), timeout=30)
        assert proc.returncode == 2, (proc.returncode, proc.stderr)
        assert str(ws.root / "data") in proc.stderr and "not writable" in proc.stderr, proc.stderr
        assert db.read_bytes() == before
    finally:
        undo()
    assert len(server.requests_for("/a")) == 1  # nothing was polled that could not be stored


def test_database_directory_missing(ws: Workspace, server: FeedServer) -> None:
    """The database's directory is a regular file's child: it cannot exist."""
    (ws.root / "afile").write_text("x")
    ws.write_config(database="afile/test.db")
    ws.feeds([server.add("/a", good_doc(1))])
    proc = run_cli("poll", "--config", str(ws.config_path))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {ws.root / 'afile'}"), proc.stderr
    # Says what is wrong with the path, not only that SQLite could not open it.
    assert re.search(r"not a directory|does not exist", proc.stderr), proc.stderr
    assert server.requests_for("/a") == []


# --- the whole command and the whole service ---------------------------------------------------------------


def install_zoo(server: FeedServer, public_server: FeedServer, release: threading.Event) -> dict[str, tuple[str, str]]:
    """Hostile feeds for a CLI or daemon run: path -> (url, expected error regex)."""
    zoo: dict[str, tuple[str, str]] = {}

    def add(path: str, error: str, target: FeedServer | None = None, **route: Any) -> None:
        srv = target or server
        zoo[path] = (srv.add(path, **route), error)

    add("/z-huge", r"body is over the 1,000,000-byte limit \(decompressed\); stopped reading",
        handler=huge_feed(40 * MB, Sent(), declare_length=False))
    add("/z-bomb", r"body is over the 1,000,000-byte limit \(decompressed\); stopped reading",
        handler=gzip_bomb(2 * GB, Sent()))
    add("/z-chunked", r"body is over the 1,000,000-byte limit \(decompressed\); stopped reading",
        handler=endless_chunked(Sent()))
    add("/z-silent", r"read timeout: no data for 2s", handler=silent(release))
    add("/z-trickle", r"total deadline of 3s exceeded", handler=trickle(release))
    add("/z-500", r"HTTP 500 Internal Server Error", body=b"oops", status=500)
    add("/z-503", r"HTTP 503 Service Unavailable, retry after 7200s", body=b"busy", status=503,
        headers={"Retry-After": "7200"})
    add("/z-429", r"HTTP 429 Too Many Requests", body=b"slow down", status=429)
    add("/z-loop", r"redirect loop at .*/z-loop", handler=redirect("/z-loop"))
    add("/z-410", r"HTTP 410 Gone: the publisher removed this feed", body=b"gone", status=410)
    add("/z-empty", r"empty document: the server sent no content", body=b"")
    add("/z-html", r"not a feed: the server sent an HTML page.*", body=b"<html><body>hi</body></html>",
        content_type="text/html")
    server.add("/z-internal", rss([story(1)]))
    add("/z-public", re.escape("refused redirect from a public address to a private one (127.0.0.1)"),
        target=public_server, handler=redirect(server.url("/z-internal"), 301))
    zoo["refused"] = (f"http://127.0.0.1:{closed_port()}/feed", r"connection refused")
    return zoo


def test_cli_poll_survives_every_hostile_feed(hws: Workspace, server: FeedServer, public_server: FeedServer,
                                              release: threading.Event) -> None:
    hws.write_config(polling={"private_networks": ["127.0.0.1/32"], "per_host": 4})
    zoo = install_zoo(server, public_server, release)
    good = server.add("/good", good_doc(1, 2))
    hws.feeds([good, *(url for url, _ in zoo.values())])
    started = time.monotonic()
    proc = run_cli("poll", "--no-progress", "--config", str(hws.config_path), timeout=60)
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert f"Polled {len(zoo) + 1} feeds" in proc.stdout and f"{len(zoo)} failed" in proc.stdout, proc.stdout
    assert "Articles: 2 new" in proc.stdout
    assert took < 30, took
    rows = feeds_list(hws)
    assert rows[good]["last_error"] is None and rows[good]["articles"] == 2
    problems = []
    for path, (url, error) in zoo.items():
        row = rows[url]
        if not (row["last_error"] and re.fullmatch(error, row["last_error"])):
            problems.append(f"{path}: last_error {row['last_error']!r} does not match {error!r}")
        if not any(url in line and (row["last_error"] or "\0") in line for line in proc.stderr.splitlines()):
            problems.append(f"{path}: no log line names {url} with its error")
        if f"<{url}>: {row['last_error']}" not in proc.stdout:
            problems.append(f"{path}: not in the summary")
    assert not problems, "\n".join(problems)
    assert server.requests_for("/z-internal") == []


def test_daemon_keeps_polling_and_publishing_next_to_hostile_feeds(hws: Workspace, server: FeedServer,
                                                                   public_server: FeedServer, release: threading.Event,
                                                                   daemons: list[Daemon]) -> None:
    """The service runs with one good feed; the hostile ones are added with a
    reload (SIGHUP). Its memory is measured from then on."""
    good = server.add("/good", good_doc(1))
    feeds_file = hws.feeds([good])
    daemon = Daemon(hws, **LIMITS, private_networks=["127.0.0.1/32"], per_host=4, workers=6)
    hws.write_config(logging={"level": "info"})
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: b"Good story 1" in daemon.get("/latest.atom")[1], 20, "the good feed published")
    zoo = install_zoo(server, public_server, release)
    server.add("/z-xxe", external_entities("file:///etc/passwd", server.url("/z-secret"), server.url("/z-dtd"),
                                           server.url("/z-xsl")))
    daemon.wait_until(lambda: daemon.health().get("in_flight") == 0, 10, "the daemon idle before measuring")
    with PeakRSS(daemon.proc.pid, tree=True) as memory:  # type: ignore[union-attr]
        write_feeds(feeds_file, [good, *(url for url, _ in zoo.values()), server.url("/z-xxe")])
        daemon.signal(signal.SIGHUP)
        daemon.wait_until(lambda: all(url in daemon.log for url, _ in zoo.values()), 30, "every hostile feed polled once")
        server.update("/good", body=good_doc(2, 1))
        daemon.wait_until(lambda: b"Good story 2" in daemon.get("/latest.atom")[1], 20,
                          "the good feed's new story published while the hostile ones keep failing")
        daemon.wait_until(lambda: all(len(server.requests_for(p)) >= 2 for p in ("/z-silent", "/z-trickle")), 40,
                          "a second round of the slow ones")
    assert daemon.get("/healthz")[0] == 200
    assert memory.growth < MEMORY_BOUND, f"the service grew by {memory.growth / MB:.0f} MB"
    rows = feeds_list(hws)
    problems = []
    for path, (url, error) in zoo.items():
        row = rows[url]
        if not (row["last_error"] and re.fullmatch(error, row["last_error"])):
            problems.append(f"{path}: last_error {row['last_error']!r} does not match {error!r}")
        if not any(url in line and error_in(line, row["last_error"]) for line in daemon.log.splitlines()):
            problems.append(f"{path}: no log line names {url} with its error")
    assert not problems, "\n".join(problems)
    assert rows[server.url("/z-xxe")]["last_error"] is None and rows[good]["last_error"] is None
    for path in ("/z-secret", "/z-dtd", "/z-xsl", "/z-internal"):
        assert server.requests_for(path) == [], path
    published = b"".join(daemon.get(p)[1] for p in ("/latest.atom", "/latest.rss", "/latest.json", "/", "/feeds"))
    assert b"root:" not in published and b"Innocent XXE entry" in published
    assert len(server.requests_for("/z-410")) == 1
    assert daemon.stop() == 0


def error_in(line: str, error: str | None) -> bool:
    return bool(error) and error in line  # type: ignore[operator]


@pytest.mark.sqlite_only
def test_daemon_with_a_full_disk_keeps_serving_the_last_good_output(ws: Workspace, server: FeedServer,
                                                                    daemons: list[Daemon]) -> None:
    """RLIMIT_FSIZE stands in for a full disk: no file of the service may grow
    past 3 MB. A feed whose new entries need more than that cannot be stored;
    the service says so (naming the feed), keeps running, keeps polling the
    other feed, and keeps serving what it had."""
    good = server.add("/good", good_doc(1))
    switch = Switch(serve_body(earlier_doc()))
    big = server.add("/big", handler=switch)
    ws.feeds([good, big])
    ws.write_config(logging={"level": "info"})
    daemon = LimitedDaemon(ws, max_file_bytes=3 * MB, max_bytes="20MB", interval="2s", min_interval="2s")
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: EARLIER.encode() in daemon.get("/latest.atom")[1]
                      and b"Good story 1" in daemon.get("/latest.atom")[1], 20, "the first stories published")
    # 3,000 entries of 2 KB each: ~6 MB of rows plus their search index; the WAL cannot hold them.
    filler = "<p>" + "All work and no play makes Jack a dull boy. " * 45 + "</p>"
    switch.set(serve_body(rss([story(n, site=HOSTILE_SITE, title=f"Bulky {n}", summary=filler + str(n))
                               for n in range(3000)], title="Hostile feed")))
    requests_before = len(server.requests_for("/big"))
    storage_error = re.compile(r"disk I/O error|database or disk is full|File too large|No space")
    daemon.wait_until(lambda: len(server.requests_for("/big")) >= requests_before + 1
                      and any(storage_error.search(line) for line in daemon.log.splitlines()
                              if re.search(r"ERROR|WARNING", line)),
                      30, "the storage error")
    # The log record that names the feed carries the storage error (its
    # message, or the traceback that belongs to it).
    records = re.split(r"\n(?=\d{4}-\d\d-\d\dT)", daemon.log)
    failures = [r for r in records if big in r.splitlines()[0] and re.search(r"ERROR|WARNING", r.splitlines()[0])]
    assert any(re.search(r"disk I/O error|database or disk is full|File too large|No space", r) for r in failures), \
        "no log record names the feed together with the storage error:\n" + daemon.log[-3000:]
    started = time.monotonic()
    server.update("/good", body=good_doc(2, 1))
    daemon.wait_until(lambda: b"Good story 2" in daemon.get("/latest.atom")[1], 15,
                      "the good feed's new story stored and published while the disk is full for the big one")
    daemon.wait_until(lambda: len([r for r in server.requests_for("/good") if r.at > started]) >= 3, 15,
                      "three polls of the good feed (some 6 s at its 2 s interval)")
    assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log[-3000:]
    status, body = daemon.get("/latest.atom")
    assert status == 200 and EARLIER.encode() in body and b"Good story 1" in body
    assert daemon.get("/healthz")[0] == 200
    assert len([r for r in server.requests_for("/good") if r.at > started]) >= 2  # the good feed is still polled
    big_polls = [r.at for r in server.requests_for("/big") if r.at > started]
    assert daemon.stop() == 0
    store = sqlite3.connect(ws.config().database_path)
    try:
        assert store.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        titles = {r[0] for r in store.execute("SELECT title FROM articles")}
    finally:
        store.close()
    assert {EARLIER, "Good story 1", "Good story 2"} <= titles  # nothing committed was lost
    # A feed that cannot be stored is not hammered: its interval and the
    # error backoff still apply (the state that says so could not be written).
    gaps = [round(b - a, 2) for a, b in zip(big_polls, big_polls[1:])]
    assert len(big_polls) <= 3 and all(g >= 1.9 for g in gaps), \
        f"{len(big_polls)} requests for the failing feed in 3 polls of the good one, {gaps} s apart (interval 2 s, then backoff)"
