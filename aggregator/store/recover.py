"""Checking and salvaging a damaged SQLite database (`aggregator db check`,
`aggregator db recover`).

Recovery copies every row that can still be read into a new database with
the current schema: rowid tables in ranges, a range that fails is split in
two until the unreadable rows are isolated and skipped. What can be derived
is rebuilt rather than copied (tags, an article's own entry key, the search
index), so a damaged index costs nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aggregator.store.base import StoreError
from aggregator.store.sqlite import MAX_INDEXED_TEXT, SQLiteStore

# Tables copied row by row (rowid tables). The others are rebuilt from them.
_COPIED = ("feeds", "articles", "stories", "meta")
_CHUNK = 2000


@dataclass
class RecoveryReport:
    copied: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    tombstones: int = 0


def check(path: Path) -> list[str]:
    """SQLite's own integrity check of the file: ['ok'] or what is wrong."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return [f"cannot open: {exc}"]
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check(100)")]
    except sqlite3.DatabaseError as exc:
        return [f"cannot even be checked: {exc}"]
    finally:
        conn.close()


def recover(source: Path, target: Path, progress: Callable[[str, int], None] | None = None) -> RecoveryReport:
    if target.exists():
        raise StoreError(f"{target}: already exists; recover into a new file")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    report = RecoveryReport()
    store = SQLiteStore(target)
    try:
        dest = store._wconn
        dest.execute("DELETE FROM meta")
        for table in _COPIED:
            copied, lost = _copy_table(src, dest, table, progress)
            report.copied[table], report.lost[table] = copied, lost
        report.tombstones = _copy_tombstones(src, dest)
        _rebuild(dest)
    finally:
        store.close()
        src.close()
    return report


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def _copy_table(
    src: sqlite3.Connection, dest: sqlite3.Connection, table: str, progress: Callable[[str, int], None] | None
) -> tuple[int, int]:
    wanted = _columns(dest, table)
    try:
        have = set(_columns(src, table))
        top = src.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0] or 0
    except sqlite3.DatabaseError:
        return 0, 0
    columns = [c for c in wanted if c in have]
    names = ", ".join(columns)
    insert = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})"
    copied = lost = 0
    ranges = [(lo, min(lo + _CHUNK - 1, top)) for lo in range(0, top + 1, _CHUNK)]
    while ranges:
        lo, hi = ranges.pop()
        try:
            rows = src.execute(f"SELECT {names} FROM {table} WHERE rowid BETWEEN ? AND ?", (lo, hi)).fetchall()
        except sqlite3.DatabaseError:
            if lo == hi:
                lost += 1
            else:
                mid = (lo + hi) // 2
                ranges += [(lo, mid), (mid + 1, hi)]
            continue
        dest.execute("BEGIN")
        dest.executemany(insert, rows)
        dest.execute("COMMIT")
        copied += len(rows)
        if progress is not None:
            progress(table, copied)
    return copied, lost


def _copy_tombstones(src: sqlite3.Connection, dest: sqlite3.Connection) -> int:
    """Keys of deleted articles (so their entries never come back): what can be read of them."""
    try:
        rows = src.execute("SELECT feed_id, entry_key, deleted_at FROM entry_keys WHERE article_seq IS NULL").fetchall()
    except sqlite3.DatabaseError:
        return 0
    dest.execute("BEGIN")
    dest.executemany("INSERT OR IGNORE INTO entry_keys (feed_id, entry_key, deleted_at) VALUES (?, ?, ?)", rows)
    dest.execute("COMMIT")
    return len(rows)


def _rebuild(dest: sqlite3.Connection) -> None:
    from aggregator.sanitize import to_text

    dest.execute("BEGIN")
    dest.execute(
        "INSERT OR IGNORE INTO entry_keys (feed_id, entry_key, article_seq)"
        " SELECT feed_id, entry_key, seq FROM articles"
    )
    tags = [(fid, tag) for fid, text in dest.execute("SELECT id, tags FROM feeds") for tag in json.loads(text or "[]")]
    dest.executemany("INSERT OR IGNORE INTO feed_tags (feed_id, tag) VALUES (?, ?)", tags)
    dest.execute("UPDATE feeds SET article_count = (SELECT COUNT(*) FROM articles WHERE articles.feed_id = feeds.id)")
    dest.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('content_version', '0'), ('status_version', '0')")
    rows = dest.execute("SELECT seq, title, summary, content FROM articles").fetchall()
    dest.executemany(
        "INSERT INTO search (rowid, title, body) VALUES (?, ?, ?)",
        [(seq, title, to_text(" ".join(p for p in (s, c) if p))[:MAX_INDEXED_TEXT]) for seq, title, s, c in rows],
    )
    dest.execute("COMMIT")
