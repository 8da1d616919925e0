"""Several pollers sharing one PostgreSQL database (issue 14): separate
`aggregator run` processes, as on several machines. No feed polled twice at
once, a dead poller's feeds taken over within a lease, the per-host limit
held across pollers, the same bytes served by every node, one migration
when nodes start together, and `db copy` both ways without a subscriber
noticing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import feedparser
import pytest

from tests.conftest import Workspace, run_cli
from tests.daemon import Daemon
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer, Handler

pytestmark = pytest.mark.postgres_only


class _Counting:
    """A feed that takes a while and counts how many of its requests run at once, per path and in all."""

    def __init__(self, delay: float = 0.4):
        self.delay = delay
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.total_now = 0
        self.peak_total = 0
        self.overlaps: list[str] = []

    def __call__(self, h: Handler) -> None:
        path = h.path.split("?")[0]
        with self.lock:
            self.now[path] = self.now.get(path, 0) + 1
            if self.now[path] > 1:
                self.overlaps.append(path)
            self.total_now += 1
            self.peak_total = max(self.peak_total, self.total_now)
        try:
            time.sleep(self.delay)  # the server's own slowness (it makes overlaps possible), not a wait in the test
            body = rss([story(1, site=f"http://{path.strip('/')}.example")]).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        finally:
            with self.lock:
                self.now[path] -= 1
                self.total_now -= 1


def _node(ws: Workspace, root: Path, **polling: Any) -> Daemon:
    """One more node: its own config (own port, own output dir), the same database and feeds/."""
    root.mkdir(parents=True, exist_ok=True)
    node = Workspace(root)
    node.settings = {**ws.settings}
    node.write_config(feeds_dir=str(ws.root / "feeds"))
    daemon = Daemon(node, **polling)
    return daemon


def test_three_pollers_never_poll_one_feed_at_once_and_keep_the_host_limit(
    ws: Workspace, server: FeedServer, tmp_path: Path, daemons: list[Daemon]
) -> None:
    counting = _Counting()
    urls = [server.add(f"/f{n}", handler=counting) for n in range(12)]
    ws.feeds(urls)
    nodes = [_node(ws, tmp_path / f"node{i}", per_host=2, workers=4, interval="2s", min_interval="2s") for i in range(3)]
    for node in nodes:
        daemons.append(node)
        node.start(wait=False)
    for node in nodes:
        node.wait_until(lambda n=node: n.get("/healthz")[0] == 200, 30, "the node healthy")
    started = time.monotonic()
    nodes[0].wait_until(lambda: all(len(server.requests_for(f"/f{n}")) >= 3 for n in range(12)), 60,
                        "every feed polled three times")  # fmt: skip
    assert counting.overlaps == [], f"polled twice at once: {counting.overlaps[:5]}"
    assert counting.peak_total <= 2, f"{counting.peak_total} requests at once to one host (per_host is 2)"
    polled_by = {line.split("aggregator running (pid ")[1].split(",")[0] for node in nodes for line in node.log.splitlines()
                 if "aggregator running (pid " in line}  # fmt: skip
    assert len(polled_by) == 3
    work = [node.log.count("ok 200") + node.log.count("unchanged 200") for node in nodes]
    assert sum(1 for n in work if n > 0) >= 2, work  # the work is shared
    assert time.monotonic() - started < 60
    for node in nodes:
        assert node.stop() == 0


def test_a_killed_poller_loses_its_feeds_within_one_lease(ws: Workspace, server: FeedServer, tmp_path: Path,
                                                        daemons: list[Daemon]) -> None:
    release = threading.Event()

    def hung(h: Handler) -> None:
        release.wait(60)  # the server holds the request until the test lets it go

    server.add("/hung", handler=hung)
    ws.feeds([server.url("/hung")])
    first = _node(ws, tmp_path / "first", lease="10s", interval="2s", min_interval="2s", deadline="60s", timeout="60s")
    daemons.append(first)
    first.start()
    first.wait_until(lambda: server.requests_for("/hung"), 15, "the first node's poll")
    assert first.proc is not None
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    killed = time.monotonic()
    release.set()
    server.add("/hung", rss([story(1)]))
    second = _node(ws, tmp_path / "second", lease="10s", interval="2s", min_interval="2s")
    daemons.append(second)
    second.start()
    second.wait_until(lambda: b"Story 1" in second.get("/latest.atom")[1], 40, "the feed taken over")
    assert time.monotonic() - killed < 10 + 20  # one lease, plus the start of the second node
    assert second.stop() == 0


def test_every_node_serves_the_same_bytes(ws: Workspace, server: FeedServer, tmp_path: Path,
                                          daemons: list[Daemon]) -> None:
    urls = [server.add(f"/n{n}", rss([story(i, site=f"http://n{n}.example") for i in range(5)])) for n in range(4)]
    ws.feeds(urls)
    nodes = [_node(ws, tmp_path / f"node{i}") for i in range(2)]
    for node in nodes:
        daemons.append(node)
        node.start()
    for node in nodes:
        node.wait_until(lambda n=node: n.get("/latest.atom")[1].count(b"<entry>") == 20, 30, "all stories served")
    bodies = [node.get("/latest.atom")[1] for node in nodes]
    assert bodies[0] == bodies[1]
    etags = [_etag(node.port) for node in nodes]
    assert etags[0] == etags[1] and etags[0]
    for node in nodes:
        assert node.stop() == 0


def _etag(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/latest.json")
    response = conn.getresponse()
    response.read()
    return response.getheader("ETag") or ""


def test_nodes_starting_together_migrate_once(postgres: Any) -> None:
    cluster, _template = postgres
    url = cluster.new_database()  # empty: no schema yet
    code = "from aggregator.store.postgres import PostgresStore; s = PostgresStore(%r); print(s.schema_version()); s.close()"
    procs = [subprocess.Popen([sys.executable, "-c", code % url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]  # fmt: skip
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert [out.strip() for out, _ in results] == ["1"] * 4
    import psycopg

    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == 1


def test_different_feeds_on_two_nodes_do_not_flap(ws: Workspace, server: FeedServer, tmp_path: Path,
                                                   daemons: list[Daemon]) -> None:
    a, b = server.add("/a", rss([story(1)])), server.add("/b", rss([story(2, site="http://b.example")]))
    ws.feeds([a, b])
    node = Daemon(ws, interval="1h")  # a running node lists a and b (a command that ends is no node)
    daemons.append(node)  # stopped by the fixture whatever happens
    node.start()
    (tmp_path / "other").mkdir()
    other = Workspace(tmp_path / "other")
    other.settings = {**ws.settings}
    other.write_config()
    other.feeds([a])  # this node's feeds/ lacks b
    proc = run_cli("feeds", "list", "--json", "--config", str(other.config_path), check=True)
    listed = {json.loads(line)["url"]: json.loads(line)["status"] for line in proc.stdout.splitlines()}
    assert listed == {a: "active", b: "active"}  # b is still listed by a live node: not unsubscribed
    assert "lists other feeds than this one" in proc.stderr
    assert node.stop() == 0


def test_db_copy_both_ways_keeps_what_subscribers_see(ws: Workspace, server: FeedServer, tmp_path: Path,
                                                     postgres: Any) -> None:
    from aggregator.publish import Publisher

    cluster, template = postgres
    ws.write_config(database="source.db", stories={"enabled": True})
    urls = [server.add(f"/c{n}", rss([story(i, site=f"http://c{n}.example") for i in range(6)])) for n in range(3)]
    ws.feeds(urls)
    ws.poll_all()
    before = Publisher(ws.store, ws.config()).build().documents["latest.atom"].body
    ws.close()
    pg_url = cluster.new_database(template)
    proc = run_cli("db", "copy", "--from", str(ws.root / "source.db"), "--to", pg_url, cwd=ws.root)
    assert proc.returncode == 0, proc.stderr
    assert "18 articles" in proc.stdout
    ws.write_config(database=pg_url)
    assert Publisher(ws.store, ws.config()).build().documents["latest.atom"].body == before
    ws.close()
    back = tmp_path / "back.db"
    proc = run_cli("db", "copy", "--from", pg_url, "--to", str(back), cwd=ws.root)
    assert proc.returncode == 0, proc.stderr
    ws.write_config(database=str(back))
    assert Publisher(ws.store, ws.config()).build().documents["latest.atom"].body == before
    again = run_cli("db", "copy", "--from", str(ws.root / "source.db"), "--to", pg_url, cwd=ws.root)
    assert again.returncode != 0 and "not empty" in again.stderr
    assert "***" not in again.stderr or pg_url not in again.stderr
    assert feedparser.parse(before).entries


def test_a_node_whose_job_session_ended_stops_doing_the_job_and_another_takes_it(postgres: Any) -> None:
    import psycopg

    from aggregator.store.postgres import PostgresStore

    cluster, template = postgres
    url = cluster.new_database(template)
    first, second, third = PostgresStore(url), PostgresStore(url), PostgresStore(url)
    try:
        assert first.try_job("render") and first.try_job("render")  # held, and checked alive each time
        assert not second.try_job("render")
        # The server ends the first node's session, as it does for a node cut off by a partition
        # once the keepalive probes go unanswered.
        pid = first._job_conns["render"].info.backend_pid
        with psycopg.connect(url, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()[0]
            deadline = time.monotonic() + 10  # terminating is asynchronous: wait until the session is gone
            while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0]:
                assert time.monotonic() < deadline, "the terminated session did not end"
        assert third.try_job("render")  # free again: another node takes it over
        assert not first.try_job("render")  # and the cut-off node knows it no longer has it
    finally:
        for store in (first, second, third):
            store.close()


def test_a_node_whose_database_goes_away_keeps_serving_says_why_and_stops_promptly(
    tmp_path: Path, server: FeedServer, daemons: list[Daemon]
) -> None:
    from tests.pg import PgCluster

    own = PgCluster()  # a server of this test's own, to stop under the node
    try:
        ws = Workspace(tmp_path)
        ws.write_config(database=own.new_database())
        ws.feeds([server.add("/a", rss([story(1), story(2)]))])
        node = Daemon(ws, interval="2s", min_interval="2s")
        daemons.append(node)
        node.start()
        node.wait_until(lambda: b"Story 2" in node.get("/latest.atom")[1], 30, "the first poll published")
        before = node.get("/latest.atom")
        own.stop()
        node.wait_until(lambda: node.get("/healthz")[0] == 503, 30, "healthz to report the database")
        status, body = node.get("/healthz")
        assert "has not answered" in json.loads(body)["database"]
        assert node.get("/latest.atom") == before  # readers still get the last outputs
        started = time.monotonic()
        assert node.stop() == 0
        assert time.monotonic() - started < 10  # not held up by calls waiting for a dead server
        log = node.log
        assert "Traceback" not in log
        told = [line for line in log.splitlines()
                if "does not answer" in line and " DEBUG " not in line and "sign off" not in line]  # fmt: skip
        assert len(told) == 1, told  # said once, not by every caller on every tick
    finally:
        own.stop()
