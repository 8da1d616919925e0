"""What every store shares: the interface's primitives, the records it
returns, and the helpers that turn rows into records.

A store is an SQL database behind a small set of primitives (``_read``,
``_writing``, ``_hint``); the domain mixins (feeds, articles, latest,
maintenance) hold the SQL, written once in the dialect both SQLite and
PostgreSQL accept (``?`` placeholders, ``ON CONFLICT`` upserts, ``RETURNING``,
ISO 8601 text times, 0/1 integers for flags, no JSON functions). What
differs between the engines (connections, schema, full-text search, locks)
lives in one module per engine.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from aggregator.hostslots import HostSlots
from aggregator.model import Article, Author, Enclosure, FeedState, FeedStatus, Source, from_iso

SMALL_SCOPE = 200  # Latest of at most this many feeds is read feed by feed


from aggregator.errors import StoreError as StoreError  # noqa: E402  (re-exported for the engines)


class Row(Protocol):
    """A result row: by position and by column name (sqlite3.Row and ours for PostgreSQL)."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def keys(self) -> list[str]: ...


class Conn(Protocol):
    """A connection inside one write transaction (placeholders are ``?``)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> Any: ...


@dataclass
class SyncResult:
    added: list[str]
    removed: list[str]
    reactivated: list[str]
    rescheduled: list[str]  # feeds whose interval changed: their next poll moved


@dataclass
class RetentionResult:
    deleted: int
    batches: int


class StoreBase(ABC):
    """The primitives an engine provides, and the change counters every
    engine keeps in its ``meta`` table."""

    @abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one query, on this thread's reading connection."""

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Conn]:
        """One write transaction: committed when the block ends, rolled back on an exception."""

    @abstractmethod
    def time_limit(self, seconds: float) -> AbstractContextManager[None]:
        """This thread's reads give up after ``seconds`` (raising TimeoutError): the search box's guard."""

    # One machine (SQLite) renders its own outputs and runs every job; a
    # cluster (PostgreSQL) shares them (see store/postgres.py).
    shared = False

    def try_job(self, name: str) -> bool:
        """Whether this process does the job ``name`` (retention, rendering) now."""
        return True

    def live_nodes(self) -> list[str]:
        """Services running against this database now (a cluster: every node that beat within a minute)."""
        return []

    def leave(self) -> None:
        """This node stops (a clean shutdown): it no longer counts as running."""
        return None

    def heartbeat(self) -> None:
        """This node is alive (a cluster counts live nodes' feeds/)."""
        return None

    def unreachable(self) -> str | None:
        """Why the database does not answer right now (a server that went
        away), or None. A file on this machine is never unreachable."""
        return None

    def save_outputs(
        self, documents: Sequence[tuple[str, str, bytes, str | None]], content_version: int, status_version: int
    ) -> None:
        """The rendered outputs, for other nodes to serve (a cluster only)."""
        return None

    def outputs_version(self) -> str | None:
        return None

    def load_outputs(self) -> tuple[list[tuple[str, str, bytes, str | None]], int, int]:
        return [], -1, -1

    @abstractmethod
    def columns(self, table: str) -> list[str]:
        """A table's column names (for copying between engines)."""

    def _after_copy(self) -> None:
        """After `db copy` wrote rows with their own keys (PostgreSQL moves its sequence past them)."""
        return None

    @functools.cached_property
    def node(self) -> str:
        """This process, as leases and node records name it."""
        return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"

    def _serialize_ingest(self, conn: Conn) -> None:
        """Before a poll decides what is new: no other poller's new articles in
        between (exact duplicates, story choices, output ids). SQLite's single
        writer already is that; PostgreSQL takes a transaction lock."""
        return None

    def _hint(self, index: str) -> str:
        """An index hint for engines that take one (SQLite's INDEXED BY)."""
        return ""

    def _json_array(self, column: str) -> str:
        """An aggregate of a column's values as one JSON array (SQLite's JSON functions)."""
        return f"json_group_array({column})"

    def _json_object(self, key: str, value: str) -> str:
        """An aggregate of rows as one JSON object of key to value."""
        return f"json_group_object({key}, {value})"

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def _index_text(self, conn: Conn, seq: int, title: str, body: str, replace: bool = False) -> None:
        """Make an article's plain text findable by full-text search."""

    @abstractmethod
    def _unindex_text(self, conn: Conn, seqs: Sequence[int]) -> None: ...

    @abstractmethod
    def host_slots(self, hold_for: float = 180.0) -> HostSlots:
        """Per-host request slots shared by every poller of this database."""

    @abstractmethod
    def integrity_check(self) -> str:
        """'ok', or what the engine found wrong."""

    @abstractmethod
    def schema_version(self) -> int: ...

    # --- change counters: the publisher rebuilds only what changed ------------

    def _bump_content_version(self, conn: Conn) -> None:
        conn.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'content_version'")

    def _bump_status_version(self, conn: Conn) -> None:
        conn.execute("UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT) WHERE key = 'status_version'")

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
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def set_meta(self, values: dict[str, str | None]) -> None:
        with self._writing() as conn:
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )


# --- row helpers ---------------------------------------------------------------------


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def chunks(items: Sequence[Any], size: int = 400) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


def feed_from_row(r: Row) -> FeedState:
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
        self_url=r["self_url"],
        language=r["language"],
        last_new_at=from_iso(r["last_new_at"]),
        last_parsed_at=from_iso(r["last_parsed_at"]),
        source_file=r["source_file"],
        cluster=bool(r["cluster"]),
        full_text=bool(r["full_text"]),
        backfill=r["backfill"],
        last_counts=json.loads(r["last_counts"] or "{}"),
        parse_path=r["parse_path"],
    )


def article_from_row(r: Row) -> Article:
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
        story_id=r["story_id"],
        story_score=r["story_score"],
        story_rule=r["story_rule"],
        story_why=tuple(json.loads(r["story_why"] or "[]")),
        hidden_by=r["hidden_by"],
        held=r["held"],
        full_text=r["full_text"] == 1,
        full_text_error=r["full_text_error"],
    )


def source_of(feed: FeedState) -> Source:
    return Source(
        feed_id=feed.id,
        title=feed.display_title,
        feed_url=feed.url,
        site_url=feed.site_url,
        updated_at=feed.updated_at,
        tags=feed.tags,
    )
