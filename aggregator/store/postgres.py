"""The store for several machines: PostgreSQL through psycopg 3 and its
connection pool (DESIGN §10).

The SQL is the shared one (aggregator/store/*.py); what is PostgreSQL's own
is here, side by side: connections (a pool; `?` placeholders written as
psycopg's `%s`), the schema and its migrations (run once, under a lock,
whichever node starts first), full-text search (a tsvector per article,
accents folded where the unaccent extension is available), row locks for
claims (FOR UPDATE SKIP LOCKED), the lock that serialises new-article
decisions across pollers, per-host request slots kept in the database (the
limit holds for the whole cluster), job locks (one node at a time does
retention and renders the outputs), and the record of which node lists
which feeds (an unsubscribe on one node does not flap against another).

The password in the URL never appears in a message: ``display_url`` is what
logs and errors show.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from aggregator.errors import DatabaseAway
from aggregator.hostslots import LocalHostSlots
from aggregator.model import Subscription, iso, iso_ms
from aggregator.query import Query, QueryError, to_tsquery
from aggregator.store.base import Conn, Row, StoreError, chunks, marks
from aggregator.store.search import SearchMixin

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LIVE_NODE = timedelta(minutes=10)  # a node that synced or beat within this counts as live
JOB_RETRY = 5.0  # seconds between asks for a job lock another node holds
CONNECT_WAIT = 10.0  # longest wait for a connection from the pool
# Once the server stopped answering, calls fail at once (StoreError) instead
# of each waiting CONNECT_WAIT, and one call tries again this often: the
# dispatcher, the publisher and a shutdown are not held up by a dead server.
UNREACHABLE_RETRY = 5.0
# A node that vanishes without closing its connections (power cut, network
# partition) must not hold its job locks for the kernel's two hours of TCP
# keepalive: both ends probe an idle connection after 10 s and give up after
# 3 unanswered probes 5 s apart (about 25 s), and the server drops a session
# whose sent data stays unacknowledged for 30 s. Unix sockets ignore these.
# A connection attempt to a host that does not answer gives up after 10 s.
KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
             "connect_timeout": 10}  # fmt: skip
SERVER_KEEPALIVE = (
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3;"
    " SET tcp_user_timeout = 30000"
)
# Advisory lock keys (pg_advisory_*): fixed numbers in a range of our own.
_LOCKS = {"migrate": 7_310_001, "ingest": 7_310_002, "render": 7_310_003, "retention": 7_310_004}


def psycopg_pool_timeout() -> type[Exception]:
    from psycopg_pool import PoolTimeout

    return PoolTimeout


def _connection_lost(exc: Exception) -> bool:
    """An error that says the server went away mid-way (not a bad query)."""
    sqlstate = getattr(exc, "sqlstate", None)
    # 08: connection exceptions; 57P01-57P03: the server is shutting down or starting up.
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03")


def display_url(url: str) -> str:
    """The URL without its password (and without a password= parameter): for messages."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
        query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
        # urlunsplit drops the // of an empty host (postgresql:///db?host=/socket): written out here.
        return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
    except ValueError:
        return "postgresql://(unreadable URL)"


@lru_cache(maxsize=4096)
def _pg(sql: str) -> str:
    """Our `?` placeholders as psycopg's `%s` (a literal % doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Row(tuple[Any, ...]):
    """A row by position and by column name, as sqlite3.Row gives them."""

    _names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._names)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], _Row]:
    names = {d.name: i for i, d in enumerate(cursor.description or ())}
    row_type: type[_Row] = type("Row", (_Row,), {"_names": names})

    def make(values: Sequence[Any]) -> _Row:
        return row_type(values)

    return make


class _Conn:
    """A psycopg connection inside a transaction, speaking our SQL (Conn)."""

    def __init__(self, conn: Any):
        self.conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        return self.conn.execute(_pg(sql), tuple(parameters))

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any:
        rows = [tuple(p) for p in seq_of_parameters]
        cursor = self.conn.cursor()
        if rows:
            cursor.executemany(_pg(sql), rows)
        return cursor


SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO meta (key, value) VALUES ('content_version', '0'), ('status_version', '0');

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
    interval DOUBLE PRECISION,
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
    publish_interval DOUBLE PRECISION,
    updated_at TEXT,
    added_at TEXT NOT NULL,
    last_new_at TEXT,
    article_count INTEGER NOT NULL DEFAULT 0,
    ttl DOUBLE PRECISION,
    last_parsed_at TEXT,
    source_file TEXT,
    cluster INTEGER NOT NULL DEFAULT 1,
    full_text INTEGER NOT NULL DEFAULT 0,
    backfill INTEGER,
    parse_path TEXT,
    host TEXT NOT NULL DEFAULT '',
    lease_owner TEXT,
    lease_until TEXT,
    last_counts TEXT
);
CREATE INDEX feeds_due ON feeds (next_poll_at) WHERE status = 'active';
CREATE INDEX feeds_leased ON feeds (lease_owner) WHERE lease_owner IS NOT NULL;  -- a node giving back its leases
CREATE TABLE feed_tags (feed_id TEXT NOT NULL, tag TEXT NOT NULL, PRIMARY KEY (feed_id, tag));
CREATE INDEX feed_tags_tag ON feed_tags (tag, feed_id);
CREATE TABLE host_backoff (host TEXT PRIMARY KEY, until TEXT NOT NULL);

CREATE TABLE articles (
    seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
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
    rewrites INTEGER NOT NULL DEFAULT 0,
    story_id TEXT,
    story_score DOUBLE PRECISION,
    story_rule TEXT,
    story_why TEXT,
    hidden_by TEXT,
    held TEXT,
    visible INTEGER NOT NULL DEFAULT 1,
    full_text INTEGER NOT NULL DEFAULT 0,
    full_text_error TEXT
);
CREATE INDEX articles_feed_canonical ON articles (feed_id, canonical_url);
CREATE INDEX articles_canonical ON articles (canonical_url) WHERE duplicate_of IS NULL;
CREATE INDEX articles_latest ON articles (sort_at DESC, seq DESC, feed_id, story_id) WHERE visible = 1;
CREATE INDEX articles_feed_latest ON articles (feed_id, sort_at DESC, seq DESC) WHERE visible = 1;
CREATE INDEX articles_duplicate_of ON articles (duplicate_of) WHERE duplicate_of IS NOT NULL;
CREATE INDEX articles_sort_at ON articles (sort_at);
CREATE INDEX articles_story ON articles (story_id, seq);

CREATE TABLE entry_keys (
    feed_id TEXT NOT NULL,
    entry_key TEXT NOT NULL,
    article_seq BIGINT,
    deleted_at TEXT,
    PRIMARY KEY (feed_id, entry_key)
);
CREATE INDEX entry_keys_article ON entry_keys (article_seq);

CREATE TABLE stories (
    id TEXT PRIMARY KEY,
    founder_seq BIGINT,
    published_at TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    language TEXT,
    profile TEXT,
    size INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX stories_published ON stories (published_at);
CREATE TABLE story_index (
    key TEXT NOT NULL, at TEXT NOT NULL, seq BIGINT NOT NULL, story_id TEXT NOT NULL, PRIMARY KEY (key, at, seq)
);
CREATE INDEX story_index_article ON story_index (seq);

CREATE TABLE search (seq BIGINT PRIMARY KEY, document TSVECTOR NOT NULL);
CREATE INDEX search_document ON search USING GIN (document);

-- The cluster's own: request slots per host, which node lists which feeds, the rendered outputs.
CREATE TABLE host_slots (host TEXT NOT NULL, slot INTEGER NOT NULL, owner TEXT NOT NULL, until TEXT NOT NULL,
                         PRIMARY KEY (host, slot));
CREATE TABLE nodes (id TEXT PRIMARY KEY, heartbeat_at TEXT NOT NULL, fingerprint TEXT NOT NULL,
                    feed_count INTEGER NOT NULL);
CREATE TABLE node_feeds (node TEXT NOT NULL, feed_id TEXT NOT NULL, PRIMARY KEY (node, feed_id));
CREATE TABLE outputs (path TEXT PRIMARY KEY, content_type TEXT NOT NULL, body BYTEA NOT NULL,
                      last_modified TEXT, content_version BIGINT NOT NULL, status_version BIGINT NOT NULL);
"""


class PostgresHostSlots(LocalHostSlots):
    """Per-host request slots shared by every poller of the cluster: slot n of
    a host is a row, held until a time (a poller that dies loses it then)."""

    def __init__(self, store: PostgresStore, hold_for: float):
        super().__init__()
        self.store = store
        self.hold_for = hold_for

    def _take(self, host: str, limit: int) -> int | None:
        now = datetime.now().astimezone()
        until = iso_ms(now + timedelta(seconds=self.hold_for))
        with self.store._writing() as conn:
            for slot in range(limit):
                row = conn.execute(
                    "INSERT INTO host_slots (host, slot, owner, until) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (host, slot) DO UPDATE SET owner = excluded.owner, until = excluded.until"
                    " WHERE host_slots.until < ? RETURNING slot",
                    (host, slot, self.store.node, until, iso_ms(now)),
                ).fetchone()
                if row is not None:
                    return slot
        return None

    @contextlib.contextmanager
    def hold(self, host: str, limit: int, abort: threading.Event) -> Iterator[bool]:
        with super().hold(host, limit, abort) as held:
            if not held:
                yield False
                return
            wait = 0.05
            slot = self._take(host, limit)
            while slot is None:
                if abort.wait(wait):
                    yield False
                    return
                wait = min(wait * 2, 0.5)
                slot = self._take(host, limit)
            try:
                yield True
            finally:
                with self.store._writing() as conn:
                    conn.execute(
                        "DELETE FROM host_slots WHERE host = ? AND slot = ? AND owner = ?",
                        (host, slot, self.store.node),
                    )


class PostgresStore(SearchMixin):
    """The store in a PostgreSQL database, shared by several pollers."""

    shared = True  # outputs are rendered by one node and served by all

    def __init__(self, url: str, readonly: bool = False, pool_size: int = 12):
        import psycopg
        from psycopg_pool import ConnectionPool

        self.url = url
        self.display_url = display_url(url)
        self.readonly = readonly
        self._local = threading.local()
        self._slots: PostgresHostSlots | None = None
        self._job_conns: dict[str, Any] = {}
        self._job_lock = threading.Lock()
        self._job_retry: dict[str, float] = {}
        self._down: tuple[float, str] | None = None  # (since, why): the server stopped answering
        self._next_try = 0.0
        # The pool says so every second while the server is away, over two lines;
        # this store says it once (and when it is back).
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)

        def configure(conn: Any) -> None:
            conn.row_factory = _row_factory

        try:
            self.pool = ConnectionPool(
                url,
                min_size=1,
                max_size=pool_size,
                kwargs={"autocommit": True, **KEEPALIVE},
                configure=configure,
                open=True,
                timeout=30,
                name="aggregator",
            )
            self.pool.wait(timeout=15)
        except (psycopg.Error, Exception) as exc:
            raise StoreError(f"{self.display_url}: cannot connect to the database: {_clean(exc, url)}") from None
        try:
            self._migrate()
            self.text_config = self.get_meta("text_search_config") or "simple"
        except psycopg.Error as exc:
            self.pool.close()
            raise StoreError(f"{self.display_url}: cannot use the database: {_clean(exc, url)}") from None

    # --- primitives ---------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection; StoreError at once while the server is known
        to be away (one call in UNREACHABLE_RETRY seconds tries again)."""
        import psycopg

        down = self._down
        if down is not None:
            if time.monotonic() < self._next_try:
                raise DatabaseAway(f"{self.display_url}: the database does not answer ({down[1]}); retrying")
            self._next_try = time.monotonic() + UNREACHABLE_RETRY
        try:
            with self.pool.connection(timeout=2.0 if down else CONNECT_WAIT) as conn:
                yield conn
            if self._down is not None:
                log.warning("%s: the database answers again (after %.0fs)", self.display_url,
                            time.monotonic() - self._down[0])  # fmt: skip
                self._down = None
        except psycopg.OperationalError as exc:
            if not isinstance(exc, psycopg_pool_timeout()) and not _connection_lost(exc):
                raise
            why = _clean(exc, self.url)
            if self._down is None:
                log.error("%s: the database does not answer (%s): still serving the last outputs; polling and "
                          "publishing resume when it is back", self.display_url, why)  # fmt: skip
                self._down = (time.monotonic(), why)
            self._next_try = time.monotonic() + UNREACHABLE_RETRY
            raise DatabaseAway(f"{self.display_url}: the database does not answer ({why})") from None

    def release_orphaned_leases(self) -> int:
        """Nothing: in a cluster a dead node's feeds come back when its leases
        expire (DESIGN §10), the same rule for a node on this machine or another."""
        return 0

    def unreachable(self) -> str | None:
        down = self._down
        if down is None:
            return None
        return f"the database has not answered for {time.monotonic() - down[0]:.0f}s: {down[1]}"

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        timeout = getattr(self._local, "timeout", None)
        with self._connection() as conn:
            if timeout is None:
                return list(conn.execute(_pg(sql), tuple(params)).fetchall())
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
                return list(conn.execute(_pg(sql), tuple(params)).fetchall())

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Conn]:
        if self.readonly:
            raise StoreError(f"{self.display_url}: opened read-only; this command cannot change it")
        with self._connection() as conn, conn.transaction():
            yield _Conn(conn)

    @contextlib.contextmanager
    def time_limit(self, seconds: float) -> Iterator[None]:
        import psycopg

        self._local.timeout = seconds
        try:
            yield
        except psycopg.errors.QueryCanceled:
            raise TimeoutError(f"gave up after {seconds:g}s") from None
        finally:
            self._local.timeout = None

    def columns(self, table: str) -> list[str]:
        rows = self._read(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = ? AND table_schema = current_schema() ORDER BY ordinal_position",
            (table,),
        )
        return [str(r[0]) for r in rows]

    def _after_copy(self) -> None:
        with self._writing() as conn:
            conn.execute("SELECT setval(pg_get_serial_sequence('articles', 'seq'), COALESCE(MAX(seq), 0) + 1, false)"
                         " FROM articles")  # fmt: skip

    def _skip_locked(self) -> str:
        return " FOR UPDATE SKIP LOCKED"

    def _json_array(self, column: str) -> str:
        return f"json_agg({column})::text"  # NULL over no rows

    def _json_object(self, key: str, value: str) -> str:
        return f"json_object_agg({key}, {value})::text"  # NULL over no rows

    def _serialize_ingest(self, conn: Conn) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (_LOCKS["ingest"],))

    def close(self) -> None:
        with self._job_lock:
            for conn in self._job_conns.values():
                with contextlib.suppress(Exception):
                    conn.close()
            self._job_conns.clear()
        self.pool.close()

    def integrity_check(self) -> str:
        self._read("SELECT 1")
        return "ok"

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM schema_migrations")[0][0])

    def host_slots(self, hold_for: float = 180.0) -> PostgresHostSlots:
        if self._slots is None:
            self._slots = PostgresHostSlots(self, hold_for)
        return self._slots

    # --- schema --------------------------------------------------------------------

    def _migrate(self) -> None:
        """Once, under a lock: a second node starting at the same moment waits, then finds it done."""
        with self.pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCKS["migrate"],))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)"
                )
                current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]
                if current > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.display_url}: the database has schema version {current}, newer than this aggregator "
                        f"({SCHEMA_VERSION}); upgrade aggregator on this node"
                    )
                if current < 1:
                    log.info("%s: creating the schema", self.display_url)
                    with conn.transaction():
                        conn.execute(SCHEMA)
                        config = self._text_search_config(conn)
                        conn.execute("INSERT INTO meta (key, value) VALUES ('text_search_config', %s)", (config,))
                        conn.execute(
                            "INSERT INTO schema_migrations (version, applied_at) VALUES (1, %s)",
                            (iso(datetime.now().astimezone()),),
                        )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCKS["migrate"],))

    @staticmethod
    def _text_search_config(conn: Any) -> str:
        """Words folded like SQLite's index folds them (case and accents), where unaccent can be had."""
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
                conn.execute("CREATE TEXT SEARCH CONFIGURATION aggregator (COPY = simple)")
                conn.execute(
                    "ALTER TEXT SEARCH CONFIGURATION aggregator ALTER MAPPING FOR hword, hword_part, word"
                    " WITH unaccent, simple"
                )
            return "aggregator"
        except Exception as exc:
            log.warning("full-text search without accent folding (the unaccent extension: %s)", exc)
            return "simple"

    # --- full-text search: tsvector ----------------------------------------------------------

    def _index_text(self, conn: Conn, seq: int, title: str, body: str, replace: bool = False) -> None:
        config = self.text_config
        conn.execute(
            f"INSERT INTO search (seq, document) VALUES (?, setweight(to_tsvector('{config}', ?), 'A')"
            f" || to_tsvector('{config}', ?)) ON CONFLICT (seq) DO UPDATE SET document = excluded.document",
            (seq, title[:2000], body[:20_000]),
        )

    def _unindex_text(self, conn: Conn, seqs: Sequence[int]) -> None:
        for part in chunks(list(seqs)):
            conn.execute(f"DELETE FROM search WHERE seq IN ({marks(part)})", part)

    def _text_matches(self, query: Query, limit: int) -> list[int]:
        import psycopg

        expression = to_tsquery(query)
        if not expression:
            return []
        try:
            rows = self._read(
                f"SELECT seq FROM search WHERE document @@ to_tsquery('{self.text_config}', ?)"
                " ORDER BY seq DESC LIMIT ?",
                (expression, limit),
            )
        except psycopg.errors.SyntaxError as exc:  # the expression is ours and quoted: this should not happen
            raise QueryError(f"the search index could not read the query: {exc}") from None
        return [r[0] for r in rows]

    # --- the cluster: nodes and their feeds/, job locks, shared outputs ------------------------

    def _listed_elsewhere(self, subs: Sequence[Subscription], now: datetime) -> set[str]:
        """Records what this node's feeds/ lists; returns what other live nodes
        list, and warns when the lists differ (a feed is unsubscribed only when
        no live node lists it: nodes with different feeds/ do not fight)."""
        ids = sorted(s.feed_id for s in subs)
        fingerprint = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
        with self._writing() as conn:
            old = conn.execute("SELECT fingerprint FROM nodes WHERE id = ?", (self.node,)).fetchone()
            conn.execute(
                "INSERT INTO nodes (id, heartbeat_at, fingerprint, feed_count) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at,"
                " fingerprint = excluded.fingerprint, feed_count = excluded.feed_count",
                (self.node, iso(now), fingerprint, len(ids)),
            )
            if old is None or old[0] != fingerprint:
                conn.execute("DELETE FROM node_feeds WHERE node = ?", (self.node,))
                conn.executemany("INSERT INTO node_feeds (node, feed_id) VALUES (?, ?)", [(self.node, i) for i in ids])
            others = conn.execute(
                "SELECT id, fingerprint, feed_count FROM nodes WHERE id != ? AND heartbeat_at > ?",
                (self.node, iso(now - LIVE_NODE)),
            ).fetchall()
            conn.execute("DELETE FROM nodes WHERE heartbeat_at < ?", (iso(now - LIVE_NODE * 6),))
            conn.execute("DELETE FROM node_feeds WHERE node NOT IN (SELECT id FROM nodes)")
            differ = [o for o in others if o[1] != fingerprint]
            if not differ:
                return set()
            for other in differ:
                log.warning(
                    "node %s lists other feeds than this one (%d feeds there, %d here): its feeds/ differs; feeds "
                    "are unsubscribed only when no live node lists them. Give every node the same feeds/",
                    other[0].split(":")[0],
                    other[2],
                    len(ids),
                )
            rows = conn.execute(
                "SELECT DISTINCT feed_id FROM node_feeds WHERE node IN (" + marks([o[0] for o in differ]) + ")",
                [o[0] for o in differ],
            ).fetchall()
        return {r[0] for r in rows}

    def live_nodes(self) -> list[str]:
        since = iso(datetime.now().astimezone() - timedelta(minutes=1))
        return [str(r[0]) for r in self._read("SELECT id FROM nodes WHERE heartbeat_at > ? ORDER BY id", (since,))]

    def leave(self) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM node_feeds WHERE node = ?", (self.node,))
            conn.execute("DELETE FROM nodes WHERE id = ?", (self.node,))

    def heartbeat(self) -> None:
        with self._writing() as conn:
            conn.execute(
                "UPDATE nodes SET heartbeat_at = ? WHERE id = ?", (iso(datetime.now().astimezone()), self.node)
            )

    def try_job(self, name: str) -> bool:
        """Whether this node does the job ``name`` (retention, rendering): a
        session lock held by a connection kept for it; another node gets it
        when this one dies (its connection closes, or the server gives up on
        it: KEEPALIVE). Each call checks that the session is still there, so
        a node cut off long enough for another to take the job stops doing it."""
        import psycopg
        from psycopg.conninfo import make_conninfo

        with self._job_lock:
            conn = self._job_conns.get(name)
            try:
                if conn is not None and self._still_held(name, conn):
                    return True
                if self._down is not None:
                    return False  # the pool knows the server is away: no job until it is back
                if time.monotonic() < self._job_retry.get(name, 0.0):
                    return False  # another node has it: ask again in a few seconds, not on every call
                self._job_retry[name] = time.monotonic() + JOB_RETRY
                conn = psycopg.connect(make_conninfo(self.url, **KEEPALIVE), autocommit=True)
                with contextlib.suppress(psycopg.Error):  # tcp_user_timeout is PostgreSQL 12+
                    conn.execute(SERVER_KEEPALIVE)
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCKS[name],)).fetchone()
                if row is not None and row[0]:
                    self._job_conns[name] = conn
                    return True
                conn.close()
                return False
            except psycopg.Error as exc:
                log.warning("could not ask for the %s job lock: %s", name, _clean(exc, self.url))
                return False

    def _still_held(self, name: str, conn: Any) -> bool:
        """Whether the session holding the job lock is alive (then it holds
        the lock: a session lock lasts as long as its session)."""
        import psycopg

        try:
            if not conn.closed:
                conn.execute("SELECT 1")
                return True
        except psycopg.Error as exc:
            log.warning("lost the %s job (its database session ended: %s); another node may take it over",
                        name, _clean(exc, self.url))  # fmt: skip
        with contextlib.suppress(psycopg.Error):
            conn.close()
        del self._job_conns[name]
        return False

    def save_outputs(self, documents: Sequence[tuple[str, str, bytes, str | None]], content_version: int,
                     status_version: int) -> None:  # fmt: skip
        """The renderer's outputs, for every node to serve the same bytes."""
        with self._writing() as conn:
            conn.execute("DELETE FROM outputs")
            conn.executemany(
                "INSERT INTO outputs (path, content_type, body, last_modified, content_version, status_version)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(p, t, b, m, content_version, status_version) for p, t, b, m in documents],
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('outputs_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (f"{content_version}:{status_version}:{time.time_ns()}",),
            )

    def outputs_version(self) -> str | None:
        return self.get_meta("outputs_version")

    def load_outputs(self) -> tuple[list[tuple[str, str, bytes, str | None]], int, int]:
        rows = self._read(
            "SELECT path, content_type, body, last_modified, content_version, status_version FROM outputs"
        )
        if not rows:
            return [], -1, -1
        return [(r[0], r[1], bytes(r[2]), r[3]) for r in rows], int(rows[0][4]), int(rows[0][5])


def _clean(exc: BaseException, url: str) -> str:
    """An error's text without the URL's password, wherever it appears."""
    text = " ".join(str(exc).split())
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "***")
    return text.replace(url, display_url(url))[:500]
