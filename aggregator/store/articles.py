"""Articles: one poll's writes (in one transaction), and the article reads
the command line and the publisher need."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from aggregator.dedupe import Existing, Plan, StoredRef
from aggregator.model import Article, FeedPollUpdate, FeedState, ParsedEntry, StoryPlan, from_iso, iso
from aggregator.store.base import Conn, article_from_row, chunks, dumps, marks
from aggregator.store.feeds import FeedsMixin

_REF_COLUMNS = (
    "a.seq, a.id, a.feed_id, a.content_hash, a.updated_at, a.modified_at, a.rewrites, a.duplicate_of, a.story_id"
)
# Keys looked up per statement in story_index_rows (well under SQLite's 500 terms of a compound SELECT).
_KEYS_PER_STATEMENT = 50
_UPSERT_KEY = (
    "INSERT INTO entry_keys (feed_id, entry_key, article_seq) VALUES (?, ?, ?)"
    " ON CONFLICT(feed_id, entry_key) DO UPDATE SET article_seq = excluded.article_seq, deleted_at = NULL"
)


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
        story_id=r[8],
    )


class ArticlesMixin(FeedsMixin):
    def known_hashes(self, feed_id: str) -> dict[str, str]:
        """entry key -> content hash for every live article of a feed."""
        rows = self._read(
            "SELECT k.entry_key, a.content_hash FROM entry_keys k JOIN articles a ON a.seq = k.article_seq"
            " WHERE k.feed_id = ?",
            (feed_id,),
        )
        return {r[0]: r[1] for r in rows}

    @contextmanager
    def ingest(self, feed_id: str) -> Iterator[IngestTransaction]:
        """One feed's poll, written in one transaction."""
        with self._writing() as conn:
            yield IngestTransaction(self, conn, feed_id)

    def set_full_text(self, seq: int, content: str | None, text: str, error: str | None) -> None:
        """An article's page was read (once): its extracted content, or why not (it keeps the feed's text)."""
        with self._writing() as conn:
            if content is None:
                conn.execute("UPDATE articles SET full_text = 2, full_text_error = ? WHERE seq = ?", (error, seq))
                return
            row = conn.execute("SELECT title FROM articles WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return
            conn.execute(
                "UPDATE articles SET content = ?, full_text = 1, full_text_error = NULL WHERE seq = ?", (content, seq)
            )
            self._index_text(conn, seq, row[0], text, replace=True)
            self._bump_content_version(conn)

    def articles(self, limit: int | None = None, feed_id: str | None = None) -> list[tuple[Article, FeedState]]:
        """Stored articles newest first, duplicates and hidden ones included, with their feed."""
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
        return [(article_from_row(r), feeds[r["feed_id"]]) for r in self._read(sql, params) if r["feed_id"] in feeds]


class IngestTransaction:
    """Reads and writes for one feed inside one write transaction."""

    def __init__(self, store: ArticlesMixin, conn: Conn, feed_id: str):
        self.store = store
        self.conn = conn
        self.feed_id = feed_id

    def existing(self, entries: Sequence[ParsedEntry]) -> Existing:
        conn = self.conn
        hint = self.store._hint
        found = Existing()
        keys = [e.entry_key for e in entries]
        canon = list({e.canonical_url for e in entries if e.canonical_url})
        guids = list({e.guid for e in entries if e.guid})
        for part in chunks(keys):
            for r in conn.execute(
                f"SELECT k.entry_key, {_REF_COLUMNS}, CASE WHEN k.article_seq IS NULL THEN 1 ELSE 0 END"
                f" FROM entry_keys k LEFT JOIN articles a ON a.seq = k.article_seq"
                f" WHERE k.feed_id = ? AND k.entry_key IN ({marks(part)})",
                (self.feed_id, *part),
            ):
                if r[-1]:
                    found.tombstones.add(r[0])
                else:
                    found.by_key[r[0]] = _ref(r[1:-1])
        for part in chunks(canon):
            for r in conn.execute(
                f"SELECT a.canonical_url, {_REF_COLUMNS} FROM articles a{hint('articles_feed_canonical')}"
                f" WHERE a.feed_id = ? AND a.canonical_url IN ({marks(part)}) ORDER BY a.seq",
                (self.feed_id, *part),
            ):
                found.by_canonical.setdefault(r[0], _ref(r[1:]))
            for r in conn.execute(
                f"SELECT a.canonical_url, {_REF_COLUMNS} FROM articles a{hint('articles_canonical')}"
                f" WHERE a.canonical_url IN ({marks(part)}) AND a.duplicate_of IS NULL AND a.feed_id != ?"
                " ORDER BY a.seq",
                (*part, self.feed_id),
            ):
                found.elsewhere.setdefault(r[0], _ref(r[1:]))
        for part in chunks(guids):
            found.taken_ids.update(
                r[0] for r in conn.execute(f"SELECT id FROM articles WHERE id IN ({marks(part)})", part)
            )
        return found

    def apply(self, plan: Plan, stories: Sequence[StoryPlan], now: datetime) -> list[tuple[int, str]]:
        """Write a poll's plan; ``stories[i]`` says where ``plan.inserts[i]`` goes.
        Returns (seq, link) of the new articles that the outputs show."""
        conn = self.conn
        stamp = iso(now)
        shown: list[tuple[int, str]] = []
        for insert, story in zip(plan.inserts, stories, strict=True):
            e = insert.entry
            story_id = story.story_id or insert.output_id
            published = insert.published_at
            visible = int(insert.hidden_by is None and insert.held is None)
            row = conn.execute(
                "INSERT INTO articles (id, feed_id, entry_key, guid, url, canonical_url, title, authors, summary,"
                " content, categories, enclosures, image, language, published_at, updated_at, first_seen_at, sort_at,"
                " content_hash, duplicate_of, story_id, story_score, story_rule, story_why, hidden_by, held, visible)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING seq",
                (
                    insert.output_id, self.feed_id, e.entry_key, e.guid, e.url, e.canonical_url, e.title,
                    dumps([a.to_json() for a in e.authors]), e.summary, e.content, dumps(list(e.categories)),
                    dumps([x.to_json() for x in e.enclosures]), e.image, e.language, iso(published),
                    iso(e.updated_at), stamp, iso(min(published, now)), e.content_hash, insert.duplicate_of,
                    story_id, story.score, story.rule, dumps(list(story.why)) if story.why else None,
                    insert.hidden_by, insert.held, visible,
                ),
            ).fetchone()  # fmt: skip
            seq = row[0]
            if visible and e.url:
                shown.append((seq, e.url))
            conn.execute(_UPSERT_KEY, (self.feed_id, e.entry_key, seq))
            self.store._index_text(conn, seq, e.title, e.text)
            if story.story_id is None:
                conn.execute(
                    "INSERT INTO stories (id, founder_seq, published_at, first_seen_at, updated_at, language, profile,"
                    " size) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (story_id, seq, iso(published), stamp, stamp, e.language, story.profile),
                )
            else:
                conn.execute(
                    "UPDATE stories SET size = size + 1, updated_at = ?, profile = COALESCE(?, profile) WHERE id = ?",
                    (stamp, story.profile, story_id),
                )
            if story.keys:  # one statement for the article's keys (a few): one pass through the GIL, not one per row
                at = iso(published)
                conn.execute(
                    "INSERT INTO story_index (key, at, seq, story_id) VALUES "
                    + ", ".join("(?, ?, ?, ?)" for _ in story.keys),
                    [v for key in story.keys for v in (key, at, seq, story_id)],
                )
        for alias in plan.aliases:
            conn.execute(_UPSERT_KEY, (self.feed_id, alias.entry_key, alias.ref.rowid))
        for update in plan.updates:
            self._update(update.ref.rowid, update.entry, update.updated_at, stamp, now, update.hidden_by)
        if plan.inserts:
            conn.execute(
                "UPDATE feeds SET article_count = article_count + ? WHERE id = ?", (len(plan.inserts), self.feed_id)
            )
        for part in chunks(plan.tombstone_hits):
            # Still in the feed: the tombstone must outlive it (see purge_tombstones).
            conn.execute(
                f"UPDATE entry_keys SET deleted_at = ? WHERE feed_id = ? AND entry_key IN ({marks(part)})",
                (stamp, self.feed_id, *part),
            )
        if plan.inserts or plan.updates:
            self.store._bump_content_version(conn)
        return shown

    def _update(
        self, seq: int, e: ParsedEntry, updated_at: datetime, stamp: str, now: datetime, hidden_by: str | None
    ) -> None:
        row = self.conn.execute("SELECT first_seen_at FROM articles WHERE seq = ?", (seq,)).fetchone()
        first_seen = from_iso(row[0]) or now
        published = e.published_at or e.updated_at or first_seen
        self.conn.execute(
            "UPDATE articles SET guid = ?, url = ?, canonical_url = ?, title = ?, authors = ?, summary = ?,"
            " content = CASE WHEN full_text = 1 THEN content ELSE ? END, categories = ?, enclosures = ?, image = ?,"
            " language = ?, published_at = ?,"
            " updated_at = ?, sort_at = ?, content_hash = ?, modified_at = ?, rewrites = rewrites + 1, hidden_by = ?,"
            " visible = CASE WHEN CAST(? AS TEXT) IS NULL AND held IS NULL THEN 1 ELSE 0 END WHERE seq = ?",
            (
                e.guid, e.url, e.canonical_url, e.title, dumps([a.to_json() for a in e.authors]), e.summary,
                e.content, dumps(list(e.categories)), dumps([x.to_json() for x in e.enclosures]), e.image,
                e.language, iso(published), iso(updated_at), iso(min(published, first_seen)), e.content_hash, stamp,
                hidden_by, hidden_by, seq,
            ),
        )  # fmt: skip
        if not self.conn.execute("SELECT full_text = 1 FROM articles WHERE seq = ?", (seq,)).fetchone()[0]:
            self.store._index_text(self.conn, seq, e.title, e.text, replace=True)

    def story_index_rows(
        self, keys: Sequence[str], start: datetime, end: datetime, most: int
    ) -> dict[str, list[str] | None]:
        """For each key, the stories of the indexed articles carrying it,
        published within [start, end] (the index, never a scan); None for a
        key more than ``most`` such articles carry.

        One statement and one row for all of an article's keys: a column per
        key, the story ids of at most ``most`` + 1 entries of the key's range
        of the index as a JSON array (so a common key, such as a site's
        boilerplate, costs no more than a rare one). Each row handed over is
        a pass through the interpreter lock, which a poll's parsing threads
        hold most of the time: a row per index entry was 72% of clustering's
        time in a cold poll. (A statement per key was half of a new article's
        round trips to a PostgreSQL server, inside the ingest lock.)"""
        window = (iso(start), iso(end))
        found: dict[str, list[str] | None] = {}
        ids = self.store._json_array("story_id")
        for part in chunks(list(dict.fromkeys(keys)), _KEYS_PER_STATEMENT):
            columns = ", ".join(
                f"(SELECT {ids} FROM (SELECT story_id FROM story_index"
                f" WHERE key = ? AND at >= ? AND at <= ? LIMIT ?) AS k{n})"
                for n in range(len(part))
            )
            row = self.conn.execute(f"SELECT {columns}", [v for key in part for v in (key, *window, most + 1)])
            for key, story_ids in zip(part, row.fetchone(), strict=True):
                listed = [str(s) for s in json.loads(story_ids or "[]")]
                found[key] = None if len(listed) > most else listed
        return {key: found[key] for key in keys}

    def story_profiles(self, story_ids: Sequence[str]) -> dict[str, str]:
        """Stored profiles (cluster.StoryProfile JSON) of these stories, where they have one."""
        out: dict[str, str] = {}
        profiles = self.store._json_object("id", "profile")
        for part in chunks(sorted(set(story_ids))):
            # One row, a JSON object, rather than a row per story: see story_index_rows.
            sql = f"SELECT {profiles} FROM stories WHERE id IN ({marks(part)}) AND profile IS NOT NULL"
            found = json.loads(self.conn.execute(sql, part).fetchone()[0] or "{}")
            out.update((str(sid), text) for sid, text in found.items() if isinstance(text, str) and text)
        return out

    def current_interval(self) -> float | None:
        row = self.conn.execute("SELECT interval FROM feeds WHERE id = ?", (self.feed_id,)).fetchone()
        return float(row[0]) if row is not None and row[0] is not None else None

    def write_feed(self, update: FeedPollUpdate) -> None:
        self.store.write_poll(self.conn, self.feed_id, update, self.store.node)

    def serialize(self) -> None:
        """New articles are about to be decided: one poller at a time from here to the commit."""
        self.store._serialize_ingest(self.conn)
