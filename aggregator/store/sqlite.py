"""The embedded store: SQLite in WAL mode, through sqlite-utils (DESIGN §8).

One writer at a time (a lock in this process, BEGIN IMMEDIATE plus a busy
timeout across processes), short transactions, one per polled feed. Readers
use their own connection per thread and never wait for the writer. The
schema is versioned with sqlite-utils migrations (mirrored in PRAGMA
user_version); pending migrations run at open, after a backup copy of the
file. Full-text search is an FTS5 table over plain text.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.hostslots import FileHostSlots, HostSlots
from aggregator.query import Query, QueryError, to_fts5
from aggregator.store.base import Conn, Row, StoreError, chunks, marks
from aggregator.store.search import SearchMixin

if TYPE_CHECKING:
    import sqlite_utils

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
SQLITE_HEADER = b"SQLite format 3\x00"
MAX_INDEXED_TEXT = 20_000  # characters of an article's text that search sees
ANALYSIS_LIMIT = 1000  # rows per index that `PRAGMA optimize` samples at close (a bounded ANALYZE)


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


def m004_stories_filters_and_plain_text_search(db: sqlite_utils.Database) -> None:
    """Stories (an article's story, the stories and their index keys),
    visibility (filters, a quiet first poll, entries older than retention),
    per-feed settings, tags as rows (no JSON functions: the same SQL runs on
    PostgreSQL), and full-text search over plain text instead of HTML."""
    db.executescript(
        """
        CREATE TABLE feed_tags (feed_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (feed_id, tag)) WITHOUT ROWID;
        CREATE INDEX feed_tags_tag ON feed_tags (tag, feed_id);
        INSERT OR IGNORE INTO feed_tags (feed_id, tag) SELECT f.id, t.value FROM feeds f, json_each(f.tags) t;
        ALTER TABLE feeds ADD COLUMN source_file TEXT;
        ALTER TABLE feeds ADD COLUMN cluster INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE feeds ADD COLUMN full_text INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE feeds ADD COLUMN backfill INTEGER;
        ALTER TABLE feeds ADD COLUMN parse_path TEXT;

        ALTER TABLE articles ADD COLUMN story_id TEXT;
        ALTER TABLE articles ADD COLUMN story_score REAL;
        ALTER TABLE articles ADD COLUMN story_rule TEXT;
        ALTER TABLE articles ADD COLUMN story_why TEXT;
        ALTER TABLE articles ADD COLUMN hidden_by TEXT;
        ALTER TABLE articles ADD COLUMN held TEXT;
        ALTER TABLE articles ADD COLUMN visible INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE articles ADD COLUMN full_text INTEGER NOT NULL DEFAULT 0;  -- 1: extracted, 2: tried, failed
        ALTER TABLE articles ADD COLUMN full_text_error TEXT;
        UPDATE articles SET story_id = COALESCE(duplicate_of, id),
            story_rule = CASE WHEN duplicate_of IS NULL THEN 'first' ELSE 'same-url' END;

        CREATE TABLE stories (
            id TEXT PRIMARY KEY,
            founder_seq INTEGER,
            published_at TEXT NOT NULL,
            first_seen_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            language TEXT,
            profile TEXT,
            size INTEGER NOT NULL DEFAULT 1
        );
        INSERT INTO stories (id, founder_seq, published_at, first_seen_at, updated_at, language, size)
            SELECT a.id, a.seq, a.published_at, a.first_seen_at, a.first_seen_at, a.language,
                (SELECT COUNT(*) FROM articles d WHERE d.duplicate_of = a.id) + 1
            FROM articles a WHERE a.duplicate_of IS NULL;
        CREATE INDEX stories_published ON stories (published_at);
        -- The candidate index: a row per index key of every clustered article,
        -- read by key within a window of published_at (cluster.py).
        CREATE TABLE story_index (
            key TEXT NOT NULL, at TEXT NOT NULL, seq INTEGER NOT NULL, story_id TEXT NOT NULL,
            PRIMARY KEY (key, at, seq)
        ) WITHOUT ROWID;
        CREATE INDEX story_index_article ON story_index (seq);

        DROP INDEX articles_latest;
        CREATE INDEX articles_latest ON articles (sort_at DESC, seq DESC, feed_id, story_id) WHERE visible = 1;
        DROP INDEX articles_feed_latest;
        CREATE INDEX articles_feed_latest ON articles (feed_id, sort_at DESC, seq DESC) WHERE visible = 1;
        CREATE INDEX articles_story ON articles (story_id, seq);
        """
    )
    db.table("articles").disable_fts()
    db.executescript("CREATE VIRTUAL TABLE search USING fts5(title, body, tokenize = 'unicode61 remove_diacritics 2');")
    from aggregator.sanitize import to_text  # the migration fills the index from the stored HTML

    rows = db.execute("SELECT seq, title, summary, content FROM articles")
    while batch := rows.fetchmany(1000):
        db.conn.executemany(
            "INSERT INTO search (rowid, title, body) VALUES (?, ?, ?)",
            [(seq, title, to_text(" ".join(filter(None, (s, c))))[:MAX_INDEXED_TEXT]) for seq, title, s, c in batch],
        )


def m005_leases_and_hosts(db: sqlite_utils.Database) -> None:
    """Pollers claim due feeds with a lease (a second process never polls a
    feed another one holds), and a host's Retry-After holds for all its feeds."""
    db.executescript(
        """
        ALTER TABLE feeds ADD COLUMN host TEXT NOT NULL DEFAULT '';
        ALTER TABLE feeds ADD COLUMN lease_owner TEXT;
        ALTER TABLE feeds ADD COLUMN lease_until TEXT;
        ALTER TABLE feeds ADD COLUMN last_counts TEXT;
        CREATE TABLE host_backoff (host TEXT PRIMARY KEY, until TEXT NOT NULL);
        """
    )
    from aggregator.store.feeds import host_of  # the migration fills the column the way the code keeps it

    rows = db.execute("SELECT id, url FROM feeds").fetchall()
    db.conn.executemany("UPDATE feeds SET host = ? WHERE id = ?", [(host_of(url), fid) for fid, url in rows])


def m006_leased_feeds_index(db: sqlite_utils.Database) -> None:
    """A process giving back its leases (at exit, and the leases of dead
    pollers at start) finds them by index instead of reading every feed:
    39-55 ms at 100,000 feeds without it. Partial: almost no feed is leased."""
    db.execute("CREATE INDEX feeds_leased ON feeds (lease_owner) WHERE lease_owner IS NOT NULL")


MIGRATIONS = (
    m001_initial,
    m002_counts_and_covering_latest,
    m003_ttl_and_last_parse,
    m004_stories_filters_and_plain_text_search,
    m005_leases_and_hosts,
    m006_leased_feeds_index,
)
SCHEMA_VERSION = len(MIGRATIONS)  # PRAGMA user_version of an up-to-date database


def _migrations() -> Any:
    """sqlite-utils' migration runner over MIGRATIONS. Imported only when a
    database is behind (a new one, an upgrade): sqlite-utils costs about
    40 ms to import, which every command would otherwise pay at start."""
    from sqlite_utils import Migrations

    runner = Migrations("aggregator")
    for step in MIGRATIONS:
        runner()(step)
    return runner


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable across process crashes
    return conn


def check_database_path(path: Path, writable: bool = True) -> None:
    """Raise StoreError when the database cannot be used at path (without opening it)."""
    if path.exists():
        try:
            with path.open("rb") as handle:
                header = handle.read(16)
        except OSError as exc:
            raise StoreError(f"{path}: cannot read the database: {exc.strerror}") from None
        if not header and path.stat().st_size == 0:
            raise StoreError(
                f"{path}: the database file is empty (0 bytes), so it holds nothing it should: if you meant to start "
                f"afresh, delete it; if it held your data, restore a backup ({_backups_hint(path)})"
            )
        if header != SQLITE_HEADER:
            raise StoreError(
                f"{path}: this file is not an SQLite database; "
                "move it away or point 'database' in config.yaml elsewhere"
            )
        if writable and not os.access(path, os.W_OK):
            raise StoreError(f"{path}: the database is read-only; this command needs to write to it")
    elif not writable:
        raise StoreError(f"{path}: no database yet (run `aggregator poll` or `aggregator run` first)")
    directory = path.parent
    if not directory.exists():
        raise StoreError(
            f"{directory}: the database directory does not exist; create it or change 'database' in config.yaml"
        )
    if not directory.is_dir():
        raise StoreError(
            f"{directory}: not a directory, so the database cannot live in it; change 'database' in config.yaml"
        )
    if writable and not os.access(directory, os.W_OK):
        raise StoreError(f"{directory}: the database directory is not writable; SQLite needs it for its journal files")


def _backups_hint(path: Path) -> str:
    backups = sorted(path.parent.glob(f"{path.name}.before-*.bak"))
    return f"the latest one the migrations made is {backups[-1]}" if backups else "none was made here"


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    text = str(exc).lower()
    return not isinstance(exc, sqlite3.OperationalError) or any(
        word in text for word in ("malformed", "not a database", "disk image", "corrupt")
    )


def damaged(path: Path, exc: BaseException) -> StoreError:
    """The message for a database SQLite cannot read: what happened and the way out."""
    return StoreError(
        f"{path}: the database is damaged ({exc}). Stop the service, then either restore a backup "
        f"({_backups_hint(path)}) or salvage what can be read: `aggregator db recover --out NEW.db`, and point "
        "'database' in config.yaml at the result. `aggregator db check` says what is wrong."
    )


class SQLiteStore(SearchMixin):
    """The store in one SQLite file (the default)."""

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        check_database_path(self.path, writable=not readonly)
        try:
            self._wconn = self._open_writer()
            if not readonly:
                self._migrate()
            self._wconn.row_factory = sqlite3.Row
            self._quick_check()
        except sqlite3.DatabaseError as exc:
            if _is_damage(exc):
                raise damaged(self.path, exc) from None
            raise StoreError(f"{self.path}: cannot open the database: {exc}") from None
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._slots: FileHostSlots | None = None

    def _open_writer(self) -> sqlite3.Connection:
        if self.readonly:
            return self._open_readonly()
        conn = _connect(self.path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            log.warning("%s: could not switch to WAL mode (%s)", self.path, mode)
        # The one writer inserts into indexes whose keys arrive in no order (ids,
        # canonical URLs, story keys): at a million articles SQLite's default 2 MB
        # cache re-reads their pages from disk on every poll. 32 MB, filled only
        # as pages are used.
        conn.execute("PRAGMA cache_size = -32768")
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        """For a user who may read the file but not write it or its directory.
        A WAL database needs its shared-memory file for an ordinary read-only
        open; without one, it is read as it is on disk (immutable), which is
        everything committed once the writer has checkpointed."""
        for options in ("mode=ro", "mode=ro&immutable=1"):
            conn = sqlite3.connect(
                f"file:{self.path}?{options}", uri=True, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                return conn
            except sqlite3.OperationalError:
                conn.close()
                if "immutable" in options:
                    raise
        raise AssertionError("unreachable")

    def _quick_check(self) -> None:
        """Read the schema and the first page of each table: a damaged file
        fails here, at start, with a clear message, not in the middle of a poll."""
        self._wconn.execute("SELECT name FROM sqlite_master").fetchall()
        for table in ("feeds", "articles", "meta"):
            self._wconn.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()

    # --- life ----------------------------------------------------------------

    def _migrate(self) -> None:
        if self.schema_version() == SCHEMA_VERSION:
            return
        import sqlite_utils

        migrations = _migrations()
        db = sqlite_utils.Database(self._wconn)
        pending = migrations.pending(db)
        if not pending:
            return
        applied = migrations.applied(db)
        if applied and self.path.exists() and self.path.stat().st_size > 0:
            backup = self.path.with_name(f"{self.path.name}.before-{pending[0].name}.bak")
            log.info("%s: backing up to %s before migrating the schema", self.path, backup)
            target = sqlite3.connect(str(backup))
            with target:
                self._wconn.backup(target)
            target.close()
        migrations.apply(db)
        self._wconn.execute(f"PRAGMA user_version = {len(migrations.applied(db))}")

    def schema_version(self) -> int:
        return int(self._wconn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        with self._readers_lock:
            for conn in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._readers.clear()
        with self._write_lock:
            if not self.readonly:
                with contextlib.suppress(sqlite3.Error):
                    # optimize analyses the tables this connection used that were never
                    # analysed or grew 25-fold since: a full ANALYZE of an 8,000,000-row
                    # story_index took 3.5 s at the end of a poll. The limit makes it a
                    # sample (rows looked at per index; SQLite's own advice): milliseconds.
                    self._wconn.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
                    self._wconn.execute("PRAGMA optimize")
            self._wconn.close()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_readonly() if self.readonly else _connect(self.path)
            conn.row_factory = sqlite3.Row
            # Readers are many (a connection per thread) and their reads are
            # index lookups: a small page cache each keeps memory flat.
            conn.execute("PRAGMA cache_size = -512")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            raise damaged(self.path, exc) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Conn]:
        """One write transaction. BEGIN IMMEDIATE takes the write lock up front,
        so the busy timeout applies and no transaction fails half-way on a
        lock upgrade; a second process simply waits its turn."""
        if self.readonly:
            raise StoreError(f"{self.path}: opened read-only; this command cannot change it")
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

    def host_slots(self, hold_for: float = 180.0) -> HostSlots:
        """Lock files beside the database: shared with `aggregator poll` and any other process using it."""
        if self._slots is None:
            self._slots = FileHostSlots(self.path.with_name(self.path.name + ".hosts"))
        return self._slots

    @contextlib.contextmanager
    def time_limit(self, seconds: float) -> Iterator[None]:
        conn = self._reader()
        end = time.monotonic() + seconds
        conn.set_progress_handler(lambda: 1 if time.monotonic() > end else 0, 10_000)
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise TimeoutError(f"gave up after {seconds:g}s") from None
            raise
        finally:
            conn.set_progress_handler(None, 0)

    def columns(self, table: str) -> list[str]:
        return [str(r[1]) for r in self._read(f"PRAGMA table_info({table})")]

    def _hint(self, index: str) -> str:
        return f" INDEXED BY {index}"

    def integrity_check(self) -> str:
        return "\n".join(str(r[0]) for r in self._read("PRAGMA integrity_check"))

    def explain(self, sql: str, params: Sequence[Any] = ()) -> list[str]:
        """EXPLAIN QUERY PLAN details, for the index tests."""
        return [r["detail"] for r in self._read("EXPLAIN QUERY PLAN " + sql, params)]

    # --- full-text search: FTS5 over plain text ---------------------------------------

    def _index_text(self, conn: Conn, seq: int, title: str, body: str, replace: bool = False) -> None:
        if replace:
            conn.execute("DELETE FROM search WHERE rowid = ?", (seq,))
        conn.execute("INSERT INTO search (rowid, title, body) VALUES (?, ?, ?)", (seq, title, body[:MAX_INDEXED_TEXT]))

    def _unindex_text(self, conn: Conn, seqs: Sequence[int]) -> None:
        for part in chunks(seqs):
            conn.execute(f"DELETE FROM search WHERE rowid IN ({marks(part)})", part)

    def _text_matches(self, query: Query, limit: int) -> list[int]:
        try:
            rows = self._read(
                "SELECT rowid FROM search WHERE search MATCH ? ORDER BY rowid DESC LIMIT ?", (to_fts5(query), limit)
            )
        except sqlite3.OperationalError as exc:  # the expression is ours and quoted: this should not happen
            raise QueryError(f"the search index could not read the query: {exc}") from None
        return [r[0] for r in rows]
