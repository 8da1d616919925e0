"""Stories as people see and correct them: the newest stories with every
article in them (and why each joined), and the hand corrections, split and
join, which stick: an article's story is decided once, so no re-poll undoes them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aggregator.model import Article, FeedState, iso, utcnow
from aggregator.store.base import Conn, StoreError, article_from_row, chunks, marks
from aggregator.store.maintenance import MaintenanceMixin

# Rebuilds a story's profile (cluster.StoryProfile JSON) from its articles,
# first seen first; the store calls it inside the correcting transaction.
ProfileOf = Callable[[Sequence[Article]], str | None]


@dataclass(frozen=True)
class StoryMember:
    article: Article
    feed: FeedState


@dataclass(frozen=True)
class StoryView:
    id: str
    members: tuple[StoryMember, ...]  # first seen first


class StoriesMixin(MaintenanceMixin):
    def stories_overview(self, limit: int) -> list[StoryView]:
        """The newest stories (by their first article's story time) with all their articles, hidden ones too."""
        rows = self._read("SELECT id FROM stories ORDER BY published_at DESC, id DESC LIMIT ?", (limit,))
        return self._views([r[0] for r in rows])

    def story_of(self, article_id: str) -> StoryView | None:
        rows = self._read("SELECT story_id FROM articles WHERE id = ?", (article_id,))
        views = self._views([rows[0][0]]) if rows else []
        return views[0] if views else None

    def stories_by_id(self, story_ids: Sequence[str]) -> list[StoryView]:
        """These stories with all their articles (hidden ones too), in the order asked."""
        return self._views(story_ids)

    def _views(self, story_ids: Sequence[str]) -> list[StoryView]:
        members: dict[str, list[Article]] = {sid: [] for sid in story_ids}
        for part in chunks(list(story_ids)):
            for r in self._read(f"SELECT * FROM articles WHERE story_id IN ({marks(part)}) ORDER BY seq", part):
                members[r["story_id"]].append(article_from_row(r))
        feeds = self.feeds_by_id({a.feed_id for group in members.values() for a in group})
        return [
            StoryView(sid, tuple(StoryMember(a, feeds[a.feed_id]) for a in group if a.feed_id in feeds))
            for sid, group in members.items()
            if group
        ]

    # --- corrections -----------------------------------------------------------------------

    def split_article(self, article_id: str, profile_of: ProfileOf) -> str:
        """The article leaves its story and stands alone from now on. Returns
        its story's id: its own output id. The rest of the story keeps its
        id, unless the article was its first: then the next one's id."""
        with self._writing() as conn:
            article, group = self._group_of(conn, article_id)
            if len(group) == 1:
                raise StoreError(f"{article_id}: this article is already a story of its own")
            rest = [a for a in group if a.id != article.id]
            if article.story_id == article.id:  # it founded the story: the others move to a new one
                self._move(conn, rest, rest[0], profile_of)
                self._move(conn, [article], article, profile_of, fresh=False)
            else:
                self._move(conn, [article], article, profile_of)
                self._reprofile(conn, group[0].story_id or group[0].id, rest, profile_of)
            self._bump_content_version(conn)
        return article.id

    def join_articles(self, article_id: str, other_id: str, profile_of: ProfileOf) -> str:
        """The stories of two articles become one: the one whose first article
        was seen first keeps its id. Refused when it would hold two articles
        of one feed. Returns the story's id."""
        with self._writing() as conn:
            a, first_group = self._group_of(conn, article_id)
            b, second_group = self._group_of(conn, other_id)
            if a.story_id == b.story_id:
                raise StoreError(f"{article_id} and {other_id} are in one story already")
            keep, move = sorted((first_group, second_group), key=lambda g: g[0].rowid or 0)
            clash = {m.feed_id for m in keep} & {m.feed_id for m in move}
            if clash:
                raise StoreError(
                    "refused: the joined story would hold two articles of one feed "
                    f"({', '.join(sorted(clash))}); split one of them off first"
                )
            survivor = keep[0].story_id or keep[0].id
            self._assign(conn, move, survivor)
            self._reprofile(conn, survivor, sorted(keep + move, key=lambda x: x.rowid or 0), profile_of)
            conn.execute("DELETE FROM stories WHERE id = ?", (move[0].story_id,))
            self._bump_content_version(conn)
        return survivor

    def _group_of(self, conn: Conn, article_id: str) -> tuple[Article, list[Article]]:
        row = conn.execute("SELECT * FROM articles WHERE id = ?", (article_id,)).fetchone()
        if row is None:
            raise StoreError(f"{article_id}: no such article (see `aggregator articles --json` for ids)")
        article = article_from_row(row)
        group = [
            article_from_row(r)
            for r in conn.execute("SELECT * FROM articles WHERE story_id = ? ORDER BY seq", (article.story_id,))
        ]
        return article, group

    def _move(
        self, conn: Conn, members: list[Article], founder: Article, profile_of: ProfileOf, fresh: bool = True
    ) -> None:
        """Members become the story founded by ``founder`` (whose id it takes)."""
        story_id = founder.id
        if fresh:
            conn.execute("DELETE FROM stories WHERE id = ?", (story_id,))
            conn.execute(
                "INSERT INTO stories (id, founder_seq, published_at, first_seen_at, updated_at, language, profile,"
                " size) VALUES (?, ?, ?, ?, ?, ?, NULL, ?)",
                (
                    story_id, founder.rowid, iso(founder.published_at), iso(founder.first_seen_at), iso(utcnow()),
                    founder.language, len(members),
                ),
            )  # fmt: skip
        self._assign(conn, members, story_id)
        self._reprofile(conn, story_id, members, profile_of)

    @staticmethod
    def _assign(conn: Conn, members: list[Article], story_id: str) -> None:
        seqs = [m.rowid for m in members]
        for part in chunks(seqs):
            conn.execute(
                f"UPDATE articles SET story_id = ?, story_rule = 'manual', story_score = NULL, story_why = NULL"
                f" WHERE seq IN ({marks(part)})",
                (story_id, *part),
            )
            conn.execute(f"UPDATE story_index SET story_id = ? WHERE seq IN ({marks(part)})", (story_id, *part))

    @staticmethod
    def _reprofile(conn: Conn, story_id: str, members: Sequence[Article], profile_of: ProfileOf) -> None:
        conn.execute(
            "UPDATE stories SET profile = ?, size = ?, updated_at = ? WHERE id = ?",
            (profile_of(members), len(members), iso(utcnow()), story_id),
        )
