"""Searches and filters over stored articles: the articles a query matches
(saved searches, `aggregator search`, the search box), and re-deciding which
stored articles the current filters hide (`aggregator filters apply`)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence

from aggregator.model import Article, FeedState
from aggregator.query import Query
from aggregator.store.base import article_from_row, chunks, marks
from aggregator.store.stories import StoriesMixin

MAX_MATCHES = 5000  # newest matching articles a search looks at

Decide = Callable[[Article, FeedState], str | None]


class SearchMixin(StoriesMixin):
    @abstractmethod
    def _text_matches(self, query: Query, limit: int) -> list[int]:
        """Article seqs whose title or plain text match the query's words, newest first (the engine's index)."""

    def search_seqs(self, query: Query, limit: int = MAX_MATCHES) -> list[int]:
        """Visible articles a query matches, newest first: its words through the
        full-text index, its source: and tag: through the feeds."""
        feeds = self._feeds_for(query)
        if query.has_text:
            seqs = self._visible(self._text_matches(query, limit if feeds is None else MAX_MATCHES * 4))
            if feeds is not None:
                in_feeds = self._seqs_of_feeds(feeds, seqs)
                seqs = [s for s in seqs if s in in_feeds]
            return seqs[:limit]
        if feeds is None:
            return []
        rows = []
        for part in chunks(sorted(feeds)):
            rows += self._read(
                f"SELECT seq, sort_at FROM articles{self._hint('articles_feed_latest')}"
                f" WHERE feed_id IN ({marks(part)}) AND visible = 1 ORDER BY sort_at DESC, seq DESC LIMIT ?",
                (*part, limit),
            )
        newest = sorted(((r[1], r[0]) for r in rows), reverse=True)[:limit]
        seqs = [seq for _, seq in newest]
        if query.excluded:
            unwanted = set(self._text_matches(Query(groups=tuple((t,) for t in query.excluded)), MAX_MATCHES))
            seqs = [s for s in seqs if s not in unwanted]
        return seqs

    def search(self, text: str, limit: int = 20) -> list[Article]:
        """Articles matching a query in the search language (aggregator/query.py), newest first."""
        from aggregator.query import parse

        return [a for a, _ in self.articles_by_seq(self.search_seqs(parse(text), limit))]

    def _feeds_for(self, query: Query) -> set[str] | None:
        """Feeds a query's source: and tag: allow (None: any feed)."""
        if not query.sources and not query.tags:
            return None
        allowed: set[str] | None = None
        for tag in query.tags:
            tagged = self.feed_ids_with_tag(tag)
            allowed = tagged if allowed is None else allowed & tagged
        if query.sources:
            named = {
                f.id
                for f in self.feeds()
                if any(s in (f.display_title or "").lower() or s in f.url.lower() for s in query.sources)
            }
            allowed = named if allowed is None else allowed & named
        return allowed or set()

    def _visible(self, seqs: Sequence[int]) -> list[int]:
        shown: set[int] = set()
        for part in chunks(list(seqs)):
            shown.update(
                r[0] for r in self._read(f"SELECT seq FROM articles WHERE seq IN ({marks(part)}) AND visible = 1", part)
            )
        return [s for s in seqs if s in shown]

    def _seqs_of_feeds(self, feeds: set[str], seqs: Sequence[int]) -> set[int]:
        out: set[int] = set()
        for part in chunks(list(seqs)):
            out.update(
                r[0]
                for r in self._read(f"SELECT seq, feed_id FROM articles WHERE seq IN ({marks(part)})", part)
                if r[1] in feeds
            )
        return out

    def articles_by_seq(self, seqs: Sequence[int]) -> list[tuple[Article, FeedState]]:
        rows = []
        for part in chunks(list(seqs)):
            rows += self._read(f"SELECT * FROM articles WHERE seq IN ({marks(part)})", part)
        by_seq = {r["seq"]: r for r in rows}
        feeds = self.feeds_by_id({r["feed_id"] for r in rows})
        return [
            (article_from_row(by_seq[s]), feeds[by_seq[s]["feed_id"]])
            for s in seqs
            if s in by_seq and by_seq[s]["feed_id"] in feeds
        ]

    def each_article(self, batch: int = 500) -> Iterator[list[tuple[Article, FeedState]]]:
        """Every stored article with its feed, a batch at a time, oldest first (memory stays flat)."""
        after = 0
        feeds = {f.id: f for f in self.feeds()}
        while True:
            rows = self._read("SELECT * FROM articles WHERE seq > ? ORDER BY seq LIMIT ?", (after, batch))
            if not rows:
                return
            after = rows[-1]["seq"]
            yield [(article_from_row(r), feeds[r["feed_id"]]) for r in rows if r["feed_id"] in feeds]

    def refilter(self, decide: Decide, progress: Callable[[int], None] | None = None, batch: int = 500) -> int:
        """Decide again, for every stored article, which filter rule hides it
        (None: none). Ids never change; which stories show may. Returns how
        many articles changed."""
        changed = done = 0
        for rows in self.each_article(batch):
            updates = []
            for article, feed in rows:
                verdict = decide(article, feed)
                if verdict != article.hidden_by:
                    updates.append((verdict, verdict, article.rowid))
            if updates:
                with self._writing() as conn:
                    conn.executemany(
                        "UPDATE articles SET hidden_by = ?,"
                        " visible = CASE WHEN CAST(? AS TEXT) IS NULL AND held IS NULL THEN 1 ELSE 0 END WHERE seq = ?",
                        updates,
                    )
                    self._bump_content_version(conn)
                changed += len(updates)
            done += len(rows)
            if progress is not None:
                progress(done)
        return changed
