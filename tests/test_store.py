"""The SQLite store: WAL, schema version and migrations, indexes for the
hot queries, full-text search kept in step, bad database files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
import sqlite_utils

from aggregator.store import sqlite as store_module
from aggregator.model import utcnow
from aggregator.store import SQLiteStore as Store
from aggregator.store import StoreError
from tests.conftest import Workspace
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer


def test_wal_busy_timeout_and_schema_version(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.db")
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    applied = store_module._migrations().applied(sqlite_utils.Database(store._wconn))
    assert store.schema_version() == len(applied) == store_module.SCHEMA_VERSION >= 1
    assert store._wconn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    store.close()
    # Reopening an up-to-date database does not need sqlite-utils (its import is saved at start).
    check = "import sys; from aggregator.store.sqlite import SQLiteStore; SQLiteStore(sys.argv[1]).close(); print('sqlite_utils' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", check, str(tmp_path / "a.db")], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"  # fmt: skip


def test_migration_runs_after_a_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.db"
    Store(path).close()

    def m999_test_extra_column(db) -> None:  # type: ignore[no-untyped-def]
        db["feeds"].add_column("test_extra", str)

    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, m999_test_extra_column))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", store_module.SCHEMA_VERSION + 1)
    store = Store(path)
    columns = {c.name for c in sqlite_utils.Database(path)["feeds"].columns}
    assert "test_extra" in columns
    backups = list(tmp_path.glob("a.db.before-m999_test_extra_column.bak"))
    assert len(backups) == 1
    old = sqlite3.connect(backups[0])
    assert "test_extra" not in {r[1] for r in old.execute("PRAGMA table_info(feeds)")}
    applied = store_module._migrations().applied(sqlite_utils.Database(store._wconn))
    assert store.schema_version() == len(applied) == store_module.SCHEMA_VERSION
    store.close()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 10)
    with pytest.raises(StoreError, match="not an SQLite database"):
        Store(path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory does not exist"):
        Store(tmp_path / "nope" / "a.db")


@pytest.mark.sqlite_only
def test_hot_queries_use_indexes(ws: Workspace) -> None:
    store = ws.store
    plans = {
        "due feeds": store.explain("SELECT f.* FROM feeds f WHERE f.status = 'active' AND f.next_poll_at <= ?"
                                   " ORDER BY f.next_poll_at, f.id LIMIT ? OFFSET ?", ("x", 200, 0)),
        "entry key": store.explain("SELECT * FROM entry_keys WHERE feed_id = ? AND entry_key IN (?, ?)", ("a", "b", "c")),
        "canonical in feed": store.explain("SELECT * FROM articles INDEXED BY articles_feed_canonical WHERE feed_id = ? AND canonical_url IN (?)", ("a", "b")),
        "canonical across feeds": store.explain("SELECT * FROM articles WHERE canonical_url IN (?) AND duplicate_of IS NULL", ("a",)),
        "latest": store.explain("SELECT seq, feed_id, sort_at, story_id FROM articles INDEXED BY articles_latest"
                                " WHERE visible = 1 AND (sort_at < ? OR (sort_at = ? AND seq < ?))"
                                " ORDER BY sort_at DESC, seq DESC LIMIT ?", ("x", "x", 1, 500)),
        "story members": store.explain("SELECT seq, feed_id, sort_at, story_id FROM articles INDEXED BY articles_story"
                                       " WHERE story_id IN (?, ?) AND visible = 1 ORDER BY seq", ("a", "b")),
        "story candidates": store.explain(
            "SELECT key, story_id FROM (SELECT key, story_id FROM story_index WHERE key = ? AND at >= ? AND at <= ?"
            " LIMIT ?) AS k0 UNION ALL SELECT key, story_id FROM (SELECT key, story_id FROM story_index"
            " WHERE key = ? AND at >= ? AND at <= ? LIMIT ?) AS k1", ("a", "x", "y", 101, "b", "x", "y", 101)),
        "tag": store.explain("SELECT feed_id FROM feed_tags WHERE tag = ?", ("world",)),
    }
    assert "feeds_due" in " ".join(plans["due feeds"])
    assert "PRIMARY KEY" in " ".join(plans["entry key"])
    assert "articles_feed_canonical" in " ".join(plans["canonical in feed"])
    assert "articles_canonical" in " ".join(plans["canonical across feeds"])
    latest = " ".join(plans["latest"])
    assert "articles_latest" in latest and "TEMP B-TREE" not in latest  # no sort step
    candidates = plans["story candidates"]
    assert sum("PRIMARY KEY" in line for line in candidates) == 2 and not any("SCAN story_index" in line
                                                                            for line in candidates), candidates
    assert "feed_tags_tag" in " ".join(plans["tag"])
    for name, plan in plans.items():
        assert not any(line.startswith("SCAN articles") and "INDEX" not in line for line in plan), (name, plan)


def test_full_text_search_follows_inserts_updates_and_deletes(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1, title="Peace talks in Erbil"), story(2, title="Weather")]))
    ws.feeds([url])
    ws.poll_url(url)
    assert [a.title for a in ws.store.search("erbil")] == ["Peace talks in Erbil"]
    server.update("/feed", body=rss([story(1, title="Peace talks in Sulaymaniyah"), story(2, title="Weather")]))
    ws.poll_url(url)
    assert ws.store.search("erbil") == []
    assert [a.title for a in ws.store.search("sulaymaniyah")] == ["Peace talks in Sulaymaniyah"]
    ws.store.delete_older_than(utcnow() + timedelta(days=1), batch=1, now=utcnow())
    assert ws.store.search("sulaymaniyah") == [] and ws.store.search("weather") == []


def test_retention_leaves_tombstones(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(i) for i in range(5)]))
    ws.feeds([url])
    ws.poll_url(url)
    result = ws.store.delete_older_than(utcnow() + timedelta(days=1), batch=2, now=utcnow())
    assert result.deleted == 5 and result.batches == 3
    server.update("/feed", body=rss([story(i) for i in range(5)] + [story(9)]))  # the old entries are still listed
    report = ws.poll_url(url)
    assert report.counts.new == 1 and report.counts.folded == {"deleted-by-retention": 5}


@pytest.mark.sqlite_only
def test_two_writers_wait_for_each_other(ws: Workspace) -> None:
    other = Store(ws.config().database_path)
    errors: list[Exception] = []

    def hammer(store: Store, prefix: str) -> None:
        try:
            for i in range(50):
                store.set_meta({f"{prefix}{i}": str(i)})
        except Exception as exc:  # pragma: no cover - the assertion below shows it
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(s, p)) for s, p in ((ws.store, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors
    assert ws.store.get_meta("a49") == "49" and ws.store.get_meta("b49") == "49"


@pytest.mark.sqlite_only
def test_integrity_check_finds_an_index_out_of_step_with_its_table(ws: Workspace, server: FeedServer) -> None:
    """Every `integrity_check() == "ok"` after a crash (tests/test_crash.py,
    test_daemon.py) and `db check` rely on it finding damage: a row changed
    behind an index's back (the index hidden from the schema meanwhile) is
    found, and the index named."""
    url = server.add("/feed", rss([story(n) for n in range(50)]))
    ws.feeds([url])
    ws.poll_url(url)
    assert ws.store.integrity_check() == "ok"
    ws.close()
    path = ws.config().database_path
    conn = sqlite3.connect(path, isolation_level=None)
    name, table, root, sql = conn.execute(
        "SELECT name, tbl_name, rootpage, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'articles'"
        " AND sql IS NOT NULL AND name LIKE '%canonical%'").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("DELETE FROM sqlite_master WHERE name = ?", (name,))
    conn.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE articles SET canonical_url = 'https://changed.example/' WHERE rowid = (SELECT MIN(rowid) FROM articles)")
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES ('index', ?, ?, ?, ?)",
                 (name, table, root, sql))
    conn.close()
    store = Store(path)
    try:
        report = store.integrity_check()
    finally:
        store.close()
    assert report != "ok" and name in report, report


def test_latest_by_feed_and_by_scan_agree(ws: Workspace, server: FeedServer) -> None:
    from datetime import datetime, timezone

    urls = [server.add(f"/f{f}", rss([story(n, site=f"http://f{f}.example",
                                            date=datetime(2026, 5, 1 + n % 20, f, n % 60, tzinfo=timezone.utc)
                                            .strftime("%a, %d %b %Y %H:%M:%S GMT")) for n in range(25)]))
            for f in range(6)]
    ws.feeds(urls)
    ws.poll_all()
    store = ws.store
    allowed = {f.id for f in store.feeds()}
    for limit, per_source in ((100, 10), (7, 3), (500, 100)):
        by_feed = store._pick(store._feed_tops(allowed, max(per_source * 3, 10)), lambda m: True, limit, per_source)
        assert by_feed == store._walk(allowed, limit, per_source)


def test_retention_job_deletes_old_articles(ws: Workspace, server: FeedServer) -> None:
    from aggregator.scheduler import Dispatcher

    recent = (utcnow() - timedelta(days=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    old = server.add("/old", rss([story(1, date="Mon, 01 Jan 2018 10:00:00 GMT"), story(2, date=recent)]))
    ws.feeds([old])
    ws.poll_all()
    calls = []
    dispatcher = Dispatcher(ws.store, ws.poller(), 2, 2, 1.0, calls.append, retention_days=90)
    dispatcher.retention()
    assert [a.title for a, _ in ws.store.articles()] == ["Story 2"]
    assert calls == [None]  # a republish was asked for


def test_article_counts_follow_inserts_and_retention(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(i) for i in range(4)]))
    ws.feeds([url])
    ws.poll_url(url)
    assert ws.feed(url).article_count == 4
    ws.store.delete_older_than(utcnow() + timedelta(days=1), batch=3, now=utcnow())
    assert ws.feed(url).article_count == 0
    server.update("/feed", body=rss([story(i) for i in range(5)]))
    ws.poll_url(url)
    assert ws.feed(url).article_count == 1


def test_a_dead_local_pollers_leases_come_back_at_once(tmp_path: Path) -> None:
    """SQLite: a killed `run` or `poll` on this machine holds nothing after it
    is gone (a restarted service polls at once, not a lease period later);
    a live poller and another machine's keep theirs."""
    import os
    import socket

    from aggregator.model import Subscription

    store = Store(tmp_path / "a.db")
    urls = [f"http://example.com/{n}" for n in range(3)]
    subs = [Subscription(feed_id=f"id{n}", url=u, source=f"a.yaml#{n}") for n, u in enumerate(urls)]
    store.sync_subscriptions(subs, utcnow())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    owners = [f"{socket.gethostname()}:{dead}:aa", f"{socket.gethostname()}:{os.getpid()}:bb", f"elsewhere:{dead}:cc"]
    for sub, owner in zip(subs, owners, strict=True):
        assert [f.id for f in store.claim(owner, [sub.feed_id], utcnow(), 600)] == [sub.feed_id]
    assert store.release_orphaned_leases() == 1
    assert [f.id for f in store.claim("me", [s.feed_id for s in subs], utcnow(), 600)] == ["id0"]
    store.close()


def test_story_index_rows_keep_each_keys_limit_and_window_in_one_statement_per_50_keys(ws: Workspace) -> None:
    """The candidates of a new article's keys: every story of a key within the window, None for a key
    more than ``most`` window articles carry, every key answered (an empty list for one nobody carries),
    past the 50 keys one statement takes."""
    from aggregator.model import iso

    start = utcnow()
    inside, outside = iso(start + timedelta(hours=1)), iso(start + timedelta(days=3))
    keys = [f"key{k}" for k in range(120)]  # three statements: 50 + 50 + 20 keys
    with ws.store.ingest("feed") as tx:
        rows = [(key, inside, 1000 * k + n, f"story{k}-{n}") for k, key in enumerate(keys[:110]) for n in range(k % 5)]
        rows += [(key, outside, 900_000 + k, f"late{k}") for k, key in enumerate(keys)]
        tx.conn.executemany("INSERT INTO story_index (key, at, seq, story_id) VALUES (?, ?, ?, ?)", rows)
        found = tx.story_index_rows([*keys, "key3"], start, start + timedelta(days=1), 3)
    assert set(found) == set(keys)
    for k, key in enumerate(keys):
        wanted = {f"story{k}-{n}" for n in range(k % 5)} if k < 110 else set()
        if len(wanted) > 3:
            assert found[key] is None, key  # too common to name candidates
        else:
            assert sorted(found[key] or []) == sorted(wanted), (key, found[key])
