"""The newest stories of a scope (everything, a tag, a set of articles such
as a saved search's matches), one entry per story (DESIGN §7).

A story appears in a scope when one of its visible articles is in it; the
article that represents it there is its earliest-seen visible article in
the scope (in Latest, the story's first article, unless a filter hides it).
Stories are ordered by that article's story time (min(published, first
seen)), newest first, ties by arrival; at most ``per_source`` entries come
from one feed. The walk reads the articles index from the top and stops as
soon as no story further down could still make the list, so it costs the
same with 10 feeds or 10,000, 1,000 articles or 1,000,000.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from aggregator.model import AlsoReported, Story, from_iso
from aggregator.store.articles import ArticlesMixin
from aggregator.store.base import SMALL_SCOPE, article_from_row, chunks, marks, source_of

PAGE = 500
MAX_RELATED = 12  # other outlets listed per story: outputs stay bounded however big a story grows


@dataclass(frozen=True, order=True)
class _Key:
    """Where an article sorts: newest story time first, then latest arrival."""

    sort_at: str
    seq: int


@dataclass(frozen=True)
class _Member:
    seq: int
    feed_id: str
    sort_at: str
    story_id: str


InScope = Callable[[_Member], bool]
StoryKey = _Member  # where a story's entry sorts: its article's seq, feed, sort_at (UTC ISO 8601) and story


class LatestMixin(ArticlesMixin):
    def latest(
        self, limit: int, per_source: int, tag: str | None = None, seqs: Collection[int] | None = None
    ) -> list[Story]:
        """The newest ``limit`` stories: of everything, of one tag's feeds, or
        of the given articles (a saved search's matches)."""
        feeds = self.feed_ids_with_tag(tag) if tag is not None else None
        if seqs is not None:
            chosen = set(seqs)
            members = self._members_by_seq(sorted(chosen))
            picked = self._pick(members, lambda m: m.seq in chosen, limit, per_source)
        elif feeds is not None and len(feeds) <= SMALL_SCOPE:
            members = self._feed_tops(feeds, max(per_source * 3, 10))
            picked = self._pick(members, lambda m: m.feed_id in feeds, limit, per_source)
        else:
            picked = self._walk(feeds, limit, per_source)
        return self._stories(picked)

    def newest_of_feeds(self, feed_ids: Collection[str], per_feed: int) -> dict[str, list[Story]]:
        """Each feed's newest ``per_feed`` visible articles, each as an entry
        with the other outlets of its story: the feeds' own pages."""
        out: dict[str, list[Story]] = {fid: [] for fid in feed_ids}
        for story in self._stories(self._feed_tops(feed_ids, per_feed)):
            out[story.source.feed_id].append(story)
        return out

    def newest_keys(self, limit: int) -> list[StoryKey]:
        """Where the newest ``limit`` stories of everything are, newest first,
        with no per-source bound (the archive): from the index alone. Build
        them a few at a time with ``stories_at``, so that thousands of them
        are never all in memory at once."""
        return self._walk(None, limit, limit) if limit > 0 else []

    def stories_at(self, keys: Sequence[StoryKey]) -> list[Story]:
        """The stories at these keys (from ``newest_keys``), as ``latest`` builds them."""
        return self._stories(keys)

    # --- choosing --------------------------------------------------------------------

    def _walk(self, feeds: set[str] | None, limit: int, per_source: int) -> list[_Member]:
        """Read visible articles newest first, page by page, until the list is
        full and no story not yet met could rank above its last entry."""
        reps: dict[str, _Member] = {}
        in_scope: InScope = (lambda m: m.feed_id in feeds) if feeds is not None else (lambda m: True)
        after: _Key | None = None
        hint = self._hint("articles_latest")
        while True:
            where = "visible = 1"
            params: tuple[object, ...] = ()
            if after is not None:
                where += " AND (sort_at < ? OR (sort_at = ? AND seq < ?))"
                params = (after.sort_at, after.sort_at, after.seq)
            rows = self._read(
                f"SELECT seq, feed_id, sort_at, story_id FROM articles{hint} WHERE {where}"
                " ORDER BY sort_at DESC, seq DESC LIMIT ?",
                (*params, PAGE),
            )
            if not rows:
                break
            page = [_Member(r[0], r[1], r[2], r[3]) for r in rows]
            new = {m.story_id for m in page if in_scope(m) and m.story_id not in reps}
            reps.update(self._representatives(new, in_scope))
            after = _Key(page[-1].sort_at, page[-1].seq)
            picked = _select(reps.values(), limit, per_source)
            if len(picked) >= limit and _key(picked[-1]) >= after:
                return picked
            if len(rows) < PAGE:
                break
        return _select(reps.values(), limit, per_source)

    def _pick(self, members: Iterable[_Member], in_scope: InScope, limit: int, per_source: int) -> list[_Member]:
        story_ids = {m.story_id for m in members if in_scope(m)}
        return _select(self._representatives(story_ids, in_scope).values(), limit, per_source)

    def _representatives(self, story_ids: Collection[str], in_scope: InScope) -> dict[str, _Member]:
        """Each story's earliest-seen visible article in the scope."""
        reps: dict[str, _Member] = {}
        hint = self._hint("articles_story")
        for part in chunks(sorted(story_ids)):
            for r in self._read(
                f"SELECT seq, feed_id, sort_at, story_id FROM articles{hint}"
                f" WHERE story_id IN ({marks(part)}) AND visible = 1 ORDER BY seq",
                part,
            ):
                member = _Member(r[0], r[1], r[2], r[3])
                if member.story_id not in reps and in_scope(member):
                    reps[member.story_id] = member
        return reps

    def _feed_tops(self, feeds: Collection[str], per_feed: int) -> list[_Member]:
        """For a few feeds (a tag): each feed's newest visible articles, from
        its own index: never walks other feeds' articles."""
        hint = self._hint("articles_feed_latest")
        out: list[_Member] = []
        for fid in sorted(feeds):
            rows = self._read(
                f"SELECT seq, feed_id, sort_at, story_id FROM articles{hint}"
                " WHERE feed_id = ? AND visible = 1 ORDER BY sort_at DESC, seq DESC LIMIT ?",
                (fid, per_feed),
            )
            out.extend(_Member(r[0], r[1], r[2], r[3]) for r in rows)
        return out

    def _members_by_seq(self, seqs: Sequence[int]) -> list[_Member]:
        out: list[_Member] = []
        for part in chunks(seqs):
            rows = self._read(
                f"SELECT seq, feed_id, sort_at, story_id FROM articles WHERE seq IN ({marks(part)}) AND visible = 1",
                part,
            )
            out.extend(_Member(r[0], r[1], r[2], r[3]) for r in rows)
        return out

    # --- building the entries -----------------------------------------------------------

    def _stories(self, picked: Sequence[_Member]) -> list[Story]:
        """The chosen representatives with their source and the other outlets."""
        if not picked:
            return []
        seqs = [m.seq for m in picked]
        rows = {r["seq"]: r for part in chunks(seqs) for r in self._read(
            f"SELECT * FROM articles WHERE seq IN ({marks(part)})", part)}  # fmt: skip
        others: dict[str, list[tuple[int, str, str | None, str, str]]] = {}
        sizes: dict[str, int] = {}
        story_ids = [m.story_id for m in picked]
        for part in chunks(story_ids):
            for r in self._read(
                "SELECT seq, story_id, feed_id, url, title, visible, first_seen_at"
                f" FROM articles{self._hint('articles_story')}"
                f" WHERE story_id IN ({marks(part)}) ORDER BY seq",
                part,
            ):
                sizes[r[1]] = sizes.get(r[1], 0) + 1
                if r[5]:  # the entry's own article is left out below, with its feed
                    others.setdefault(r[1], []).append((r[0], r[2], r[3], r[4], r[6]))
        feed_ids = {r["feed_id"] for r in rows.values()} | {o[1] for group in others.values() for o in group}
        feeds = self.feeds_by_id(feed_ids)
        stories = []
        for member in picked:
            row = rows.get(member.seq)
            feed = feeds.get(member.feed_id)
            if row is None or feed is None:
                continue
            also: list[AlsoReported] = []
            joined: str | None = None
            for _seq, other_feed, url, title, first_seen in others.get(member.story_id, []):
                source = feeds.get(other_feed)
                # One line per other outlet, and never the story's own feed again.
                if source is None or other_feed == member.feed_id or any(a.source.feed_id == other_feed for a in also):
                    continue
                also.append(AlsoReported(source_of(source), url, title))
                joined = max(joined or first_seen, first_seen)
                if len(also) >= MAX_RELATED:
                    break
            stories.append(
                Story(
                    article=article_from_row(row),
                    source=source_of(feed),
                    also=also,
                    story_id=member.story_id,
                    size=sizes.get(member.story_id, 1),
                    joined_at=from_iso(joined),
                )
            )
        return stories


def _key(member: _Member) -> _Key:
    return _Key(member.sort_at, member.seq)


def _select(reps: Iterable[_Member], limit: int, per_source: int) -> list[_Member]:
    """Newest first, at most per_source from one feed, at most limit."""
    picked: list[_Member] = []
    per_feed: dict[str, int] = {}
    for member in sorted(reps, key=_key, reverse=True):
        if per_feed.get(member.feed_id, 0) >= per_source:
            continue
        per_feed[member.feed_id] = per_feed.get(member.feed_id, 0) + 1
        picked.append(member)
        if len(picked) >= limit:
            break
    return picked
