"""`aggregator db copy`: an installation moved between SQLite and PostgreSQL
(either way), everything a subscriber or the service relies on kept: feeds
and their state, articles with their ids and sequence, entry keys and
tombstones, stories and their index, the change counters. The search index
is rebuilt on the target from the articles' text (each engine keeps its own
kind). The target must be empty."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aggregator.store.base import StoreBase, StoreError, marks
from aggregator.store.search import SearchMixin

# Table, key columns (for paging in order) — parents before children.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("meta", ("key",)),
    ("feeds", ("id",)),
    ("feed_tags", ("feed_id", "tag")),
    ("articles", ("seq",)),
    ("entry_keys", ("feed_id", "entry_key")),
    ("stories", ("id",)),
    ("story_index", ("key", "at", "seq")),
)
PAGE = 1000

Progress = Callable[[str, int, int], None]


def copy_store(source: SearchMixin, target: SearchMixin, progress: Progress | None = None) -> dict[str, int]:
    """Copy every table, page by page in key order; returns rows per table."""
    if target.feeds() or target._read("SELECT seq FROM articles LIMIT 1"):
        raise StoreError("the target database is not empty: copy into a new, empty database")
    copied: dict[str, int] = {}
    for table, keys in TABLES:
        total = int(source._read(f"SELECT COUNT(*) FROM {table}")[0][0])
        copied[table] = _copy_table(source, target, table, keys, total, progress)
    _rebuild_search(source, target, copied.get("articles", 0), progress)
    target._after_copy()
    return copied


def _copy_table(
    source: StoreBase, target: StoreBase, table: str, keys: Sequence[str], total: int, progress: Progress | None
) -> int:
    done = 0
    after: tuple[Any, ...] | None = None
    order = ", ".join(keys)
    row_key = f"({order})" if len(keys) > 1 else keys[0]
    while True:
        where = f" WHERE {row_key} > ({marks(list(after))})" if after is not None else ""
        rows = source._read(f"SELECT * FROM {table}{where} ORDER BY {order} LIMIT ?", (*(after or ()), PAGE))
        if not rows:
            return done
        wanted = _columns(target, table)
        columns = [c for c in rows[0].keys() if c in wanted]  # noqa: SIM118 (rows are not dicts)
        with target._writing() as conn:
            if table == "meta":
                conn.execute("DELETE FROM meta")
            conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks(columns)})",
                [tuple(r[c] for c in columns) for r in rows],
            )
        done += len(rows)
        after = tuple(rows[-1][k] for k in keys)
        if progress is not None:
            progress(table, done, total)


_COLUMNS: dict[tuple[int, str], set[str]] = {}


def _columns(store: StoreBase, table: str) -> set[str]:
    key = (id(store), table)
    if key not in _COLUMNS:
        _COLUMNS[key] = set(store.columns(table))
    return _COLUMNS[key]


def _rebuild_search(source: SearchMixin, target: SearchMixin, total: int, progress: Progress | None) -> None:
    from aggregator.sanitize import to_text

    done = 0
    for batch in source.each_article(PAGE):
        with target._writing() as conn:
            for article, _feed in batch:
                assert article.rowid is not None
                text = to_text(" ".join(p for p in (article.summary, article.content) if p))
                target._index_text(conn, article.rowid, article.title, text)
        done += len(batch)
        if progress is not None:
            progress("search index", done, total)
