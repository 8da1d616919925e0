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
from datetime import datetime
from pathlib import Path

from aggregator.config import Config, SearchSettings
from aggregator.filters import hidden_by, subject_of
from aggregator.model import FeedState, FeedStatus, Story, Subscription, from_iso, iso
from aggregator.publish.atom import render_atom
from aggregator.publish.common import FeedMeta, fit, newest_update, plain_text
from aggregator.publish.html import render_index, render_sources
from aggregator.publish.jsonfeed import render_json
from aggregator.publish.opml import render_opml
from aggregator.publish.rss import render_rss
from aggregator.store import Store

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
STATIC_NAMES = {"": "index.html", "feeds": "feeds/index.html", "opml": "subscriptions.opml"}


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
        # path -> (fingerprint of the stories shown, rendered documents): a
        # scope whose stories did not change is not rendered again.
        self._rendered: dict[str, tuple[str, dict[str, Document]]] = {}
        self.sources_built = float("-inf")
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
        after every poll. Story changes are always rendered at once."""
        content_version = self.store.content_version()
        status_version = self.store.status_version()
        documents: dict[str, Document] = {}
        same_content = previous is not None and previous.content_version == content_version
        if previous is not None and same_content:
            documents.update({p: d for p, d in previous.documents.items() if p not in SOURCE_PATHS})
        else:
            documents.update(self._render_stories())
        recent = time.monotonic() - self.sources_built < sources_every
        if previous is not None and same_content and (previous.status_version == status_version or recent):
            documents.update({p: previous.documents[p] for p in SOURCE_PATHS})
            status_version = previous.status_version
        else:
            documents.update(self._render_sources())
            if self._empty and same_content:
                documents.update(self._render_stories())  # the home page says why it is empty: feed states moved
            self.sources_built = time.monotonic()
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

    def _render_stories(self) -> dict[str, Document]:
        """Every scope's stories in every format: Latest (whose HTML page is
        the home page), each tag, each saved search."""
        documents: dict[str, Document] = {}
        tags = self.store.tags()
        last_poll = self.store.last_poll_at()
        latest = fit(self.store.latest(self.entries, self.per_source))
        meta = replace(self.latest_meta, empty_updated=last_poll)
        documents.update(self._feed_documents(latest, meta))
        updated = newest_update(latest) if latest else None
        note = "" if latest else self._why_empty()
        documents[""] = Document("", render_index(latest, meta, tags, empty_note=note), HTML, updated)
        for tag in tags:
            stories = fit(self.store.latest(self.entries, self.per_source, tag=tag))
            documents.update(self._feed_documents(stories, replace(self.tag_meta(tag), empty_updated=last_poll), tags))
        for search in self.config.settings.searches:
            stories = fit(self.store.latest(self.entries, self.per_source, seqs=self._matches(search)))
            documents.update(
                self._feed_documents(stories, replace(self.search_meta(search), empty_updated=last_poll), tags)
            )
        self._empty = not latest
        return documents

    def search_page(self, text: str) -> tuple[int, bytes]:
        """The search box's answer: an HTML page of the stories matching ``text``
        (status 400 with the reason for a query that cannot be read, 503 when
        too many searches run at once). Bounded: the query's length, the
        number of stories, and the time the database may spend."""
        from aggregator.query import QueryError, parse

        meta = replace(self.latest_meta, title=f"{self.latest_meta.title}: search", path="search")
        tags = self.store.tags()
        if not text.strip():
            return 200, render_index([], meta, tags, empty_note="Type words to search for.", query="")
        if not self._searches.acquire(blocking=False):
            return 503, render_index([], meta, tags, empty_note="Too many searches at once; try again in a moment.")
        try:
            query = parse(text)
            with self.store.time_limit(SEARCH_SECONDS):
                stories = fit(
                    self.store.latest(SEARCH_RESULTS, SEARCH_RESULTS, seqs=self.store.search_seqs(query, 300))
                )
        except QueryError as exc:
            return 400, render_index([], meta, tags, empty_note=f"Cannot search for that: {exc}.", query=text)
        except TimeoutError:
            return 503, render_index([], meta, tags, empty_note="The search took too long; try fewer or rarer words.",
                                     query=text)  # fmt: skip
        finally:
            self._searches.release()
        note = "" if stories else "No stored story matches."
        return 200, render_index(stories, replace(meta, subtitle=f"Stories matching: {text}"), tags, note, text)

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
        feeds = [f for f in self.store.feeds() if f.status is FeedStatus.ACTIVE]
        if not feeds:
            return "No feeds are subscribed yet: add some to feeds/ (see the README) or run `aggregator feeds add URL`."
        failing = sum(1 for f in feeds if f.error_count)
        waiting = sum(1 for f in feeds if f.last_fetch_at is None)
        if failing:
            return f"{failing} of {len(feeds)} feeds failing: see Sources."
        if waiting:
            return f"{waiting} of {len(feeds)} feeds not polled yet."
        return f"The {len(feeds)} feeds have no stories to show yet."

    def _feed_documents(
        self, stories: list[Story], meta: FeedMeta, tags: Sequence[str] | None = None
    ) -> dict[str, Document]:
        """The scope's feeds (and, with ``tags``, its HTML page), rendered only when its stories changed."""
        fingerprint = _fingerprint(stories, meta) + ("|html:" + ",".join(tags) if tags is not None else "")
        cached = self._rendered.get(meta.path)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        updated = newest_update(stories) if stories else None
        out = {}
        for suffix, (content_type, render) in FORMATS.items():
            path = meta.path + suffix
            out[path] = Document(path, render(stories, meta), content_type, updated)
        if tags is not None:
            page = meta.path + ".html"
            out[page] = Document(page, render_index(stories, meta, tags), HTML, updated)
        self._rendered[meta.path] = (fingerprint, out)
        return out

    def _render_sources(self) -> dict[str, Document]:
        feeds = [f for f in self.store.feeds() if f.status is not FeedStatus.UNSUBSCRIBED]
        subs = [_subscription(f) for f in feeds]
        opml = render_opml(
            subs,
            f"{self.latest_meta.title}: subscriptions",
            {f.id: f.title for f in feeds if f.title},
            {f.id: f.site_url for f in feeds if f.site_url},
        )
        return {
            "feeds": Document("feeds", render_sources(feeds, self.latest_meta), HTML, None),
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
    for scope_dir in (out_dir / "tags", out_dir / "search"):  # tags and searches that are gone
        if scope_dir.is_dir():
            for stale in scope_dir.iterdir():
                if stale.is_file() and stale not in wanted and (stale.suffix in FORMATS or stale.suffix == ".html"):
                    stale.unlink()
    return written
