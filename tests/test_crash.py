"""Crash safety, tested: SIGKILL at random moments during ingest, SIGTERM
mid-poll, and two processes writing at once."""

from __future__ import annotations

import pytest

import random
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import feedparser

from aggregator.subscriptions import feed_id_for
from tests.conftest import Workspace, run_cli
from tests.daemon import Daemon
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer, Handler


class GrowingFarm:
    """Feeds that gain an entry now and then while the daemon runs. Records
    every entry it ever served, per feed."""

    def __init__(self, server: FeedServer, feeds: int, entries: int, delay: float = 0.0):
        self.server = server
        self.lock = threading.Lock()
        self.counts = {f: entries for f in range(feeds)}
        self.served: dict[int, set[str]] = {f: set() for f in range(feeds)}
        self.delay = delay
        self.growing = True
        for f in range(feeds):
            server.add(f"/feed{f}", handler=self._handler(f))

    def url(self, f: int) -> str:
        return self.server.url(f"/feed{f}")

    def guid(self, f: int, n: int) -> str:
        return f"http://farm{f}.example/story/{n}"

    def _handler(self, f: int):  # type: ignore[no-untyped-def]
        def handle(h: Handler) -> None:
            with self.lock:
                if self.growing and random.random() < 0.3:
                    self.counts[f] += 1
                count = self.counts[f]
            items = [story(n, site=f"http://farm{f}.example") for n in range(count - 1, -1, -1)][:60]
            body = rss(items, title=f"Farm {f}").encode()
            if self.delay:
                time.sleep(self.delay)  # the server's own slowness, not a test waiting for an event
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            try:
                h.wfile.write(body)
            except OSError:
                return  # the daemon was killed mid-transfer
            with self.lock:
                self.served[f].update(self.guid(f, n) for n in range(max(0, count - 60), count))
        return handle


def db_rows(path: Path) -> list[tuple[str, str, str, str | None, str | None]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT feed_id, guid, id, duplicate_of, canonical_url FROM articles").fetchall()
    finally:
        conn.close()


def polls_written(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT COUNT(*) FROM feeds WHERE last_fetch_at IS NOT NULL").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def wait_for_no_orphans(daemon: Daemon) -> None:
    """A killed daemon must not leave processes behind: nothing of its
    process group (parser workers, the forkserver) may outlive it. Known by
    group id, so another aggregator on the machine cannot fail this."""
    deadline = time.monotonic() + 10
    while left := daemon.group():
        if time.monotonic() > deadline:
            raise AssertionError(f"processes left behind by the killed daemon: {[p.cmdline() for p in left]}")
        time.sleep(0.2)  # the polling interval of the condition


@pytest.mark.sqlite_only
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(ws: Workspace, server: FeedServer,
                                                                daemons: list[Daemon]) -> None:
    farm = GrowingFarm(server, feeds=24, entries=40)
    ws.feeds([farm.url(f) for f in range(24)])
    ws.write_config(stories={"enabled": True})  # story decisions are part of each killed transaction
    rng = random.Random(20261129)
    db = ws.root / "test.db"
    ids_seen: dict[tuple[str, str], str] = {}
    kills = 0
    started = time.monotonic()
    largest_group = 0
    while kills < 22 and time.monotonic() - started < 150:
        # Every document to the parser processes (well-formed ones would be read in the fetch
        # threads): the daemon must have processes that a kill could leave behind.
        daemon = Daemon(ws, new_session=True, env={"AGGREGATOR_PARSE_ENGINE": "feedparser"}, interval="1s",
                        min_interval="1s", dispatch_every="0.2s", parse_workers=2, workers=6)
        daemon.start(wait=False)
        time.sleep(rng.uniform(0.4, 2.5))  # not a wait for an event: the kill comes at a random moment
        assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log[-2000:]
        largest_group = max(largest_group, len(daemon.group()))
        daemon.proc.send_signal(signal.SIGKILL)  # the daemon alone: its children must go by themselves
        daemon.proc.wait()
        kills += 1
        wait_for_no_orphans(daemon)
        if db.exists():
            assert integrity(db) == "ok"
            for feed_id, guid, output_id, _, _ in db_rows(db):
                key = (feed_id, guid)
                assert ids_seen.setdefault(key, output_id) == output_id, f"output id changed for {key}"
    assert kills >= 20
    assert largest_group > 1, "the daemon never had a parser process to leave behind: the check above proved nothing"
    # One last clean run: stop the growth, let every feed be polled, stop.
    farm.growing = False
    final = Daemon(ws, interval="1s", min_interval="1s", dispatch_every="0.2s")
    daemons.append(final)  # killed by the fixture if this test fails before it stops
    final.start()
    mark = time.monotonic()
    final.wait_until(lambda: all(any(r.at > mark + 1.5 for r in server.requests_for(f"/feed{f}")) for f in range(24)),
                     30, "every feed polled after the growth stopped")
    final.wait_until(lambda: final.get("/healthz")[0] == 200, 5, "healthy")
    final.wait_until(lambda: bool(feedparser.parse(final.get("/latest.atom")[1]).entries), 10, "a published Latest")
    latest = final.get("/latest.atom")[1]
    assert final.stop() == 0
    assert integrity(db) == "ok"
    rows = db_rows(db)
    stored: dict[str, list[str]] = {}
    for feed_id, guid, output_id, _, _ in rows:
        stored.setdefault(feed_id, []).append(guid)
        assert ids_seen.get((feed_id, guid), output_id) == output_id, "output id changed"
    for f in range(24):
        guids = stored.get(feed_id_for(farm.url(f)), [])
        assert len(guids) == len(set(guids)), f"feed {f} has a story twice"
        assert set(guids) == farm.served[f], f"feed {f}: stored {len(guids)}, served {len(farm.served[f])}"
    entries = feedparser.parse(latest).entries
    assert entries
    assert len({e.id for e in entries}) == len(entries)
    assert len({e.link for e in entries}) == len(entries)


@pytest.mark.sqlite_only
def test_sigterm_mid_poll_leaves_no_partial_state(ws: Workspace, server: FeedServer) -> None:
    for f in range(12):
        server.add(f"/slow{f}", rss([story(n, site=f"http://slow{f}.example") for n in range(30)], title=f"Slow {f}"))
    lock = threading.Lock()
    answering = {"now": 0}

    def slowly(h: Handler, f: int) -> None:
        body = rss([story(n, site=f"http://slow{f}.example") for n in range(30)], title=f"Slow {f}").encode()
        with lock:
            answering["now"] += 1
        time.sleep(0.6)  # the server's own slowness, not a test waiting for an event
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            h.wfile.write(body)
        except OSError:
            pass
        with lock:
            answering["now"] -= 1

    for f in range(12):
        server.update(f"/slow{f}", handler=lambda h, f=f: slowly(h, f))
    ws.feeds([server.url(f"/slow{f}") for f in range(12)])
    daemon = Daemon(ws, workers=4, shutdown_timeout="0.3s", dispatch_every="0.2s")
    daemon.start()
    # Stop when at least one poll is written and others are still being answered.
    daemon.wait_until(lambda: polls_written(ws.root / "test.db") >= 1 and answering["now"] >= 1, 20,
                      "a poll written while others are in flight")
    assert daemon.stop() == 0
    assert integrity(ws.root / "test.db") == "ok"
    conn = sqlite3.connect(ws.root / "test.db")
    per_feed = dict(conn.execute("SELECT feed_id, COUNT(*) FROM articles GROUP BY feed_id").fetchall())
    fetched = {r[0]: r[1] for r in conn.execute("SELECT id, last_fetch_at FROM feeds")}
    conn.close()
    assert per_feed, "nothing was stored before the stop"
    for feed_id, last_fetch in fetched.items():
        # Either the whole poll was written (30 articles and the feed's state) or nothing of it.
        assert (per_feed.get(feed_id, 0), last_fetch is not None) in ((30, True), (0, False)), (feed_id, per_feed.get(feed_id))
    assert len(per_feed) < 12  # the stop really came mid-poll


@pytest.mark.sqlite_only
def test_daemon_and_a_manual_poll_write_at_once(ws: Workspace, server: FeedServer) -> None:
    urls = [server.add(f"/f{f}", rss([story(n, site=f"http://f{f}.example") for n in range(40)], title=f"F{f}"))
            for f in range(30)]
    ws.feeds(urls)
    daemon = Daemon(ws, interval="1s", min_interval="1s", dispatch_every="0.2s")
    daemon.start()
    results = [run_cli("poll", "--config", str(ws.config_path), timeout=120) for _ in range(3)]
    assert daemon.stop() == 0
    for proc in results:
        assert proc.returncode == 0, proc.stderr
        assert "locked" not in proc.stderr.lower()
        # A feed the service holds at that moment is skipped (said), never polled twice at once.
        skipped = re.search(r"note: (\d+) feed\(s\) being polled by another poller", proc.stderr)
        polled = re.search(r"Polled (\d+) feeds", proc.stdout)
        assert polled, proc.stdout
        assert int(polled[1]) + (int(skipped[1]) if skipped else 0) == 30, (proc.stdout, proc.stderr)
        assert "0 failed" in proc.stdout
    assert "database is locked" not in daemon.log
    assert integrity(ws.root / "test.db") == "ok"
    rows = db_rows(ws.root / "test.db")
    assert len(rows) == 30 * 40 and len({(r[0], r[1]) for r in rows}) == 30 * 40
