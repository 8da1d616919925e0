"""The first hour and every hour after (issue 10): what a new user trips
over, each with the behaviour that replaces it."""

from __future__ import annotations

import pytest

import json
import os
import pty
import select
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import feedparser

from aggregator.model import utcnow
from aggregator.publish import Publisher
from tests.conftest import Workspace, run_cli
from tests.daemon import Daemon
from tests.feedgen import Item, rss, story
from tests.fixture_server import FeedServer


def _date(days_ago: float) -> str:
    return (utcnow() - timedelta(days=days_ago)).strftime("%a, %d %b %Y %H:%M:%S GMT")


# --- item 1: a broken feeds file keeps its feeds -----------------------------------------------------------


def test_a_yaml_error_in_a_feeds_file_does_not_unsubscribe_its_feeds(ws: Workspace, server: FeedServer) -> None:
    a = server.add("/a", rss([story(1)]))
    b = server.add("/b", rss([story(2, site="http://b.example")]))
    ws.feeds([a], name="one.yaml")
    ws.feeds([b], name="two.yaml")
    run_cli("poll", "--no-progress", "--config", str(ws.config_path), check=True)
    (ws.root / "feeds" / "one.yaml").write_text("feeds:\n  - url: " + a + "\n  - [broken\n")
    proc = run_cli("poll", "--no-progress", "--config", str(ws.config_path))
    assert proc.returncode == 0 and "one.yaml:" in proc.stderr and "invalid YAML" in proc.stderr
    listed = {json.loads(line)["url"]: json.loads(line)["status"]
              for line in run_cli("feeds", "list", "--json", "--config", str(ws.config_path)).stdout.splitlines()}
    assert listed == {a: "active", b: "active"}
    assert "Polled 2 feeds" in proc.stdout


def test_a_broken_file_in_the_daemon_keeps_its_last_good_version(ws: Workspace, server: FeedServer,
                                                                 daemons: list[Daemon]) -> None:
    a = server.add("/a", rss([story(1)]))
    ws.feeds([a], name="one.yaml")
    daemon = Daemon(ws)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: server.requests_for("/a"), 10, "the feed polled")
    (ws.root / "feeds" / "one.yaml").write_text("feeds: [\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_until(lambda: "keeping the last good version of this file (1 feeds)" in daemon.log
                      and "reload: 0 feeds added, 0 removed" in daemon.log, 10, "the reload")
    before = len(server.requests_for("/a"))
    daemon.wait_until(lambda: len(server.requests_for("/a")) > before, 15, "the feed still polled")
    assert daemon.stop() == 0


# --- item 5: entries older than retention never reach an output -------------------------------------------


def test_entries_older_than_retention_are_stored_but_never_published(ws: Workspace, server: FeedServer) -> None:
    ws.write_config(retention={"days": 30})
    items = [Item(title=f"Old {n}", link=f"http://old.example/{n}", guid=f"old{n}", date=_date(60 + n)) for n in range(3)]
    items += [Item(title="Fresh", link="http://old.example/fresh", guid="fresh", date=_date(1))]
    url = server.add("/mixed", rss(items))
    ws.feeds([url])
    ws.poll_all()
    atom = feedparser.parse(Publisher(ws.store, ws.config()).build().documents["latest.atom"].body)
    assert [e.title for e in atom.entries] == ["Fresh"]
    stored = {a.title: a for a, _ in ws.store.articles()}
    assert set(stored) == {"Old 0", "Old 1", "Old 2", "Fresh"} and stored["Old 0"].held == "expired"
    ws.poll_all()  # still in the feed: they never come back as new
    assert len(ws.store.articles()) == 4


# --- item 6: reload and the pages ---------------------------------------------------------------------------


def test_an_interval_change_applies_on_reload(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    url = server.add("/slow", rss([story(1)]))
    ws.feeds([{"url": url, "interval": "40s"}])
    daemon = Daemon(ws, min_interval="1s", max_interval="1h")
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: "next poll" in daemon.log, 10, "the first poll")
    ws.feeds([{"url": url, "interval": "2s"}])
    daemon.signal(signal.SIGHUP)
    daemon.wait_until(lambda: "rescheduled for a new interval" in daemon.log, 10, "the reload")
    polls = len(server.requests_for("/slow"))
    took = daemon.wait_until(lambda: len(server.requests_for("/slow")) >= polls + 2, 15, "polls at the new interval")
    assert took < 10  # two polls at 2 s, not one at the old 40 s
    assert daemon.stop() == 0


def test_the_home_page_says_why_it_is_empty_and_an_empty_feed_is_not_from_1970(ws: Workspace,
                                                                               server: FeedServer) -> None:
    url = server.add("/down", status=500)
    ws.feeds([url])
    ws.poll_all()
    snapshot = Publisher(ws.store, ws.config()).build()
    assert b"1 of 1 feeds failing: see Sources." in snapshot.documents[""].body
    atom = feedparser.parse(snapshot.documents["latest.atom"].body)
    assert atom.entries == [] and atom.feed.updated_parsed.tm_year == utcnow().year  # the last poll's time
    assert b"<lastBuildDate>" in snapshot.documents["latest.rss"].body


def test_the_sources_page_follows_failing_feeds_without_new_stories(ws: Workspace, server: FeedServer,
                                                                   daemons: list[Daemon]) -> None:
    url = server.add("/flaky", rss([story(1)]))
    ws.feeds([url])
    daemon = Daemon(ws)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: b"200 ok" in daemon.get("/feeds")[1], 10, "the sources page after the first poll")
    server.update("/flaky", status=503)
    daemon.wait_until(lambda: b"503 rate_limited" in daemon.get("/feeds")[1], 45, "the failure on the sources page")
    assert daemon.stop() == 0


# --- item 7: settings a reload applies ---------------------------------------------------------------------


def test_reload_applies_logging_and_output_settings(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    url = server.add("/feed", rss([story(1)]))
    ws.feeds([url])
    ws.write_config(logging={"level": "info", "format": "text"})
    daemon = Daemon(ws)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: b"Story 1" in daemon.get("/latest.atom")[1], 10, "the first publish")
    ws.write_config(logging={"level": "info", "format": "json"}, output={"max_age": "42s", "dir": "elsewhere"})
    daemon.signal(signal.SIGHUP)
    daemon.wait_until(lambda: any(line.startswith("{") and '"level"' in line for line in daemon.log.splitlines()),
                      10, "JSON log lines after the reload")
    server.update("/feed", body=rss([story(1), story(2)]))
    daemon.wait_until(lambda: (ws.root / "elsewhere" / "latest.atom").exists(), 20, "the outputs in the new directory")
    headers = _headers(daemon.port, "/latest.atom")
    assert headers.get("cache-control") == "public, max-age=42"
    assert "restart" not in daemon.log  # nothing needed one
    assert daemon.stop() == 0


def _headers(port: int, path: str) -> dict[str, str]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return {k.lower(): v for k, v in response.getheaders()}


# --- item 8: tracebacks and exit codes ------------------------------------------------------------------------


def test_status_exits_3_whenever_nothing_runs(ws: Workspace, server: FeedServer) -> None:
    for args in (["status"], ["status", "--json"]):
        proc = run_cli(*args, "--config", str(ws.config_path))
        assert proc.returncode == 3 and "Traceback" not in proc.stderr, (args, proc.stderr)
    ws.feeds([server.add("/a", rss([story(1)]))])
    run_cli("poll", "--no-progress", "--config", str(ws.config_path), check=True)
    for args in (["status"], ["status", "--json"]):
        proc = run_cli(*args, "--config", str(ws.config_path))
        assert proc.returncode == 3, (args, proc.stdout, proc.stderr)
    assert json.loads(run_cli("status", "--json", "--config", str(ws.config_path)).stdout)["running"] is False


@pytest.mark.sqlite_only
def test_another_user_can_read_status_and_outputs_of_a_read_only_database(ws: Workspace, server: FeedServer) -> None:
    """Someone who may read the database but not write it (nor its lock file): the reading commands work."""
    ws.feeds([server.add("/a", rss([story(1)]))])
    run_cli("poll", "--no-progress", "--config", str(ws.config_path), check=True)
    (ws.root / "test.db.lock").write_text("")
    for path in [ws.root, *ws.root.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    # root ignores file modes; without its override capabilities it is held to them like anyone.
    held_to_modes = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    try:
        for args in (["status"], ["feeds", "list", "--json"], ["articles", "--json"]):
            proc = subprocess.run([*held_to_modes, sys.executable, "-m", "aggregator", *args,
                                   "--config", str(ws.config_path)], capture_output=True, text=True, timeout=60)
            assert "Traceback" not in proc.stderr and "PermissionError" not in proc.stderr, (args, proc.stderr)
            assert proc.returncode in (0, 3), (args, proc.stderr)
            if args[0] == "articles":
                assert "Story 1" in proc.stdout
            if args[0] == "feeds":
                assert "read-only" in proc.stderr and json.loads(proc.stdout.splitlines()[0])["articles"] == 1
    finally:
        for path in [ws.root, *ws.root.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def test_poll_on_a_terminal_prints_each_log_line_once(ws: Workspace, server: FeedServer) -> None:
    ws.feeds([server.add("/down", status=500)])
    ws.write_config(logging={"level": "info"})
    pid, fd = pty.fork()
    if pid == 0:  # the child: aggregator poll with a terminal on stdout and stderr
        os.execv(sys.executable, [sys.executable, "-m", "aggregator", "poll", "--config", str(ws.config_path)])
    output = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    text = output.decode("utf-8", "replace")
    warning_lines = [line for line in text.splitlines() if "http_error" in line]
    assert warning_lines, text
    for line in warning_lines:
        assert line.count("WARNING") <= 1 and not any(line.count(str(y)) > 1 for y in (utcnow().year,)), line


def test_without_a_config_file_commands_say_which_config_they_use(tmp_path: Path) -> None:
    proc = run_cli("feeds", "list", "--json", cwd=tmp_path)
    assert proc.returncode == 0
    assert f"note: no config.yaml in {tmp_path}: using the defaults (database {tmp_path / 'aggregator.db'}" in proc.stderr


# --- item 9: units ---------------------------------------------------------------------------------------------


def test_a_duration_without_a_unit_is_refused_and_the_floor_is_announced(ws: Workspace, server: FeedServer) -> None:
    ws.feeds([{"url": server.add("/a", rss([story(1)])), "interval": 30}])
    proc = run_cli("poll", "--no-progress", "--config", str(ws.config_path))
    assert "interval: expected a duration like 90s, 15m, 2h or 1d, got 30 (add a unit: 30s or 30m?)" in proc.stderr
    ws.feeds([{"url": server.url("/a"), "interval": "1m"}])
    proc = run_cli("poll", "--no-progress", "--config", str(ws.config_path))
    assert "interval 1m is shorter than polling.min_interval (10m); the feed is polled every 10m" in proc.stderr
