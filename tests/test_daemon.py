"""`aggregator run` as a real subprocess against a fixture server whose
feeds change while it runs (short intervals set in its config)."""

from __future__ import annotations

import pytest

import json
import signal
import threading
import time

import feedparser

from aggregator.subscriptions import feed_id_for
from aggregator.store import open_store
from tests.conftest import Workspace, run_cli
from tests.daemon import Daemon, gaps, write_feeds
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer, Handler


def start(daemons: list[Daemon], ws: Workspace, **polling: object) -> Daemon:
    daemon = Daemon(ws, **polling)
    daemons.append(daemon)
    return daemon.start()


def request_times(server: FeedServer, path: str) -> list[float]:
    return [r.at for r in server.requests_for(path)]


def test_new_entries_appear_within_the_next_interval(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    url = server.add("/feed", rss([story(1)]), etag='"v1"')
    ws.feeds([url])
    d = start(daemons, ws)
    d.wait_until(lambda: b"Story 1" in d.get("/latest.atom")[1], 10, "the first story")
    server.update("/feed", body=rss([story(2), story(1)]), etag='"v2"')
    took = d.wait_until(lambda: b"Story 2" in d.get("/latest.atom")[1], 10, "the new story")
    assert took < 3 + 0.3 + 1.5  # interval + debounce + slack
    entries = feedparser.parse(d.get("/latest.atom")[1]).entries
    assert [e.title for e in entries] == ["Story 2", "Story 1"]
    # the static copy too (written just after the served one is swapped in)
    d.wait_until(lambda: (ws.root / "public" / "latest.atom").read_bytes() == d.get("/latest.atom")[1], 5,
                 "the static copy to match what is served")
    d.wait_until(lambda: len(server.requests_for("/feed")) >= 3, 10, "a third poll")
    logged = server.requests_for("/feed")
    assert not logged[0].conditional and all(r.conditional for r in logged[1:])
    assert all(g >= 2.9 for g in gaps([r.at for r in logged])), gaps([r.at for r in logged])
    assert d.stop() == 0


def test_max_age_and_retry_after_are_honoured(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    cached = server.add("/cached", rss([story(1)]), headers={"Cache-Control": "max-age=6"})
    state = {"n": 0}

    def limited(h: Handler) -> None:
        state["n"] += 1
        if state["n"] == 1:
            h.send_plain(429, b"slow down", {"Retry-After": "7"})
        else:
            body = rss([story(2)]).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

    limited_url = server.add("/limited", handler=limited)
    ws.feeds([cached, limited_url])
    d = start(daemons, ws)
    d.wait_until(lambda: len(server.requests_for("/limited")) >= 2 and len(server.requests_for("/cached")) >= 2, 20,
                 "second requests")
    assert gaps(request_times(server, "/cached"))[0] >= 5.9  # max-age=6 beat the 3 s interval
    assert gaps(request_times(server, "/limited"))[0] >= 6.9  # Retry-After: 7
    assert d.stop() == 0


def test_backoff_grows_on_errors_and_resets_after_success(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    state = {"n": 0}

    def flaky(h: Handler) -> None:
        state["n"] += 1
        if state["n"] <= 4:
            h.send_plain(500, b"broken")
            return
        body = rss([story(1)]).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    url = server.add("/flaky", handler=flaky)
    ws.feeds([url])
    d = start(daemons, ws, interval="1s", min_interval="1s")
    d.wait_until(lambda: len(server.requests_for("/flaky")) >= 6, 30, "six requests")
    g = gaps(request_times(server, "/flaky"))[:5]
    # 4 failures: 1 s, 2 s, 4 s, 8 s apart; after the success, back to 1 s.
    for got, want in zip(g, [1, 2, 4, 8, 1]):
        assert want - 0.1 <= got <= want + 1.0, g
    status = json.loads(run_cli("feeds", "list", "--json", "--config", str(ws.config_path), check=True).stdout)
    assert status["error_count"] == 0 and status["last_status"] == 200
    assert d.stop() == 0


def test_gone_feed_is_never_requested_again(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    gone = server.add("/gone", b"bye", status=410)
    alive = server.add("/alive", rss([story(1)]))
    ws.feeds([gone, alive])
    d = start(daemons, ws)
    d.wait_until(lambda: len(server.requests_for("/alive")) >= 3, 15, "three polls of the live feed")
    assert len(server.requests_for("/gone")) == 1
    row = json.loads([line for line in run_cli("feeds", "list", "--json", "--config", str(ws.config_path)).stdout.splitlines()
                      if "/gone" in line][0])
    assert row["status"] == "gone" and row["next_poll_at"] is None and "410" in row["last_error"]
    assert d.stop() == 0


def test_301_adopted_after_two_valid_polls_302_never(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    server.add("/old", status=301, headers={"Location": "/new"}, content_type=None)
    server.add("/new", rss([story(1)]))
    server.add("/temp", status=302, headers={"Location": "/temp-target"}, content_type=None)
    server.add("/temp-target", rss([story(2, site="http://temp.example")]))
    ws.feeds([server.url("/old"), server.url("/temp")])
    d = start(daemons, ws)
    d.wait_until(lambda: len(server.requests_for("/new")) >= 4 and len(server.requests_for("/temp")) >= 4, 20, "four polls")
    assert d.stop() == 0  # no poll in flight while counting
    assert len(server.requests_for("/old")) == 2  # two confirmations, then the new URL directly
    assert len(server.requests_for("/temp")) == len(server.requests_for("/temp-target"))  # 302: always via the old URL
    store = open_store(ws.config().settings.database, ws.root)
    assert store.feed(feed_id_for(server.url("/old"))).url == server.url("/new")  # type: ignore[union-attr]
    assert store.feed(feed_id_for(server.url("/temp"))).url == server.url("/temp")  # type: ignore[union-attr]
    store.close()


def test_at_most_two_requests_per_host(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def slow(h: Handler) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.8)  # the server's own slowness, not a test waiting for an event
        with lock:
            state["now"] -= 1
        body = rss([story(int(h.path.strip("/s")))]).encode()
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    urls = [server.add(f"/s{i}", handler=slow) for i in range(8)]
    ws.feeds(urls)
    d = start(daemons, ws, workers=8)
    d.wait_until(lambda: all(server.requests_for(f"/s{i}") for i in range(8)), 20, "every feed polled")
    assert state["max"] == 2
    assert d.stop() == 0


def test_sighup_adds_and_removes_feeds_and_survives_a_bad_config(ws: Workspace, server: FeedServer,
                                                                 daemons: list[Daemon]) -> None:
    a, b, c = (server.add(f"/{n}", rss([story(i, site=f"http://{n}.example")])) for i, n in enumerate("abc"))
    feeds_file = ws.feeds([a, b])
    d = start(daemons, ws)
    d.wait_until(lambda: server.requests_for("/a") and server.requests_for("/b"), 10, "a and b polled")
    write_feeds(feeds_file, [a, c])
    d.signal(signal.SIGHUP)
    d.wait_until(lambda: len(server.requests_for("/c")) >= 1, 10, "the added feed polled")
    removed_at, removed_wall = time.monotonic(), time.time()
    # b was due again at most one interval (3 s) after the reload: once the
    # dispatcher has run past that, and a has been polled since, b would have been too.
    d.wait_for_dispatch_after(removed_wall + 3.5)
    d.wait_until(lambda: any(r.at > removed_at for r in server.requests_for("/a")), 10, "a polled after the reload")
    assert all(r.at <= removed_at for r in server.requests_for("/b"))
    assert d.get("/healthz")[0] == 200
    good_config = ws.config_path.read_text()
    ws.config_path.write_text("polling:\n  interval: whenever\n")
    d.signal(signal.SIGHUP)
    d.wait_until(lambda: "reload: the new configuration is invalid, keeping the old one" in d.log, 10, "the reload error")
    assert "polling.interval: expected a duration" in d.log
    count = len(server.requests_for("/a"))
    d.wait_until(lambda: len(server.requests_for("/a")) > count, 10, "polling to go on")
    ws.config_path.write_text(good_config)
    assert d.stop() == 0


def test_sigterm_and_restart_resume_the_schedule(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    urls = [server.add(f"/f{i}", rss([story(i)])) for i in range(5)]
    ws.feeds(urls)
    d = start(daemons, ws, interval="20s", min_interval="20s")
    d.wait_until(lambda: all(server.requests_for(f"/f{i}") for i in range(5)) and d.health().get("in_flight") == 0,
                 15, "every feed polled and its poll written")
    stopping = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - stopping < 5
    assert "stopped cleanly" in d.log
    server.clear_log()
    restarted = time.time()
    again = start(daemons, ws, interval="20s", min_interval="20s")
    again.wait_for_dispatch_after(restarted + 1.0)  # several ticks: anything due would have been handed out
    assert again.health()["feeds"]["due"] == 0 and again.health()["in_flight"] == 0
    assert server.log == []  # nothing was due: nothing is polled at start
    assert again.stop() == 0


def test_sigterm_abandons_a_hung_fetch_within_the_deadline(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    release = threading.Event()

    def hang(h: Handler) -> None:
        release.wait(30)

    server.add("/hang", handler=hang)
    ok = server.add("/ok", rss([story(1)]))
    ws.feeds([server.url("/hang"), ok])
    d = start(daemons, ws, shutdown_timeout="2s", timeout="30s", deadline="60s")
    d.wait_until(lambda: server.requests_for("/hang") and server.requests_for("/ok"), 10, "both feeds requested")
    stopping = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - stopping < 2 + 4
    release.set()
    assert "abandoned 1 fetch(es)" in d.log
    store = open_store(ws.config().settings.database, ws.root)
    hung = store.feed(feed_id_for(server.url("/hang")))
    assert hung is not None and hung.last_fetch_at is None and hung.error_count == 0  # nothing half-written: still due
    assert store.integrity_check() == "ok"
    store.close()


def test_healthz_and_metrics(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    a = server.add("/a", rss([story(1), story(2)]), etag='"x"')
    b = server.add("/b", rss([story(1, guid="b-1")]))
    broken = server.add("/broken", b"no", status=500)
    ws.feeds([a, b, broken])
    d = start(daemons, ws)
    d.wait_until(lambda: len(server.requests_for("/a")) >= 2, 10, "a 304")
    # The server answered before the poll was written and counted: wait for the count, not the request.
    d.wait_until(lambda: b'outcome="not_modified"' in d.get("/metrics")[1], 10, "the 304 counted")
    status, body = d.get("/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok" and health["scheduler_running"] is True
    assert health["last_poll_at"] and health["last_publish_at"] and health["feeds"]["failing"] == 1
    metrics = d.get("/metrics")[1].decode()
    assert 'aggregator_fetches_total{outcome="ok",status="200"} 2.0' in metrics
    assert 'aggregator_fetches_total{outcome="not_modified",status="304"}' in metrics
    assert 'aggregator_fetches_total{outcome="http_error",status="500"}' in metrics
    assert 'aggregator_articles_total{result="new"} 2.0' in metrics
    assert 'aggregator_articles_total{result="duplicate"} 1.0' in metrics
    assert "aggregator_fetched_bytes_total" in metrics and "aggregator_parse_seconds_count" in metrics
    assert "aggregator_feeds_failing 1.0" in metrics
    assert f"feed 'Fixture feed' <{a}>: ok 200: 2 new" in d.log  # log lines name the feed and the outcome
    out = run_cli("status", "--config", str(ws.config_path))
    assert out.returncode == 0 and "Service: running" in out.stdout and "failing: " in out.stdout
    assert d.stop() == 0
    stopped = run_cli("status", "--config", str(ws.config_path))
    assert stopped.returncode == 3 and "Service: not running" in stopped.stdout


@pytest.mark.sqlite_only
def test_a_second_daemon_on_the_same_database_refuses(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    ws.feeds([server.add("/a", rss([story(1)]))])
    d = start(daemons, ws)
    second = run_cli("run", "--config", str(ws.config_path), timeout=20)
    assert second.returncode == 1
    assert f"another `aggregator run` (pid {d.proc.pid}) is already using" in second.stderr  # type: ignore[union-attr]
    assert d.stop() == 0


def test_json_logs(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    ws.feeds([server.add("/a", rss([story(1)]))])
    ws.write_config(logging={"level": "info", "format": "json"})
    d = start(daemons, ws)
    d.wait_until(lambda: server.requests_for("/a") and "ok 200" in d.log, 10, "a poll")
    assert d.stop() == 0
    records = [json.loads(line) for line in d.log.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "name", "message"} <= set(r) for r in records)
    assert any("ok 200: 1 new" in r["message"] for r in records)


def test_edits_to_feeds_apply_without_a_signal(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    a = server.add("/a", rss([story(1)]))
    b = server.add("/b", rss([story(2, site="http://b.example")]))
    ws.feeds([a])
    d = start(daemons, ws)
    d.wait_until(lambda: server.requests_for("/a"), 10, "a polled")
    proc = run_cli("feeds", "add", b, "--config", str(ws.config_path))
    assert proc.returncode == 0, proc.stderr
    assert len(server.requests_for("/b")) == 1  # `feeds add` checked the URL
    d.wait_until(lambda: len(server.requests_for("/b")) >= 2, 15, "the added feed polled without a SIGHUP")
    assert "changed: reloading" in d.log
    assert d.stop() == 0


def test_one_big_host_does_not_starve_the_others(ws: Workspace, server: FeedServer) -> None:
    from aggregator.scheduler import Dispatcher
    from aggregator.store.feeds import host_of
    from tests.fixture_server import FeedServer as Server

    release = threading.Event()

    def slow(h: Handler) -> None:
        release.wait(10)
        h.send_plain(500, b"busy")

    big = [server.add(f"/big{i}", handler=slow) for i in range(300)]
    other = Server(host="127.0.0.2")
    try:
        small = [other.add(f"/small{i}", handler=slow) for i in range(5)]
        ws.feeds(big + small)  # the big host's 300 feeds come first in due order
        ws.sync()
        dispatcher = Dispatcher(ws.store, ws.poller(), workers=8, per_host=2, every=60, on_polled=lambda r: None)
        dispatcher._fill()
        hosts = sorted(dispatcher._in_flight.values())
        # A server is a host and port (two ports, two servers): both at their limit of 2.
        assert hosts == [host_of(big[0])] * 2 + [host_of(small[0])] * 2
        release.set()
        dispatcher.stop(5)
    finally:
        release.set()
        other.close()
