"""Publishing: the store's stories rendered into every output (DESIGN §7).

``Publisher.build`` renders a ``Snapshot``: every document's bytes with its
content type, strong ETag and Last-Modified, keyed by URL path. Nothing in a
document depends on the clock or on ordering SQLite does not guarantee, so
an unchanged database renders byte-identical documents. The web layer
serves a snapshot from memory; ``write_static`` mirrors it to a directory.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from aggregator.config import Config, SearchSettings
from aggregator.filters import hidden_by, subject_of
from aggregator.model import Article, FeedState, FeedStatus, Story, Subscription, from_iso, iso
from aggregator.publish.atom import render_atom
from aggregator.publish.common import FeedMeta, fit, newest_update, plain_text
from aggregator.publish.html import (
    ARCHIVE_PAGE,
    ArchivePage,
    Links,
    Site,
    render_archive_index,
    render_archive_page,
    render_index,
    render_source,
    render_sources,
    render_story,
    reports_of,
    source_path,
    story_path,
)
from aggregator.publish.jsonfeed import render_json
from aggregator.publish.opml import render_opml
from aggregator.publish.rss import render_rss
from aggregator.store import Store
from aggregator.store.latest import StoryKey

log = logging.getLogger(__name__)

ATOM = "application/atom+xml; charset=utf-8"
RSS = "application/rss+xml; charset=utf-8"
JSON = "application/feed+json; charset=utf-8"
HTML = "text/html; charset=utf-8"
OPML = "text/x-opml; charset=utf-8"

FORMATS: dict[str, tuple[str, Callable[[list[Story], FeedMeta], bytes]]] = {
    ".atom": (ATOM, render_atom),
    ".rss": (RSS, render_rss),
    ".json": (JSON, render_json),
}


class Document:
    """One rendered output. The gzip form is made once, on first request."""

    __slots__ = ("_gzipped", "_lock", "body", "content_type", "etag", "last_modified", "path")

    def __init__(self, path: str, body: bytes, content_type: str, last_modified: datetime | None):
        self.path = path
        self.body = body
        self.content_type = content_type
        # Strong, from the bytes; the same for the gzip form, which is a
        # transfer of the same representation (DESIGN §7).
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self.last_modified = last_modified
        self._gzipped: bytes | None = None
        self._lock = threading.Lock()

    def gzipped(self) -> bytes:
        if self._gzipped is None:
            with self._lock:
                if self._gzipped is None:
                    self._gzipped = gzip.compress(self.body, compresslevel=6, mtime=0)
        return self._gzipped


@dataclass
class Snapshot:
    documents: dict[str, Document] = field(default_factory=dict)
    content_version: int = -1
    status_version: int = -1

    def get(self, path: str) -> Document | None:
        return self.documents.get(path)


SEARCH_SECONDS = 2.0  # the database time one search box request may take
SEARCH_RESULTS = 30
SOURCE_PATHS = ("feeds", "opml")  # the documents about feeds rather than stories
# URL path (no leading slash) -> static file, for paths that are not file names.
STATIC_NAMES = {
    "": "index.html",
    "feeds": "feeds/index.html",
    "opml": "subscriptions.opml",
    "archive": "archive/index.html",
}
# Folders of pages that come and go with tags, searches, sources, stories and days.
PAGE_DIRS = ("tags", "search", "sources", "stories", "archive")

# The pages that can be many are bounded, so that a rebuild after every change
# stays cheap and the snapshot (held in memory) small, at 10,000 feeds too:
# - a page per story reported by more than one outlet (a story of one report
#   is all on its entry) among the stories on the Latest, tag and saved-search
#   pages (at most output.entries x (1 + tags + searches)), up to MAX_STORY_PAGES;
# - a page per source for up to MAX_SOURCE_PAGES sources (all of them below that;
#   above it, those that brought new articles most recently), SOURCE_STORIES each;
# - the archive: whole days of stories, newest first, up to ARCHIVE_STORIES.
# Source and archive pages follow every change while bringing them up to date
# takes less than this (CPU seconds of the publishing thread, so that a busy
# machine does not change the choice); past it, at most every sources_every.
# At 1,000 feeds they take ~0.15 s: after every publish, that was a quarter of
# the service's CPU (bench/RESULTS.md, the daemon bench).
CHEAP_PAGES = 0.1
MAX_STORY_PAGES = 2000
MAX_SOURCE_PAGES = 500
SOURCE_STORIES = 10
SOURCE_BATCH = 50  # feeds whose pages are read at once
STORY_BATCH = 100  # stories whose pages are read at once
ARCHIVE_STORIES = 2000


class Publisher:
    def __init__(self, store: Store, config: Config):
        self.store = store
        self.config = config
        output = config.settings.output
        self.base_url = config.settings.http.public_base_url
        self.entries = output.entries
        self.per_source = output.per_source
        self.latest_meta = FeedMeta(
            title=output.title, subtitle=output.subtitle, id=config.feed_id_uri, base_url=self.base_url, path="latest"
        )
        self.site = Site(title=output.title, base_url=self.base_url)
        self._links = Links()  # the sources and stories that have pages, as of the last build
        # URL path -> (fingerprint of what the page shows, its document): a page
        # whose content did not change is not rendered again. Pages no longer
        # made drop out at the next build.
        self._pages: dict[str, tuple[str, Document]] = {}
        self._feeds: list[FeedState] | None = None
        # path -> (fingerprint of the stories shown, rendered documents): a
        # scope whose stories did not change is not rendered again.
        self._rendered: dict[str, tuple[str, dict[str, Document]]] = {}
        self.sources_built = float("-inf")
        self.pages_built = float("-inf")  # when the source and archive pages were last brought up to date
        self.pages_cost = 0.0  # the CPU time that took (seconds)
        self._pages_behind = False  # stories changed since
        self._in_archive: dict[str, str] = {}  # story id -> its archive page, as of then
        self._empty = False  # Latest has no stories: the home page shows feed states
        self._searches = threading.BoundedSemaphore(2)  # search box requests at once

    def tag_meta(self, tag: str) -> FeedMeta:
        latest = self.latest_meta
        return FeedMeta(
            title=f"{latest.title}: {tag}",
            subtitle=f"{latest.subtitle} Tag: {tag}.",
            id=f"{latest.id}/tags/{tag}",
            base_url=self.base_url,
            path=f"tags/{tag}",
        )

    def build(self, previous: Snapshot | None = None, sources_every: float = 0.0) -> Snapshot:
        """Render everything whose inputs changed since ``previous``.

        Feed states change on every poll; ``sources_every`` > 0 rebuilds the
        sources page and OPML on such changes at most that often (seconds),
        so a service with thousands of feeds does not re-render them all
        after every poll. Story changes are rendered at once in the feeds,
        the home, tag, saved-search and story pages; the source and archive
        pages follow at once too while they are cheap (under CHEAP_PAGES
        seconds); when they are not (thousands of feeds), at the first build
        ``sources_every`` seconds after the last time they were brought up
        to date."""
        content_version = self.store.content_version()
        status_version = self.store.status_version()
        self._feeds = None  # read once per build, when needed (10,000 feeds take ~0.5 s)
        documents: dict[str, Document] = {}
        same_content = previous is not None and previous.content_version == content_version
        pages_due = (
            previous is None or self.pages_cost < CHEAP_PAGES or time.monotonic() - self.pages_built >= sources_every
        )
        sources_before = self._links.sources
        if previous is not None and same_content and not (self._pages_behind and pages_due):
            documents.update({p: d for p, d in previous.documents.items() if p not in SOURCE_PATHS})
        else:
            documents.update(self._render_stories(pages_due))
            if self._links.sources != sources_before:
                previous = None  # the sources table links the source pages: it follows them
        recent = time.monotonic() - self.sources_built < sources_every
        if previous is not None and same_content and (previous.status_version == status_version or recent):
            documents.update({p: previous.documents[p] for p in SOURCE_PATHS})
            status_version = previous.status_version
        else:
            documents.update(self._render_sources())
            if self._empty and same_content:
                documents.update(self._render_stories())  # the home page says why it is empty: feed states moved
            self.sources_built = time.monotonic()
        self._feeds = None  # not kept between builds: 10,000 feed states weigh ~20 MB
        return Snapshot(documents, content_version, status_version)

    def search_meta(self, search: SearchSettings) -> FeedMeta:
        latest = self.latest_meta
        return FeedMeta(
            title=search.title or f"{latest.title}: {search.name}",
            subtitle=f"Stories matching: {search.query.text}",
            id=f"{latest.id}/search/{search.name}",
            base_url=self.base_url,
            path=f"search/{search.name}",
        )

    def _render_stories(self, pages_due: bool = True) -> dict[str, Document]:
        """Every scope's stories in every format: Latest (whose HTML page is
        the home page), each tag, each saved search; and the reading pages:
        a page per story, and (when ``pages_due``, else as they were) a page
        per source and per archive day."""
        documents: dict[str, Document] = {}
        pages: dict[str, tuple[str, Document]] = {}
        tags = self.store.tags()
        last_poll = self.store.last_poll_at()
        feeds = self._source_feeds() if pages_due else []
        sources = frozenset(f.id for f in feeds) if pages_due else self._links.sources
        # Source and archive pages link no story pages: those exist only while
        # a story is in a feed, and these pages must not change when it leaves.
        plain = Links(sources=sources)
        self._pages_behind = not pages_due
        if pages_due:
            started = time.thread_time()
            self._in_archive = self._render_archive(pages, documents, plain)
            self._render_source_pages(pages, documents, feeds, plain)
            self.pages_built = time.monotonic()
            self.pages_cost = time.thread_time() - started
        else:
            for path, (fingerprint, document) in self._pages.items():
                if path.startswith(("sources/", "archive")):
                    pages[path] = (fingerprint, document)
                    documents[path] = document

        # One scope at a time (Latest, then each tag, then each saved search),
        # so that only one scope's stories are in memory at once. A story of
        # several outlets gets a page when first met, while there is room.
        scopes: list[tuple[FeedMeta, str | None, SearchSettings | None]] = [(self.latest_meta, None, None)]
        scopes += [(self.tag_meta(tag), tag, None) for tag in tags]
        scopes += [(self.search_meta(search), None, search) for search in self.config.settings.searches]
        story_ids: dict[str, None] = {}
        for n, (scope_meta, tag, search) in enumerate(scopes):
            seqs = self._matches(search) if search is not None else None
            stories = fit(self.store.latest(self.entries, self.per_source, tag=tag, seqs=seqs))
            # The last poll is an empty feed's updated time, and nothing else's: in the
            # fingerprint of a scope with stories it would render it again after every poll.
            meta = replace(scope_meta, empty_updated=None if stories else last_poll)
            if n == 0:
                self._empty = not stories
            for story in stories:
                if story.also and len(story_ids) < MAX_STORY_PAGES:
                    story_ids.setdefault(story.story_id)
            links = Links(sources=sources, stories=frozenset(story_ids))
            documents.update(self._feed_documents(stories, meta))
            path = "" if n == 0 else meta.path + ".html"
            note = self._why_empty() if n == 0 and not stories else ""
            # The home page goes on in the archive, at the page of its last story.
            older = self._in_archive.get(stories[-1].story_id) if n == 0 and stories else None
            page_fp = f"{_fingerprint(stories, meta)}{_links_of(stories, links)}|{','.join(tags)}|{note}|{older}"
            render = partial(render_index, stories, meta, self.site, tags, links, note, older=older)
            self._page(pages, documents, path, page_fp, stories, render)
        links = Links(sources=sources, stories=frozenset(story_ids))
        self._links = links

        chosen = list(story_ids)
        for start in range(0, len(chosen), STORY_BATCH):  # a batch at a time: the peak of memory stays low
            for view in self.store.stories_by_id(chosen[start : start + STORY_BATCH]):
                reports = reports_of([(m.article, m.feed) for m in view.members])
                if not reports:
                    continue
                fp = repr([(r.feed_id, r.source, _article_key(r.article)) for r in reports])
                fp += _links_of_feeds([r.feed_id for r in reports], links)
                updated = max(
                    r.article.updated_at or r.article.published_at or r.article.first_seen_at for r in reports
                )
                render = partial(render_story, reports, self.site, links)
                self._page(pages, documents, story_path(view.id), fp, [], render, updated)

        self._pages = pages
        return documents

    def _page(
        self,
        pages: dict[str, tuple[str, Document]],
        documents: dict[str, Document],
        path: str,
        fingerprint: str,
        stories: Sequence[Story],
        render: Callable[[], bytes],
        updated: datetime | None = None,
    ) -> None:
        """One HTML page, rendered only when its fingerprint changed."""
        fingerprint = hashlib.sha256(fingerprint.encode("utf-8", "surrogatepass")).hexdigest()
        cached = self._pages.get(path)
        if cached is not None and cached[0] == fingerprint:
            document = cached[1]
        else:
            when = updated if updated is not None else (newest_update(stories) if stories else None)
            document = Document(path, render(), HTML, when)
        pages[path] = (fingerprint, document)
        documents[path] = document

    def _render_source_pages(
        self, pages: dict[str, tuple[str, Document]], documents: dict[str, Document], feeds: list[FeedState],
        links: Links,
    ) -> None:  # fmt: skip
        for start in range(0, len(feeds), SOURCE_BATCH):  # a batch at a time: the peak of memory stays low
            batch = feeds[start : start + SOURCE_BATCH]
            by_feed = self.store.newest_of_feeds([f.id for f in batch], SOURCE_STORIES)
            for feed in batch:
                stories = by_feed.get(feed.id, [])  # each entry is bounded as it is rendered
                fp = _fingerprint(stories, self.latest_meta) + _links_of(stories, links) + repr(_feed_key(feed))
                self._page(pages, documents, source_path(feed.id), fp, stories,
                           partial(render_source, feed, stories, self.site, links))  # fmt: skip

    def _all_feeds(self) -> list[FeedState]:
        if self._feeds is None:
            self._feeds = self.store.feeds()
        return self._feeds

    def _source_feeds(self) -> list[FeedState]:
        """The feeds that get a page of their own: every subscribed feed, or
        above MAX_SOURCE_PAGES those that brought new articles most recently."""
        feeds = [f for f in self._all_feeds() if f.status is not FeedStatus.UNSUBSCRIBED]
        if len(feeds) > MAX_SOURCE_PAGES:
            feeds.sort(key=lambda f: (f.last_new_at is not None, f.last_new_at or EPOCH_KEY, f.id), reverse=True)
            feeds = feeds[:MAX_SOURCE_PAGES]
        return sorted(feeds, key=lambda f: f.id)

    def _render_archive(
        self, pages: dict[str, tuple[str, Document]], documents: dict[str, Document], links: Links
    ) -> dict[str, str]:
        """Older stories by day of their story time (UTC): whole days, newest
        first, each in pages of ARCHIVE_PAGE counted from the day's newest
        story. A finished day's pages keep their URLs and bytes unless one of
        their stories changes (an edit, a hidden article, a late report).
        Returns the page of each story in the archive (story id -> path)."""
        keys = self.store.newest_keys(ARCHIVE_STORIES)  # from the index; the stories are read a page at a time
        days: dict[str, list[StoryKey]] = {}
        for key in keys:
            days.setdefault(key.sort_at[:10], []).append(key)  # sort_at: UTC ISO 8601, min(published, first seen)
        order = sorted(days, reverse=True)
        cut = len(keys) >= ARCHIVE_STORIES and len(order) > 1
        if cut:  # the oldest day may be cut short by the bound: only whole days
            order = order[:-1]
        parts: list[tuple[str, int, int, list[StoryKey]]] = []
        for day in order:
            chunks = [days[day][i : i + ARCHIVE_PAGE] for i in range(0, len(days[day]), ARCHIVE_PAGE)]
            parts.extend((day, n + 1, len(chunks), chunk) for n, chunk in enumerate(chunks))
        paths = [ArchivePage(d, p, ps, None, None).path for d, p, ps, _ in parts]
        updated: datetime | None = None
        for i, (day, part, count, chunk) in enumerate(parts):
            page = ArchivePage(
                day, part, count, paths[i - 1] if i else None, paths[i + 1] if i + 1 < len(parts) else None
            )
            stories = self.store.stories_at(chunk)  # each entry is bounded as it is rendered
            fp = _fingerprint(stories, self.latest_meta) + _links_of(stories, links) + repr(page)
            self._page(
                pages, documents, page.path, fp, stories, partial(render_archive_page, page, stories, self.site, links)
            )
            if stories:
                updated = max(updated or EPOCH_KEY, newest_update(stories))
        listing = [(d, len(days[d]), -(-len(days[d]) // ARCHIVE_PAGE)) for d in order]
        note = "Stories by the day (UTC) of their first report, newest first." + (
            f" The archive keeps the newest {ARCHIVE_STORIES:,} stories, in whole days." if cut else ""
        )
        render = partial(render_archive_index, listing, self.site, note)
        self._page(pages, documents, "archive", repr(listing) + note, [], render, updated)
        return {key.story_id: path for path, (*_, chunk) in zip(paths, parts, strict=True) for key in chunk}

    def search_page(self, text: str) -> tuple[int, bytes]:
        """The search box's answer: an HTML page of the stories matching ``text``
        (status 400 with the reason for a query that cannot be read, 503 when
        too many searches run at once). Bounded: the query's length, the
        number of stories, and the time the database may spend."""
        from aggregator.query import QueryError, parse

        meta = replace(self.latest_meta, title=f"{self.latest_meta.title}: search", path="search")
        tags = self.store.tags()

        def page(stories: list[Story], note: str, query: str | None, subtitle: str | None = None) -> bytes:
            shown = replace(meta, subtitle=subtitle) if subtitle else meta
            links = Links(sources=self._links.sources)
            return render_index(stories, shown, self.site, tags, links, note, query, feeds=False)

        if not text.strip():
            return 200, page([], "Type words to search for.", "")
        if not self._searches.acquire(blocking=False):
            return 503, page([], "Too many searches at once; try again in a moment.", text)
        try:
            query = parse(text)
            with self.store.time_limit(SEARCH_SECONDS):
                stories = fit(
                    self.store.latest(SEARCH_RESULTS, SEARCH_RESULTS, seqs=self.store.search_seqs(query, 300))
                )
        except QueryError as exc:
            return 400, page([], f"Cannot search for that: {exc}.", text)
        except TimeoutError:
            return 503, page([], "The search took too long; try fewer or rarer words.", text)
        finally:
            self._searches.release()
        note = "" if stories else "No stored story matches."
        return 200, page(stories, note, text, f"Stories matching: {text}")

    def _matches(self, search: SearchSettings) -> list[int]:
        """The newest articles a saved search shows: its query, its tags, its own filters."""
        seqs = self.store.search_seqs(search.query, limit=self.entries * 5)
        if search.tags:
            feeds = set().union(*(self.store.feed_ids_with_tag(t) for t in search.tags))
            seqs = [
                seq for seq, (a, _) in zip(seqs, self.store.articles_by_seq(seqs), strict=False) if a.feed_id in feeds
            ]
        if search.filters:
            rules = [replace(search.filters, scope=f"search:{search.name}")]
            seqs = [
                a.rowid
                for a, _ in self.store.articles_by_seq(seqs)
                if a.rowid is not None and hidden_by(subject_of(a, plain_text(a)), rules) is None
            ]
        return seqs

    def _why_empty(self) -> str:
        """What the home page says when there is nothing to show yet, and why."""
        feeds = [f for f in self._all_feeds() if f.status is FeedStatus.ACTIVE]
        if not feeds:
            return "No feeds are subscribed yet: add some to feeds/ (see the README) or run `aggregator feeds add URL`."
        failing = sum(1 for f in feeds if f.error_count)
        waiting = sum(1 for f in feeds if f.last_fetch_at is None)
        if failing:
            return f"{failing} of {len(feeds)} feeds failing: see Sources."
        if waiting:
            return f"{waiting} of {len(feeds)} feeds not polled yet."
        return f"The {len(feeds)} feeds have no stories to show yet."

    def _feed_documents(self, stories: list[Story], meta: FeedMeta) -> dict[str, Document]:
        """The scope's feeds, rendered only when its stories changed."""
        fingerprint = _fingerprint(stories, meta)
        cached = self._rendered.get(meta.path)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        updated = newest_update(stories) if stories else None
        out = {}
        for suffix, (content_type, render) in FORMATS.items():
            path = meta.path + suffix
            out[path] = Document(path, render(stories, meta), content_type, updated)
        self._rendered[meta.path] = (fingerprint, out)
        return out

    def _render_sources(self) -> dict[str, Document]:
        feeds = [f for f in self._all_feeds() if f.status is not FeedStatus.UNSUBSCRIBED]
        subs = [_subscription(f) for f in feeds]
        opml = render_opml(
            subs,
            f"{self.latest_meta.title}: subscriptions",
            {f.id: f.title for f in feeds if f.title},
            {f.id: f.site_url for f in feeds if f.site_url},
        )
        return {
            "feeds": Document("feeds", render_sources(feeds, self.latest_meta, self.site, self._links), HTML, None),
            "opml": Document("opml", opml, OPML, None),
        }


class Outputs:
    """Where a node's outputs come from. One machine renders its own. In a
    cluster one node renders (the holder of the "render" job lock) and saves
    what it rendered in the database; every other node serves those very
    bytes, so all nodes answer with the same documents and ETags."""

    def __init__(self, publisher: Publisher):
        self.publisher = publisher
        self._loaded: str | None = None

    def refresh(self, previous: Snapshot, sources_every: float = 0.0) -> Snapshot:
        store = self.publisher.store
        if not store.shared or store.try_job("render"):
            snapshot = self.publisher.build(previous, sources_every)
            if store.shared and _changed(previous, snapshot):
                store.save_outputs(
                    [(d.path, d.content_type, d.body, iso(d.last_modified)) for d in snapshot.documents.values()],
                    snapshot.content_version,
                    snapshot.status_version,
                )
            return snapshot
        version = store.outputs_version()
        if version is None or version == self._loaded:
            return previous
        rows, content_version, status_version = store.load_outputs()
        self._loaded = version
        documents = {path: Document(path, body, kind, from_iso(modified)) for path, kind, body, modified in rows}
        return Snapshot(documents, content_version, status_version)

    @property
    def follows(self) -> bool:
        """A node that serves what another renders (it must look for new outputs by itself)."""
        store = self.publisher.store
        return store.shared and not store.try_job("render")


def _changed(previous: Snapshot, snapshot: Snapshot) -> bool:
    if previous.documents.keys() != snapshot.documents.keys():
        return True
    return any(previous.documents[p].etag != d.etag for p, d in snapshot.documents.items())


def _fingerprint(stories: list[Story], meta: FeedMeta) -> str:
    """Everything about the stories a feed document shows, in one hash."""
    digest = hashlib.sha256(repr(meta).encode())
    for story in stories:
        a, source = story.article, story.source
        digest.update(
            repr(
                (
                    a.id,
                    a.content_hash,
                    a.updated_at,
                    a.published_at,
                    a.first_seen_at,
                    a.duplicate_of,
                    source.title,
                    source.feed_url,
                    source.site_url,
                    source.updated_at,
                    [(o.source.title, o.url, o.title) for o in story.also],
                    story.story_id,
                    story.size,
                    story.joined_at,
                )
            ).encode()
        )
    return digest.hexdigest()


EPOCH_KEY = datetime.min.replace(tzinfo=UTC)


def _article_key(a: Article) -> tuple[object, ...]:
    return (a.id, a.content_hash, a.url, a.title, a.updated_at, a.published_at, a.first_seen_at)


def _feed_key(feed: FeedState) -> tuple[object, ...]:
    """What a source page shows of its feed."""
    return (feed.display_title, feed.url, feed.site_url, feed.tags)


def _links_of(stories: Sequence[Story], links: Links) -> str:
    """Which of the stories and their sources have pages: an entry's links depend on it."""
    return "|links:" + "".join(
        f"{int(s.story_id in links.stories)}{int(s.source.feed_id in links.sources)}" for s in stories
    )


def _links_of_feeds(feed_ids: Sequence[str], links: Links) -> str:
    return "|links:" + "".join(str(int(f in links.sources)) for f in feed_ids)


def _subscription(feed: FeedState) -> Subscription:
    return Subscription(feed_id=feed.id, url=feed.url, title=feed.configured_title, tags=feed.tags)


def static_path(url_path: str) -> str:
    return STATIC_NAMES.get(url_path, url_path)


def write_static(snapshot: Snapshot, out_dir: Path) -> list[str]:
    """Mirror the snapshot to out_dir: each file written atomically (temp file,
    fsync, rename) and only when its bytes changed; tag files of tags that no
    longer exist are removed. Returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    wanted = set()
    for url_path, document in sorted(snapshot.documents.items()):
        relative = static_path(url_path)
        target = out_dir / relative
        wanted.add(target)
        try:
            if target.read_bytes() == document.body:
                continue
        except OSError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(document.body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        written.append(relative)
    for scope_dir in (out_dir / name for name in PAGE_DIRS):  # tags, searches, sources, stories, days gone
        if scope_dir.is_dir():
            for stale in scope_dir.iterdir():
                if stale.is_file() and stale not in wanted and (stale.suffix in FORMATS or stale.suffix == ".html"):
                    stale.unlink()
    return written
