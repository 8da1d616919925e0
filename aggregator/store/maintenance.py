"""Retention: old articles deleted in short batches, their keys kept as
tombstones so an entry still in its feed never comes back as new."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

from aggregator.model import iso
from aggregator.store.base import Conn, RetentionResult, chunks, marks
from aggregator.store.latest import LatestMixin


class MaintenanceMixin(LatestMixin):
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
                rows = conn.execute(
                    f"SELECT seq, id, feed_id, story_id FROM articles{self._hint('articles_sort_at')}"
                    " WHERE sort_at < ? ORDER BY sort_at LIMIT ?",
                    (iso(cutoff), batch),
                ).fetchall()
                if not rows:
                    break
                seqs = [r[0] for r in rows]
                per_feed: dict[str, int] = {}
                for r in rows:
                    per_feed[r[2]] = per_feed.get(r[2], 0) + 1
                conn.executemany(
                    "UPDATE feeds SET article_count = article_count - ? WHERE id = ?",
                    [(n, fid) for fid, n in sorted(per_feed.items())],
                )
                for part in chunks(seqs):
                    conn.execute(
                        "UPDATE entry_keys SET article_seq = NULL, deleted_at = ?"
                        f" WHERE article_seq IN ({marks(part)})",
                        (iso(now), *part),
                    )
                self._promote_duplicates(conn, [r[1] for r in rows], seqs)
                for part in chunks(seqs):
                    conn.execute(f"DELETE FROM articles WHERE seq IN ({marks(part)})", part)
                    conn.execute(f"DELETE FROM story_index WHERE seq IN ({marks(part)})", part)
                    self._unindex_text(conn, part)
                self._forget_empty_stories(conn, sorted({r[3] for r in rows}))
                self._bump_content_version(conn)
                deleted += len(seqs)
                batches += 1
            if pause:
                time.sleep(pause)
        return RetentionResult(deleted=deleted, batches=batches)

    @staticmethod
    def _promote_duplicates(conn: Conn, ids: list[str], deleted: list[int]) -> None:
        """Exact duplicates of a deleted article keep one of them as the
        article the others duplicate: the earliest surviving one."""
        gone = set(deleted)
        for part in chunks(ids):
            survivors: dict[str, list[tuple[int, str]]] = {}
            for seq, article_id, rep in conn.execute(
                f"SELECT seq, id, duplicate_of FROM articles WHERE duplicate_of IN ({marks(part)}) ORDER BY seq", part
            ):
                if seq not in gone:
                    survivors.setdefault(rep, []).append((seq, article_id))
            for members in survivors.values():
                (first_seq, first_id), rest = members[0], members[1:]
                conn.execute("UPDATE articles SET duplicate_of = NULL WHERE seq = ?", (first_seq,))
                conn.executemany(
                    "UPDATE articles SET duplicate_of = ? WHERE seq = ?", [(first_id, seq) for seq, _ in rest]
                )

    def _forget_empty_stories(self, conn: Conn, story_ids: Sequence[str]) -> None:
        """Stories whose every article is gone go too; the others keep their
        id, and count what is left."""
        for part in chunks(story_ids):
            left = {
                r[0]: r[1]
                for r in conn.execute(
                    f"SELECT story_id, COUNT(*) FROM articles{self._hint('articles_story')}"
                    f" WHERE story_id IN ({marks(part)}) GROUP BY story_id",
                    part,
                )
            }
            empty = [sid for sid in part if sid not in left]
            if empty:
                conn.execute(f"DELETE FROM stories WHERE id IN ({marks(empty)})", empty)
            conn.executemany("UPDATE stories SET size = ? WHERE id = ?", [(n, sid) for sid, n in sorted(left.items())])

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
            return int(cur.rowcount)
