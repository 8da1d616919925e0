"""Feeds: what feeds/ lists (synced in), how polling went (written after
every poll), and the reads the scheduler and the pages need."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aggregator.model import FeedPollUpdate, FeedState, FeedStatus, Subscription, from_iso, iso, iso_ms
from aggregator.store.base import Conn, StoreBase, SyncResult, chunks, dumps, feed_from_row, marks

_FEED_SELECT = "SELECT f.* FROM feeds f"
# Everything a subscription file decides about a feed, as stored.
_SUB_COLUMNS = "configured_title, tags, interval, status, source_file, cluster, full_text, backfill"


class LeaseLost(Exception):
    """Another poller holds this feed now (our lease expired): the poll's results are not written."""


def host_of(url: str) -> str:
    """The server a feed's Retry-After applies to (and claims count feeds by):
    its host name, with the port when there is one (two ports, two servers)."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return ""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


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
        return self._sync(subs, now, keep_files, self._listed_elsewhere(subs, now))

    def _listed_elsewhere(self, subs: Sequence[Subscription], now: datetime) -> set[str]:
        """Feeds another live poller's feeds/ lists (so they are not unsubscribed here); none for one machine."""
        return set()

    def _sync(
        self, subs: Sequence[Subscription], now: datetime, keep_files: Collection[str], elsewhere: set[str]
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
                and fid not in elsewhere
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
            f"INSERT INTO feeds (id, url, host, configured_url, next_poll_at, added_at, {_SUB_COLUMNS})"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (
                sub.feed_id, sub.url, host_of(sub.url), sub.url, iso_ms(now), iso(now), sub.title,
                dumps(list(sub.tags)), sub.interval,
                _wanted_status(sub, FeedStatus.ACTIVE.value), sub.source_file, int(sub.cluster), int(sub.full_text),
                sub.backfill,
            ),
        )  # fmt: skip
        conn.executemany(
            "INSERT INTO feed_tags (feed_id, tag) VALUES (?, ?) ON CONFLICT (feed_id, tag) DO NOTHING",
            [(sub.feed_id, t) for t in sub.tags],
        )

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
                "UPDATE feeds SET url = ?, host = ?, configured_url = ?, redirect_url = NULL, redirect_seen = 0,"
                " next_poll_at = ?, etag = NULL, last_modified = NULL, body_hash = NULL WHERE id = ?",
                (sub.url, host_of(sub.url), sub.url, iso_ms(now), sub.feed_id),
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

    def write_poll(self, conn: Conn, feed_id: str, update: FeedPollUpdate, node: str | None = None) -> None:
        """The feed's state after a poll (inside that poll's transaction),
        which also ends this poller's lease on it. Raises LeaseLost, so the
        whole poll is rolled back, when another poller holds the feed now."""
        u = update
        cur = conn.execute(
            "UPDATE feeds SET last_fetch_at = ?, last_status = ?, last_outcome = ?, error_count = ?, last_error = ?,"
            " etag = ?, last_modified = ?, body_hash = ?, next_poll_at = ?, retry_after = ?, url = COALESCE(?, url),"
            " redirect_url = ?, redirect_seen = ?, status = COALESCE(?, status), title = ?, site_url = ?,"
            " self_url = ?, language = ?, updated_at = ?, ttl = ?, publish_interval = ?, last_parsed_at = ?,"
            " last_new_at = ?, host = COALESCE(?, host), last_counts = COALESCE(?, last_counts),"
            " parse_path = COALESCE(?, parse_path),"
            " lease_owner = NULL, lease_until = NULL"
            " WHERE id = ? AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)",
            (
                iso(u.last_fetch_at), u.last_status, u.last_outcome, u.error_count, u.last_error, u.etag,
                u.last_modified, u.body_hash, iso_ms(u.next_poll_at), iso_ms(u.retry_after), u.url, u.redirect_url,
                u.redirect_seen, u.status.value if u.status else None, u.title, u.site_url, u.self_url, u.language,
                iso(u.updated_at), u.ttl, u.publish_interval, iso(u.last_parsed_at), iso(u.last_new_at),
                host_of(u.url) if u.url else None, u.last_counts, u.parse_path, feed_id, node, iso_ms(u.last_fetch_at),
            ),
        )  # fmt: skip
        if cur.rowcount == 0 and conn.execute("SELECT 1 FROM feeds WHERE id = ?", (feed_id,)).fetchone():
            raise LeaseLost(f"feed {feed_id} is held by another poller")
        if u.host_wait_until is not None:
            row = conn.execute("SELECT host FROM feeds WHERE id = ?", (feed_id,)).fetchone()
            if row and row[0]:
                # The server asked us to slow down: every feed of it waits, on every poller.
                conn.execute(
                    "INSERT INTO host_backoff (host, until) VALUES (?, ?)"
                    " ON CONFLICT (host) DO UPDATE SET until = excluded.until",
                    (row[0], iso_ms(u.host_wait_until)),
                )
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

    # --- claims: which poller polls what ---------------------------------------------

    def claim_due(
        self, node: str, now: datetime, limit: int, lease: float, skip_hosts: Collection[str] = ()
    ) -> list[FeedState]:
        """Take up to ``limit`` due feeds that no poller holds, oldest first,
        none of a host in Retry-After backoff or in ``skip_hosts`` (at its
        limit here): each is this node's until ``lease`` seconds from now
        (renewed while its poll runs, released by write_poll). Two pollers
        never get one feed."""
        skip = sorted(skip_hosts)[:500]
        not_hosts = f" AND f.host NOT IN ({marks(skip)})" if skip else ""
        stamp = iso_ms(now)
        with self._writing() as conn:
            rows = conn.execute(
                "UPDATE feeds SET lease_owner = ?, lease_until = ? WHERE id IN ("
                f" SELECT f.id FROM feeds f{self._hint('feeds_due')} WHERE f.status = 'active' AND f.next_poll_at <= ?"
                " AND (f.lease_until IS NULL OR f.lease_until < ?)"
                f"{not_hosts} AND NOT EXISTS (SELECT 1 FROM host_backoff b WHERE b.host = f.host AND b.until > ?)"
                f" ORDER BY f.next_poll_at, f.id LIMIT ?{self._skip_locked()}) RETURNING *",
                (node, iso_ms(now + timedelta(seconds=lease)), stamp, stamp, *skip, stamp, limit),
            ).fetchall()
        feeds = [feed_from_row(r) for r in rows]
        return sorted(feeds, key=lambda f: (f.next_poll_at or now, f.id))

    def claim(self, node: str, feed_ids: Collection[str], now: datetime, lease: float) -> list[FeedState]:
        """Take these feeds (due or not) unless another poller holds them: `aggregator poll`."""
        taken: list[FeedState] = []
        stamp = iso_ms(now)
        with self._writing() as conn:
            for part in chunks(sorted(feed_ids)):
                rows = conn.execute(
                    "UPDATE feeds SET lease_owner = ?, lease_until = ? WHERE id IN ("
                    f" SELECT id FROM feeds WHERE id IN ({marks(part)}) AND (lease_until IS NULL OR lease_until < ?"
                    f" OR lease_owner = ?){self._skip_locked()}) RETURNING *",
                    (node, iso_ms(now + timedelta(seconds=lease)), *part, stamp, node),
                ).fetchall()
                taken += [feed_from_row(r) for r in rows]
        return taken

    def renew_leases(self, node: str, feed_ids: Collection[str], until: datetime) -> None:
        """Polls still running: keep their feeds (a slow poll must not be taken over)."""
        if not feed_ids:
            return
        with self._writing() as conn:
            for part in chunks(sorted(feed_ids)):
                conn.execute(
                    f"UPDATE feeds SET lease_until = ? WHERE lease_owner = ? AND id IN ({marks(part)})",
                    (iso_ms(until), node, *part),
                )

    def release_leases(self, node: str, feed_ids: Collection[str] | None = None) -> None:
        """Give feeds back without polling them (shutdown, or a poll abandoned)."""
        with self._writing() as conn:
            if feed_ids is None:
                conn.execute("UPDATE feeds SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (node,))
                return
            for part in chunks(sorted(feed_ids)):
                conn.execute(
                    "UPDATE feeds SET lease_owner = NULL, lease_until = NULL"
                    f" WHERE lease_owner = ? AND id IN ({marks(part)})",
                    (node, *part),
                )

    def release_orphaned_leases(self) -> int:
        """Leases of pollers on this machine that are dead (killed, or a power
        cut): given back now rather than when they expire, so a restarted
        service polls at once. Pollers on other machines keep theirs until
        expiry (we cannot ask their kernel). Returns how many feeds came back."""
        here = socket.gethostname()
        dead: list[str] = []
        for row in self._read("SELECT DISTINCT lease_owner FROM feeds WHERE lease_owner IS NOT NULL"):
            owner = str(row[0])
            host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if host == here and pid.isdigit() and not _process_alive(int(pid)):
                dead.append(owner)
        released = 0
        with self._writing() as conn:
            for holder in dead:
                rows = conn.execute(
                    "UPDATE feeds SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? RETURNING id",
                    (holder,),
                ).fetchall()
                released += len(rows)
        return released

    def _skip_locked(self) -> str:
        """Row locks for claims, where the engine has them (PostgreSQL: FOR UPDATE SKIP LOCKED)."""
        return ""

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
