"""Feeds: what feeds/ lists (synced in), how polling went (written after
every poll), and the reads the scheduler and the pages need."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from aggregator.model import FeedPollUpdate, FeedState, FeedStatus, Subscription, from_iso, iso, iso_ms
from aggregator.store.base import Conn, StoreBase, SyncResult, chunks, dumps, feed_from_row, marks

_FEED_SELECT = "SELECT f.* FROM feeds f"
# Everything a subscription file decides about a feed, as stored.
_SUB_COLUMNS = "configured_title, tags, interval, status, source_file, cluster, full_text, backfill"


def _wanted_status(sub: Subscription, current: str) -> str:
    if not sub.enabled:
        return FeedStatus.DISABLED.value
    if current in (FeedStatus.UNSUBSCRIBED.value, FeedStatus.DISABLED.value):
        return FeedStatus.ACTIVE.value
    return current


class FeedsMixin(StoreBase):
    def sync_subscriptions(
        self, subs: Sequence[Subscription], now: datetime, keep_files: Collection[str] = ()
    ) -> SyncResult:
        """Make the feeds table follow feeds/: add new feeds (due now), update
        what the files say (title, tags, interval, settings), mark feeds no
        longer listed as unsubscribed, except those that came from a file in
        ``keep_files`` (it failed to load: its feeds are left as they are;
        "*" keeps every feed). Writes only what differs, so an unchanged
        feeds/ changes nothing."""
        result = SyncResult(added=[], removed=[], reactivated=[], rescheduled=[])
        changed = False
        wanted = {s.feed_id: s for s in subs}
        with self._writing() as conn:
            rows = {r[0]: r for r in conn.execute(f"SELECT id, configured_url, {_SUB_COLUMNS} FROM feeds")}
            for sub in subs:
                row = rows.get(sub.feed_id)
                if row is None:
                    self._insert_feed(conn, sub, now)
                    result.added.append(sub.url)
                    continue
                changed |= self._update_subscription(conn, sub, row, now, result)
            keep_all = "*" in keep_files
            result.removed = [
                fid
                for fid, row in rows.items()
                if fid not in wanted
                and row["status"] != FeedStatus.UNSUBSCRIBED.value
                and not keep_all
                and row["source_file"] not in keep_files
            ]
            conn.executemany(
                "UPDATE feeds SET status = 'unsubscribed' WHERE id = ?", [(fid,) for fid in result.removed]
            )
            if result.added or result.removed or changed:
                self._bump_content_version(conn)
                self._bump_status_version(conn)
        return result

    @staticmethod
    def _insert_feed(conn: Conn, sub: Subscription, now: datetime) -> None:
        conn.execute(
            f"INSERT INTO feeds (id, url, configured_url, next_poll_at, added_at, {_SUB_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                sub.feed_id, sub.url, sub.url, iso_ms(now), iso(now), sub.title, dumps(list(sub.tags)), sub.interval,
                _wanted_status(sub, FeedStatus.ACTIVE.value), sub.source_file, int(sub.cluster), int(sub.full_text),
                sub.backfill,
            ),
        )  # fmt: skip
        conn.executemany("INSERT INTO feed_tags (feed_id, tag) VALUES (?, ?)", [(sub.feed_id, t) for t in sub.tags])

    def _update_subscription(self, conn: Conn, sub: Subscription, row: Any, now: datetime, result: SyncResult) -> bool:
        status = _wanted_status(sub, row["status"])
        url_changed = row["configured_url"] != sub.url
        if url_changed and status == FeedStatus.GONE.value:
            status = FeedStatus.ACTIVE.value  # a new URL for a feed that was gone: try it
        if status == FeedStatus.ACTIVE.value and row["status"] != FeedStatus.ACTIVE.value:
            result.reactivated.append(sub.url)
        tags = dumps(list(sub.tags))
        values = (sub.title, tags, sub.interval, status, sub.source_file, int(sub.cluster), int(sub.full_text))
        stored = tuple(row[k] for k in ("configured_title", "tags", "interval", "status", "source_file"))
        stored += (row["cluster"], row["full_text"])
        if values == stored and sub.backfill == row["backfill"] and not url_changed:
            return False
        conn.execute(
            "UPDATE feeds SET configured_title = ?, tags = ?, interval = ?, status = ?, source_file = ?, cluster = ?,"
            " full_text = ?, backfill = ? WHERE id = ?",
            (*values, sub.backfill, sub.feed_id),
        )
        if tags != row["tags"]:
            conn.execute("DELETE FROM feed_tags WHERE feed_id = ?", (sub.feed_id,))
            conn.executemany("INSERT INTO feed_tags (feed_id, tag) VALUES (?, ?)", [(sub.feed_id, t) for t in sub.tags])
        if sub.interval != row["interval"]:
            result.rescheduled.append(sub.feed_id)
        if url_changed:
            # The person edited the URL (same feed id: http->https, www.): poll the new one now.
            conn.execute(
                "UPDATE feeds SET url = ?, configured_url = ?, redirect_url = NULL, redirect_seen = 0,"
                " next_poll_at = ?, etag = NULL, last_modified = NULL, body_hash = NULL WHERE id = ?",
                (sub.url, sub.url, iso_ms(now), sub.feed_id),
            )
        return True

    def reschedule(self, moves: dict[str, datetime]) -> None:
        """Move feeds' next polls (an interval changed on reload)."""
        if not moves:
            return
        with self._writing() as conn:
            conn.executemany(
                "UPDATE feeds SET next_poll_at = ? WHERE id = ? AND status = 'active'",
                [(iso_ms(when), fid) for fid, when in moves.items()],
            )
            self._bump_status_version(conn)

    def write_poll(self, conn: Conn, feed_id: str, update: FeedPollUpdate) -> None:
        """The feed's state after a poll (inside that poll's transaction)."""
        u = update
        conn.execute(
            "UPDATE feeds SET last_fetch_at = ?, last_status = ?, last_outcome = ?, error_count = ?, last_error = ?,"
            " etag = ?, last_modified = ?, body_hash = ?, next_poll_at = ?, retry_after = ?, url = COALESCE(?, url),"
            " redirect_url = ?, redirect_seen = ?, status = COALESCE(?, status), title = ?, site_url = ?,"
            " self_url = ?, language = ?, updated_at = ?,"
            " ttl = ?, publish_interval = ?, last_parsed_at = ?, last_new_at = ? WHERE id = ?",
            (
                iso(u.last_fetch_at), u.last_status, u.last_outcome, u.error_count, u.last_error, u.etag,
                u.last_modified, u.body_hash, iso_ms(u.next_poll_at), iso_ms(u.retry_after), u.url, u.redirect_url,
                u.redirect_seen, u.status.value if u.status else None, u.title, u.site_url, u.self_url, u.language,
                iso(u.updated_at), u.ttl, u.publish_interval, iso(u.last_parsed_at), iso(u.last_new_at), feed_id,
            ),
        )  # fmt: skip
        self._bump_status_version(conn)
        if u.visible:
            self._bump_content_version(conn)

    # --- reads -------------------------------------------------------------------

    def feed(self, feed_id: str) -> FeedState | None:
        rows = self._read(_FEED_SELECT + " WHERE f.id = ?", (feed_id,))
        return feed_from_row(rows[0]) if rows else None

    def feed_by_url(self, url: str) -> FeedState | None:
        rows = self._read(_FEED_SELECT + " WHERE f.url = ? OR f.configured_url = ? LIMIT 1", (url, url))
        return feed_from_row(rows[0]) if rows else None

    def feeds(self, status: FeedStatus | None = None) -> list[FeedState]:
        sql = _FEED_SELECT
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE f.status = ?"
            params = (status.value,)
        sql += " ORDER BY COALESCE(f.configured_title, f.title, f.url), f.id"
        return [feed_from_row(r) for r in self._read(sql, params)]

    def feeds_by_id(self, ids: Collection[str]) -> dict[str, FeedState]:
        out: dict[str, FeedState] = {}
        for part in chunks(sorted(ids)):
            rows = self._read(f"{_FEED_SELECT} WHERE f.id IN ({marks(part)})", part)
            out.update((r["id"], feed_from_row(r)) for r in rows)
        return out

    def due_feeds(self, now: datetime, limit: int, offset: int = 0) -> list[FeedState]:
        """Active feeds whose next_poll_at has come, oldest first (feeds_due
        index): positions offset .. offset+limit of that order."""
        rows = self._read(
            "SELECT f.* FROM feeds f WHERE f.status = 'active' AND f.next_poll_at <= ?"
            " ORDER BY f.next_poll_at, f.id LIMIT ? OFFSET ?",
            (iso_ms(now), limit, offset),
        )
        return [feed_from_row(r) for r in rows]

    def next_due_at(self) -> datetime | None:
        rows = self._read("SELECT MIN(next_poll_at) FROM feeds WHERE status = 'active'")
        return from_iso(rows[0][0]) if rows else None

    def last_poll_at(self) -> datetime | None:
        """When any feed was last fetched (an empty output's updated time)."""
        rows = self._read("SELECT MAX(last_fetch_at) FROM feeds")
        return from_iso(rows[0][0]) if rows else None

    def feed_health(self, now: datetime) -> dict[str, int]:
        row = self._read(
            "SELECT SUM(CASE WHEN status = 'active' AND next_poll_at <= ? THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN status = 'active' AND error_count > 0 THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN status = 'active' THEN 1 ELSE 0 END), SUM(CASE WHEN status = 'gone' THEN 1 ELSE 0 END)"
            " FROM feeds",
            (iso_ms(now),),
        )[0]
        return {"due": row[0] or 0, "failing": row[1] or 0, "active": row[2] or 0, "gone": row[3] or 0}

    def tags(self) -> list[str]:
        """Tags of the feeds that are subscribed."""
        rows = self._read(
            "SELECT DISTINCT t.tag FROM feed_tags t JOIN feeds f ON f.id = t.feed_id"
            " WHERE f.status != 'unsubscribed' ORDER BY 1"
        )
        return [r[0] for r in rows]

    def feed_ids_with_tag(self, tag: str) -> set[str]:
        return {r[0] for r in self._read("SELECT feed_id FROM feed_tags WHERE tag = ?", (tag,))}
