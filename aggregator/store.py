"""The only module that speaks SQL (DESIGN §8).

SQLite in WAL mode through sqlite-utils. One writer at a time (a lock in
this process, BEGIN IMMEDIATE plus a busy timeout across processes), short
transactions, one per polled feed. Readers use their own connection per
thread and never wait for the writer. The schema is versioned with
sqlite-utils migrations (mirrored in PRAGMA user_version); pending
migrations run at open, after a backup copy of the file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlite_utils
from sqlite_utils import Migrations

from aggregator.dedupe import Existing, Plan, StoredRef
from aggregator.model import (
    AlsoReported,
    Article,
    Author,
    Enclosure,
    FeedState,
    FeedStatus,
    ParsedEntry,
    Source,
    Story,
    Subscription,
    from_iso,
    iso,
    iso_ms,
)

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
SMALL_SCOPE = 200  # Latest of at most this many feeds is read feed by feed
SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(Exception):
    """The database cannot be used; the message says why and what to do."""


migrations = Migrations("aggregator")


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE feeds (
            id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            configured_url TEXT NOT NULL,
            configured_title TEXT,
            title TEXT,
            site_url TEXT,
            self_url TEXT,
            language TEXT,
            tags TEXT NOT NULL DEFAULT '[]',
            interval REAL,
            etag TEXT,
            last_modified TEXT,
            body_hash TEXT,
            last_fetch_at TEXT,
            last_status INTEGER,
            last_outcome TEXT,
            error_count INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_poll_at TEXT,
            retry_after TEXT,
            redirect_url TEXT,
            redirect_seen INTEGER NOT NULL DEFAULT 0,
            status TEXT NOT NULL DEFAULT 'active',
            publish_interval REAL,
            updated_at TEXT,
            added_at TEXT NOT NULL,
            last_new_at TEXT
        );
        CREATE INDEX feeds_due ON feeds (next_poll_at) WHERE status = 'active';

        CREATE TABLE articles (
            seq INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            feed_id TEXT NOT NULL,
            entry_key TEXT NOT NULL,
            guid TEXT,
            url TEXT,
            canonical_url TEXT,
            title TEXT NOT NULL DEFAULT '',
            authors TEXT NOT NULL DEFAULT '[]',
            summary TEXT,
            content TEXT,
            categories TEXT NOT NULL DEFAULT '[]',
            enclosures TEXT NOT NULL DEFAULT '[]',
            image TEXT,
            language TEXT,
            published_at TEXT NOT NULL,
            updated_at TEXT,
            first_seen_at TEXT NOT NULL,
            sort_at TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            duplicate_of TEXT,
            modified_at TEXT,
            rewrites INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX articles_feed_canonical ON articles (feed_id, canonical_url);
        CREATE INDEX articles_canonical ON articles (canonical_url) WHERE duplicate_of IS NULL;
        CREATE INDEX articles_latest ON articles (sort_at DESC, seq DESC) WHERE duplicate_of IS NULL;
        CREATE INDEX articles_feed_latest ON articles (feed_id, sort_at DESC, seq DESC);
        CREATE INDEX articles_duplicate_of ON articles (duplicate_of) WHERE duplicate_of IS NOT NULL;
        CREATE INDEX articles_sort_at ON articles (sort_at);

        -- Every key an entry has been known by (its first, and new guids for
        -- the same link), and tombstones (article_seq NULL) for articles
        -- retention deleted while their entry may still be in the feed.
        CREATE TABLE entry_keys (
            feed_id TEXT NOT NULL,
            entry_key TEXT NOT NULL,
            article_seq INTEGER,
            deleted_at TEXT,
            PRIMARY KEY (feed_id, entry_key)
        ) WITHOUT ROWID;
        CREATE INDEX entry_keys_article ON entry_keys (article_seq);

        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        INSERT INTO meta (key, value) VALUES ('content_version', '0'), ('status_version', '0');
        """
    )
    db.table("articles").enable_fts(["title", "summary", "content"], fts_version="FTS5", create_triggers=True)


@migrations()
def m002_counts_and_covering_latest(db: sqlite_utils.Database) -> None:
    """At a million articles: the Latest walk reads feed ids from the index
    alone (no table lookup per row), and each feed keeps its article count
    (no GROUP BY over every article for the sources page)."""
    db.executescript(
        """
        DROP INDEX articles_latest;
        CREATE INDEX articles_latest ON articles (sort_at DESC, seq DESC, feed_id) WHERE duplicate_of IS NULL;
        ALTER TABLE feeds ADD COLUMN article_count INTEGER NOT NULL DEFAULT 0;
        UPDATE feeds SET article_count = (SELECT COUNT(*) FROM articles WHERE articles.feed_id = feeds.id);
        """
    )


@migrations()
def m003_ttl_and_last_parse(db: sqlite_utils.Database) -> None:
    """RSS <ttl> is remembered between polls (a 304 has no body to read it
    from), and each feed records when its document was last parsed, which
    tells old tombstones (entries no longer in the feed) from live ones."""
    db.executescript(
        """
        ALTER TABLE feeds ADD COLUMN ttl REAL;
        ALTER TABLE feeds ADD COLUMN last_parsed_at TEXT;
        """
    )


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across process crashes
    return conn


def check_database_path(path: Path) -> None:
    """Raise StoreError when the database cannot be used at path (without opening it)."""
    _check_file(path)


def _check_file(path: Path) -> None:
    if path.exists():
        try:
            with path.open("rb") as handle:
                header = handle.read(16)
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the database: {exc.strerror}") from None
        if header and header != SQLITE_HEADER:
            raise StoreError(
                f"{path}: this file is not an SQLite database; "
                "move it away or point 'database' in config.yaml elsewhere"
            )
        if not os.access(path, os.W_OK):
            raise StoreError(f"{path}: the database is read-only; the service needs to write to it")
    directory = path.parent
    if not directory.exists():
        raise StoreError(
            f"{directory}: the database directory does not exist; create it or change 'database' in config.yaml"
        )
    if not directory.is_dir():
        raise StoreError(
            f"{directory}: not a directory, so the database cannot live in it; change 'database' in config.yaml"
        )
    if not os.access(directory, os.W_OK):
        raise StoreError(f"{directory}: the database directory is not writable; SQLite needs it for its journal files")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class SyncResult:
    added: list[str]
    removed: list[str]
    reactivated: list[str]


@dataclass
class RetentionResult:
    deleted: int
    batches: int


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        _check_file(self.path)
        try:
            self._wconn = _connect(self.path)
            self.db = sqlite_utils.Database(self._wconn)
            with self.db.ensure_autocommit_on():
                mode = self._wconn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                log.warning("%s: could not switch to WAL mode (%s)", self.path, mode)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # --- life ----------------------------------------------------------------

    def _migrate(self) -> None:
        pending = migrations.pending(self.db)
        if not pending:
            return
        applied = migrations.applied(self.db)
        if applied and self.path.exists() and self.path.stat().st_size > 0:
            backup = self.path.with_name(f"{self.path.name}.before-{pending[0].name}.bak")
            log.info("%s: backing up to %s before migrating the schema", self.path, backup)
            target = sqlite3.connect(str(backup))
            with target:
                self._wconn.backup(target)
            target.close()
        migrations.apply(self.db)
        self._wconn.execute(f"PRAGMA user_version = {len(migrations.applied(self.db))}")

    def schema_version(self) -> int:
        return int(self._wconn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
        with self._write_lock:
            with contextlib.suppress(sqlite3.Error):
                self._wconn.execute("PRAGMA optimize")
            self._wconn.close()

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            conn.row_factory = sqlite3.Row
            # Readers are many (a connection per thread) and their reads are
            # index lookups: a small page cache each keeps memory flat.
            conn.execute("PRAGMA cache_size = -512")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return self._reader().execute(sql, params).fetchall()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front,
        so the busy timeout applies and no transaction fails half-way on a
        lock upgrade; a second process simply waits its turn."""
        with self._write_lock:
            conn = self._wconn
            for attempt in range(10):
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    log.warning(
                        "%s: database busy (another process is writing); waiting (attempt %d)", self.path, attempt + 1
                    )
                    time.sleep(0.5 + attempt)
            else:
                raise StoreError(
                    f"{self.path}: database stayed locked by another process "
                    f"for over {(BUSY_TIMEOUT_MS / 1000) * 10:.0f}s"
                )
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def _bump_content_version(self, conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'content_version'")

    def content_version(self) -> int:
        """Changes whenever anything the story outputs show changes."""
        row = self._read("SELECT value FROM meta WHERE key = 'content_version'")
        return int(row[0][0]) if row else 0

    def status_version(self) -> int:
        """Changes whenever a feed's state changes (the sources page)."""
        row = self._read("SELECT value FROM meta WHERE key = 'status_version'")
        return int(row[0][0]) if row else 0

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, values: dict[str, str | None]) -> None:
        with self._writing() as conn:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    def integrity_check(self) -> str:
        return str(self._read("PRAGMA integrity_check")[0][0])

    # --- feeds -----------------------------------------------------------------

    def sync_subscriptions(self, subs: Sequence[Subscription], now: datetime) -> SyncResult:
        """Make the feeds table follow feeds/: add new feeds (due now), update
        titles/tags/intervals, mark feeds no longer listed as unsubscribed.
        Writes only what differs, so an unchanged feeds/ changes nothing."""
        added: list[str] = []
        reactivated: list[str] = []
        changed = False
        wanted = {s.feed_id: s for s in subs}
        with self._writing() as conn:
            rows = {
                r[0]: r
                for r in conn.execute("SELECT id, status, configured_url, configured_title, tags, interval FROM feeds")
            }
            for sub in subs:
                row = rows.get(sub.feed_id)
                tags = _dumps(list(sub.tags))
                if row is None:
                    conn.execute(
                        "INSERT INTO feeds (id, url, configured_url, configured_title, tags, interval,"
                        " next_poll_at, added_at, status)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active')",
                        (sub.feed_id, sub.url, sub.url, sub.title, tags, sub.interval, iso_ms(now), iso(now)),
                    )
                    added.append(sub.url)
                    continue
                status = row[1]
                url_changed = row[2] != sub.url
                if status == FeedStatus.UNSUBSCRIBED.value or (url_changed and status == FeedStatus.GONE.value):
                    status = FeedStatus.ACTIVE.value
                    reactivated.append(sub.url)
                fields: dict[str, Any] = {}
                if (row[3], row[4], row[5], row[1]) != (sub.title, tags, sub.interval, status):
                    fields = {"configured_title": sub.title, "tags": tags, "interval": sub.interval, "status": status}
                if url_changed:
                    # The person edited the URL (same feed id: http->https, www.): poll the new one now.
                    fields.update(
                        url=sub.url,
                        configured_url=sub.url,
                        redirect_url=None,
                        redirect_seen=0,
                        next_poll_at=now,
                        etag=None,
                        last_modified=None,
                        body_hash=None,
                    )
                if fields:
                    changed = True
                    self._update_feed(conn, sub.feed_id, fields)
            removed = [
                fid for fid, row in rows.items() if fid not in wanted and row[1] != FeedStatus.UNSUBSCRIBED.value
            ]
            conn.executemany("UPDATE feeds SET status = 'unsubscribed' WHERE id = ?", [(fid,) for fid in removed])
            if added or removed or changed:
                self._bump_content_version(conn)
                conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'status_version'")
        return SyncResult(added=added, removed=removed, reactivated=reactivated)

    def feed(self, feed_id: str) -> FeedState | None:
        rows = self._read(_FEED_SELECT + " WHERE f.id = ?", (feed_id,))
        return _feed_from_row(rows[0]) if rows else None

    def feed_by_url(self, url: str) -> FeedState | None:
        rows = self._read(_FEED_SELECT + " WHERE f.url = ? OR f.configured_url = ? LIMIT 1", (url, url))
        return _feed_from_row(rows[0]) if rows else None

    def feeds(self, status: FeedStatus | None = None) -> list[FeedState]:
        sql = _FEED_SELECT
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE f.status = ?"
            params = (status.value,)
        return [
            _feed_from_row(r)
            for r in self._read(sql + " ORDER BY COALESCE(f.configured_title, f.title, f.url)", params)
        ]

    def feeds_by_id(self, ids: Sequence[str]) -> dict[str, FeedState]:
        out: dict[str, FeedState] = {}
        for part in _chunks(list(ids)):
            out.update(
                (r["id"], _feed_from_row(r)) for r in self._read(f"{_FEED_SELECT} WHERE f.id IN ({_marks(part)})", part)
            )
        return out

    def due_feeds(self, now: datetime, limit: int, offset: int = 0) -> list[FeedState]:
        """Active feeds whose next_poll_at has come, oldest first (feeds_due
        index): positions offset .. offset+limit of that order."""
        rows = self._read(
            "SELECT f.* FROM feeds f WHERE f.status = 'active' AND f.next_poll_at <= ?"
            " ORDER BY f.next_poll_at, f.id LIMIT ? OFFSET ?",
            (iso_ms(now), limit, offset),
        )
        return [_feed_from_row(r) for r in rows]

    def next_due_at(self) -> datetime | None:
        rows = self._read("SELECT MIN(next_poll_at) FROM feeds WHERE status = 'active'")
        return from_iso(rows[0][0]) if rows and rows[0][0] else None

    def feed_health(self, now: datetime) -> dict[str, int]:
        row = self._read(
            "SELECT SUM(status = 'active' AND next_poll_at <= ?), SUM(status = 'active' AND error_count > 0),"
            " SUM(status = 'active'), SUM(status = 'gone') FROM feeds",
            (iso_ms(now),),
        )[0]
        return {"due": row[0] or 0, "failing": row[1] or 0, "active": row[2] or 0, "gone": row[3] or 0}

    def update_feed(self, feed_id: str, fields: dict[str, Any]) -> None:
        with self._writing() as conn:
            self._update_feed(conn, feed_id, fields)

    @staticmethod
    def _update_feed(conn: sqlite3.Connection, feed_id: str, fields: dict[str, Any]) -> None:
        if not fields:
            return
        values = {
            k: (_stamp(k, v) if isinstance(v, datetime) else v.value if isinstance(v, FeedStatus) else v)
            for k, v in fields.items()
        }
        for key in values:
            if key not in _FEED_COLUMNS:
                raise ValueError(f"unknown feed column {key!r}")
        assignments = ", ".join(f"{k} = ?" for k in values)
        conn.execute(f"UPDATE feeds SET {assignments} WHERE id = ?", (*values.values(), feed_id))
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'status_version'")

    # --- ingest ------------------------------------------------------------------

    def known_hashes(self, feed_id: str) -> dict[str, str]:
        """entry key -> content hash for every live article of a feed."""
        return {
            r[0]: r[1]
            for r in self._read(
                "SELECT k.entry_key, a.content_hash FROM entry_keys k JOIN articles a ON a.seq = k.article_seq"
                " WHERE k.feed_id = ?",
                (feed_id,),
            )
        }

    @contextlib.contextmanager
    def ingest(self, feed_id: str) -> Iterator[IngestTransaction]:
        """One feed's poll, written in one transaction."""
        with self._writing() as conn:
            yield IngestTransaction(self, conn, feed_id)

    # --- reading articles --------------------------------------------------------------

    def articles(self, limit: int | None = None, feed_id: str | None = None) -> list[tuple[Article, FeedState]]:
        """Stored articles newest first, duplicates included, with their feed."""
        sql = "SELECT a.* FROM articles a"
        params: list[Any] = []
        if feed_id:
            sql += " WHERE a.feed_id = ?"
            params.append(feed_id)
        sql += " ORDER BY a.sort_at DESC, a.seq DESC"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        feeds = {f.id: f for f in self.feeds()}
        return [(_article_from_row(r), feeds[r["feed_id"]]) for r in self._read(sql, params) if r["feed_id"] in feeds]

    def latest(self, limit: int, per_source: int, tag: str | None = None) -> list[Story]:
        """The newest stories (representatives only), at most per_source from
        one feed, newest first by min(published, first seen), ties by arrival.
        Reads only the feeds it shows, so it costs the same with 10 feeds or 10,000."""
        allowed = self.feed_ids_with_tag(tag) if tag is not None else None
        if allowed is not None and len(allowed) <= SMALL_SCOPE:
            chosen = self._latest_by_feed(allowed, limit, per_source)
        else:
            chosen = self._latest_by_scan(allowed, limit, per_source)
        if not chosen:
            return []
        rows = {r["seq"]: r for r in self._read(f"SELECT * FROM articles WHERE seq IN ({_marks(chosen)})", chosen)}
        duplicates: list[sqlite3.Row] = []
        ids = [rows[s]["id"] for s in chosen if s in rows]
        for part in _chunks(ids):
            duplicates += self._read(
                f"SELECT duplicate_of, feed_id, url, title FROM articles"
                f" WHERE duplicate_of IN ({_marks(part)}) ORDER BY seq",
                part,
            )
        feeds = self.feeds_by_id(list({r["feed_id"] for r in rows.values()} | {r["feed_id"] for r in duplicates}))
        stories = [Story(_article_from_row(rows[s]), _source(feeds[rows[s]["feed_id"]])) for s in chosen if s in rows]
        by_id = {story.article.id: story for story in stories}
        for r in duplicates:
            feed = feeds.get(r["feed_id"])
            if feed is not None:
                by_id[r["duplicate_of"]].also.append(AlsoReported(_source(feed), r["url"], r["title"]))
        return stories

    def _latest_by_scan(self, allowed: set[str] | None, limit: int, per_source: int) -> list[int]:
        """Walk the articles_latest index from the top, skipping capped feeds;
        stops as soon as it has enough."""
        chosen: list[int] = []
        per_feed: dict[str, int] = {}
        cursor = self._reader().execute(
            "SELECT seq, feed_id FROM articles INDEXED BY articles_latest WHERE duplicate_of IS NULL"
            " ORDER BY sort_at DESC, seq DESC"
        )
        try:
            while len(chosen) < limit:
                batch = cursor.fetchmany(500)
                if not batch:
                    break
                for seq, fid in batch:
                    if (allowed is not None and fid not in allowed) or per_feed.get(fid, 0) >= per_source:
                        continue
                    per_feed[fid] = per_feed.get(fid, 0) + 1
                    chosen.append(seq)
                    if len(chosen) >= limit:
                        break
        finally:
            cursor.close()
        return chosen

    def _latest_by_feed(self, allowed: set[str], limit: int, per_source: int) -> list[int]:
        """For a few feeds (a tag), each feed's newest per_source from the
        articles_feed_latest index, merged: never walks other feeds' articles."""
        candidates: list[tuple[str, int]] = []
        for fid in allowed:
            candidates.extend(
                (r[0], r[1])
                for r in self._reader().execute(
                    "SELECT sort_at, seq FROM articles INDEXED BY articles_feed_latest"
                    " WHERE feed_id = ? AND duplicate_of IS NULL ORDER BY sort_at DESC, seq DESC LIMIT ?",
                    (fid, per_source),
                )
            )
        candidates.sort(reverse=True)
        return [seq for _, seq in candidates[:limit]]

    def tags(self) -> list[str]:
        """Tags of the feeds that are subscribed."""
        return [
            r[0]
            for r in self._read(
                "SELECT DISTINCT t.value FROM feeds f, json_each(f.tags) t WHERE f.status != 'unsubscribed' ORDER BY 1"
            )
        ]

    def feed_ids_with_tag(self, tag: str) -> set[str]:
        return {r[0] for r in self._read("SELECT f.id FROM feeds f, json_each(f.tags) t WHERE t.value = ?", (tag,))}

    def search(self, query: str, limit: int = 20) -> list[Article]:
        rows = self._read(
            "SELECT a.* FROM articles_fts JOIN articles a ON a.seq = articles_fts.rowid"
            " WHERE articles_fts MATCH ? ORDER BY rank LIMIT ?",
            (query, limit),
        )
        return [_article_from_row(r) for r in rows]

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """EXPLAIN QUERY PLAN details, for the index tests."""
        return [r["detail"] for r in self._read("EXPLAIN QUERY PLAN " + sql, params)]

    # --- retention -----------------------------------------------------------------------

    def delete_older_than(
        self, cutoff: datetime, batch: int, now: datetime, pause: float = 0.0, stop: Callable[[], bool] = lambda: False
    ) -> RetentionResult:
        """Delete articles whose story time is before cutoff, in short batches
        so polling keeps writing in between (and ``stop`` is asked between
        batches). Their entry keys stay as tombstones, so an entry still in
        its feed is not added again."""
        deleted = batches = 0
        while not stop():
            with self._writing() as conn:
                seqs = [
                    r[0]
                    for r in conn.execute(
                        "SELECT seq FROM articles WHERE sort_at < ? ORDER BY sort_at LIMIT ?", (iso(cutoff), batch)
                    )
                ]
                if not seqs:
                    break
                marks = ",".join("?" * len(seqs))
                ids = [r[0] for r in conn.execute(f"SELECT id FROM articles WHERE seq IN ({marks})", seqs)]
                conn.executemany(
                    "UPDATE feeds SET article_count = article_count - ? WHERE id = ?",
                    [
                        (n, fid)
                        for fid, n in conn.execute(
                            f"SELECT feed_id, COUNT(*) FROM articles WHERE seq IN ({marks}) GROUP BY feed_id", seqs
                        )
                    ],
                )
                conn.execute(
                    f"UPDATE entry_keys SET article_seq = NULL, deleted_at = ? WHERE article_seq IN ({marks})",
                    (iso(now), *seqs),
                )
                self._promote_duplicates(conn, ids, seqs)
                conn.execute(f"DELETE FROM articles WHERE seq IN ({marks})", seqs)
                self._bump_content_version(conn)
                deleted += len(seqs)
                batches += 1
            if pause:
                time.sleep(pause)
        return RetentionResult(deleted=deleted, batches=batches)

    @staticmethod
    def _promote_duplicates(conn: sqlite3.Connection, ids: list[str], deleted: list[int]) -> None:
        """A story whose representative is deleted keeps one representative:
        its earliest surviving duplicate; the others point to that one."""
        gone = set(deleted)
        for part in _chunks(ids):
            survivors: dict[str, list[tuple[int, str]]] = {}
            for seq, article_id, rep in conn.execute(
                f"SELECT seq, id, duplicate_of FROM articles WHERE duplicate_of IN ({_marks(part)}) ORDER BY seq", part
            ):
                if seq not in gone:
                    survivors.setdefault(rep, []).append((seq, article_id))
            for members in survivors.values():
                (first_seq, first_id), rest = members[0], members[1:]
                conn.execute("UPDATE articles SET duplicate_of = NULL WHERE seq = ?", (first_seq,))
                conn.executemany(
                    "UPDATE articles SET duplicate_of = ? WHERE seq = ?", [(first_id, seq) for seq, _ in rest]
                )

    def purge_tombstones(self, before: datetime) -> int:
        """Forget keys of deleted articles that were last seen before
        ``before`` and that the feed's document no longer lists (it has been
        parsed since they were last seen). A tombstone of an entry still in
        its feed is refreshed on every parse and never purged."""
        with self._writing() as conn:
            cur = conn.execute(
                "DELETE FROM entry_keys WHERE article_seq IS NULL AND deleted_at < ? AND deleted_at <"
                " COALESCE((SELECT last_parsed_at FROM feeds WHERE feeds.id = entry_keys.feed_id), '9999')",
                (iso(before),),
            )
            return cur.rowcount


class IngestTransaction:
    """Reads and writes for one feed inside one write transaction."""

    def __init__(self, store: Store, conn: sqlite3.Connection, feed_id: str):
        self.store = store
        self.conn = conn
        self.feed_id = feed_id

    def existing(self, entries: Sequence[ParsedEntry]) -> Existing:
        conn = self.conn
        found = Existing()
        keys = [e.entry_key for e in entries]
        canon = list({e.canonical_url for e in entries if e.canonical_url})
        guids = list({e.guid for e in entries if e.guid})
        for part in _chunks(keys):
            for r in conn.execute(
                f"SELECT k.entry_key, {_REF_COLUMNS}, k.article_seq IS NULL FROM entry_keys k"
                f" LEFT JOIN articles a ON a.seq = k.article_seq"
                f" WHERE k.feed_id = ? AND k.entry_key IN ({_marks(part)})",
                (self.feed_id, *part),
            ):
                if r[-1]:
                    found.tombstones.add(r[0])
                else:
                    found.by_key[r[0]] = _ref(r[1:-1])
        for part in _chunks(canon):
            for r in conn.execute(
                f"SELECT a.canonical_url, {_REF_COLUMNS} FROM articles a INDEXED BY articles_feed_canonical"
                f" WHERE a.feed_id = ? AND a.canonical_url IN ({_marks(part)}) ORDER BY a.seq",
                (self.feed_id, *part),
            ):
                found.by_canonical.setdefault(r[0], _ref(r[1:]))
            for r in conn.execute(
                f"SELECT a.canonical_url, {_REF_COLUMNS} FROM articles a INDEXED BY articles_canonical"
                f" WHERE a.canonical_url IN ({_marks(part)}) AND a.duplicate_of IS NULL AND a.feed_id != ?"
                " ORDER BY a.seq",
                (*part, self.feed_id),
            ):
                found.elsewhere.setdefault(r[0], _ref(r[1:]))
        for part in _chunks(guids):
            found.taken_ids.update(
                r[0] for r in conn.execute(f"SELECT id FROM articles WHERE id IN ({_marks(part)})", part)
            )
        return found

    def apply(self, plan: Plan, now: datetime) -> None:
        conn = self.conn
        stamp = iso(now)
        for insert in plan.inserts:
            e = insert.entry
            published = e.published_at or e.updated_at or now
            sort_at = min(published, now)
            cur = conn.execute(
                "INSERT INTO articles (id, feed_id, entry_key, guid, url, canonical_url, title, authors, summary,"
                " content, categories, enclosures, image, language, published_at, updated_at, first_seen_at, sort_at,"
                " content_hash,"
                " duplicate_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    insert.output_id,
                    self.feed_id,
                    e.entry_key,
                    e.guid,
                    e.url,
                    e.canonical_url,
                    e.title,
                    _dumps([a.to_json() for a in e.authors]),
                    e.summary,
                    e.content,
                    _dumps(list(e.categories)),
                    _dumps([x.to_json() for x in e.enclosures]),
                    e.image,
                    e.language,
                    iso(published),
                    iso(e.updated_at),
                    stamp,
                    iso(sort_at),
                    e.content_hash,
                    insert.duplicate_of,
                ),
            )
            conn.execute(
                "INSERT INTO entry_keys (feed_id, entry_key, article_seq) VALUES (?, ?, ?)"
                " ON CONFLICT(feed_id, entry_key) DO UPDATE SET article_seq = excluded.article_seq, deleted_at = NULL",
                (self.feed_id, e.entry_key, cur.lastrowid),
            )
        for alias in plan.aliases:
            conn.execute(
                "INSERT INTO entry_keys (feed_id, entry_key, article_seq) VALUES (?, ?, ?)"
                " ON CONFLICT(feed_id, entry_key) DO UPDATE SET article_seq = excluded.article_seq, deleted_at = NULL",
                (self.feed_id, alias.entry_key, alias.ref.rowid),
            )
        for update in plan.updates:
            e = update.entry
            row = conn.execute("SELECT first_seen_at FROM articles WHERE seq = ?", (update.ref.rowid,)).fetchone()
            first_seen = from_iso(row[0]) or now
            published = e.published_at or e.updated_at or first_seen
            conn.execute(
                "UPDATE articles SET guid = ?, url = ?, canonical_url = ?, title = ?, authors = ?, summary = ?,"
                " content = ?, categories = ?, enclosures = ?, image = ?, language = ?, published_at = ?,"
                " updated_at = ?, sort_at = ?,"
                " content_hash = ?, modified_at = ?, rewrites = rewrites + 1 WHERE seq = ?",
                (
                    e.guid,
                    e.url,
                    e.canonical_url,
                    e.title,
                    _dumps([a.to_json() for a in e.authors]),
                    e.summary,
                    e.content,
                    _dumps(list(e.categories)),
                    _dumps([x.to_json() for x in e.enclosures]),
                    e.image,
                    e.language,
                    iso(published),
                    iso(update.updated_at),
                    iso(min(published, first_seen)),
                    e.content_hash,
                    stamp,
                    update.ref.rowid,
                ),
            )
        if plan.inserts:
            conn.execute(
                "UPDATE feeds SET article_count = article_count + ? WHERE id = ?", (len(plan.inserts), self.feed_id)
            )
        for part in _chunks(plan.tombstone_hits):
            # Still in the feed: the tombstone must outlive it (see purge_tombstones).
            conn.execute(
                f"UPDATE entry_keys SET deleted_at = ? WHERE feed_id = ? AND entry_key IN ({_marks(part)})",
                (stamp, self.feed_id, *part),
            )
        if plan.inserts or plan.updates:
            self.store._bump_content_version(conn)

    def update_feed(self, fields: dict[str, Any], content_visible: bool = False) -> None:
        """content_visible: the change shows in outputs (title, site link)."""
        Store._update_feed(self.conn, self.feed_id, fields)
        if content_visible:
            self.store._bump_content_version(self.conn)


# --- row helpers ---------------------------------------------------------------------

_FEED_COLUMNS = {
    "url",
    "configured_url",
    "configured_title",
    "title",
    "site_url",
    "self_url",
    "language",
    "tags",
    "interval",
    "etag",
    "last_modified",
    "body_hash",
    "last_fetch_at",
    "last_status",
    "last_outcome",
    "error_count",
    "last_error",
    "next_poll_at",
    "retry_after",
    "redirect_url",
    "redirect_seen",
    "status",
    "publish_interval",
    "updated_at",
    "last_new_at",
    "ttl",
    "last_parsed_at",
}
_FEED_SELECT = "SELECT f.* FROM feeds f"
_REF_COLUMNS = "a.seq, a.id, a.feed_id, a.content_hash, a.updated_at, a.modified_at, a.rewrites, a.duplicate_of"


_SCHEDULE_COLUMNS = {"next_poll_at", "retry_after"}


def _stamp(column: str, moment: datetime) -> str | None:
    return iso_ms(moment) if column in _SCHEDULE_COLUMNS else iso(moment)


def _ref(r: Sequence[Any]) -> StoredRef:
    return StoredRef(
        rowid=r[0],
        id=r[1],
        feed_id=r[2],
        content_hash=r[3],
        updated_at=from_iso(r[4]),
        modified_at=from_iso(r[5]),
        rewrites=r[6],
        duplicate_of=r[7],
    )


def _chunks(items: Sequence[Any], size: int = 400) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def _feed_from_row(r: sqlite3.Row) -> FeedState:
    return FeedState(
        id=r["id"],
        url=r["url"],
        configured_url=r["configured_url"],
        title=r["title"],
        configured_title=r["configured_title"],
        site_url=r["site_url"],
        tags=tuple(json.loads(r["tags"] or "[]")),
        interval=r["interval"],
        etag=r["etag"],
        last_modified=r["last_modified"],
        body_hash=r["body_hash"],
        last_fetch_at=from_iso(r["last_fetch_at"]),
        last_status=r["last_status"],
        last_outcome=r["last_outcome"],
        error_count=r["error_count"],
        last_error=r["last_error"],
        next_poll_at=from_iso(r["next_poll_at"]),
        retry_after=from_iso(r["retry_after"]),
        redirect_url=r["redirect_url"],
        redirect_seen=r["redirect_seen"],
        status=FeedStatus(r["status"]),
        publish_interval=r["publish_interval"],
        updated_at=from_iso(r["updated_at"]),
        ttl=r["ttl"],
        article_count=r["article_count"],
    )


def _article_from_row(r: sqlite3.Row) -> Article:
    return Article(
        id=r["id"],
        feed_id=r["feed_id"],
        entry_key=r["entry_key"],
        guid=r["guid"],
        url=r["url"],
        canonical_url=r["canonical_url"],
        title=r["title"],
        authors=tuple(Author(**a) for a in json.loads(r["authors"])),
        summary=r["summary"],
        content=r["content"],
        categories=tuple(json.loads(r["categories"])),
        enclosures=tuple(Enclosure(**x) for x in json.loads(r["enclosures"])),
        image=r["image"],
        language=r["language"],
        published_at=from_iso(r["published_at"]),
        updated_at=from_iso(r["updated_at"]),
        first_seen_at=from_iso(r["first_seen_at"]) or datetime.min,
        content_hash=r["content_hash"],
        duplicate_of=r["duplicate_of"],
        rowid=r["seq"],
    )


def _source(feed: FeedState) -> Source:
    return Source(
        feed_id=feed.id,
        title=feed.display_title,
        feed_url=feed.url,
        site_url=feed.site_url,
        updated_at=feed.updated_at,
        tags=feed.tags,
    )
