"""Plain records that travel between the stages.

Nothing here does I/O. Times are timezone-aware UTC ``datetime`` objects in
memory and ISO 8601 strings (``2026-01-02T03:04:05Z``) in the database and on
the wire.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import overload

from aggregator.filters import RuleSet


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def iso(dt: datetime) -> str: ...


@overload
def iso(dt: None) -> None: ...


@overload
def iso(dt: datetime | None) -> str | None: ...


def iso(dt: datetime | None) -> str | None:
    """UTC ISO 8601 to the second, with a ``Z``; None stays None."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(dt: datetime | None) -> str | None:
    """UTC ISO 8601 to the millisecond: for schedule times, which are compared
    as strings in SQL (so every value of a column must use the same form)."""
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- subscriptions (what to poll; comes from feeds/) ------------------------


@dataclass(frozen=True, repr=False)
class FetchOptions:
    """What the fetcher needs for one feed beyond its URL: credentials from
    the URL's userinfo, extra request headers (an API key), a User-Agent some
    sources insist on. Secrets: they go to the fetcher and nowhere else (never
    into the database, a log line, an output or an export)."""

    username: str | None = None
    password: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str | None = None

    def __repr__(self) -> str:
        return "FetchOptions(<redacted>)"

    @property
    def empty(self) -> bool:
        return self == NO_FETCH_OPTIONS


NO_FETCH_OPTIONS = FetchOptions()


@dataclass(frozen=True)
class Subscription:
    """One feed as the subscription files describe it."""

    feed_id: str
    url: str  # without userinfo: credentials live in ``fetch`` only
    title: str | None = None
    tags: tuple[str, ...] = ()
    interval: float | None = None  # seconds; None = global / adaptive
    source: str = ""  # "world.yaml#3": the file and entry, for messages
    enabled: bool = True  # false: listed but not polled
    cluster: bool = True  # false: this feed's articles never join other outlets' stories
    full_text: bool = False  # fetch each new article's page for its full text
    backfill: int | None = None  # at most this many entries of the first poll reach the outputs
    fetch: FetchOptions = field(default=NO_FETCH_OPTIONS, compare=False)
    filters: RuleSet | None = field(default=None, compare=False)  # this feed's own block/keep rules

    @property
    def source_file(self) -> str:
        return self.source.split("#", 1)[0]


# --- feed state (how polling went; lives in the database) --------------------


class FeedStatus(enum.StrEnum):
    ACTIVE = "active"
    GONE = "gone"  # answered 410: never polled again until re-added
    UNSUBSCRIBED = "unsubscribed"  # no longer in feeds/
    DISABLED = "disabled"  # in feeds/ with `enabled: false`: kept, not polled


@dataclass
class FeedState:
    id: str
    url: str  # current URL we poll (changes after a confirmed 301/308)
    configured_url: str
    title: str | None = None
    configured_title: str | None = None
    site_url: str | None = None
    tags: tuple[str, ...] = ()
    interval: float | None = None  # per-feed interval from feeds/, seconds
    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None
    last_fetch_at: datetime | None = None
    last_status: int | None = None
    last_outcome: str | None = None
    error_count: int = 0
    last_error: str | None = None
    next_poll_at: datetime | None = None
    retry_after: datetime | None = None
    redirect_url: str | None = None
    redirect_seen: int = 0
    status: FeedStatus = FeedStatus.ACTIVE
    publish_interval: float | None = None  # observed mean gap between entries, seconds
    updated_at: datetime | None = None  # the source feed's own updated date
    article_count: int = 0
    ttl: float | None = None  # RSS <ttl> from the last parsed document, seconds
    self_url: str | None = None  # the document's own rel=self link
    language: str | None = None
    last_new_at: datetime | None = None  # when a poll last brought a new article
    last_parsed_at: datetime | None = None  # when its document was last parsed
    source_file: str | None = None  # the feeds/ file that lists it
    cluster: bool = True  # may its articles join other outlets' stories
    full_text: bool = False
    backfill: int | None = None
    last_counts: dict[str, int] = field(default_factory=dict)  # what its last parsed poll dropped or held
    parse_path: str | None = None  # which reader parsed its last document: "fast", "feedparser" or "json"

    @property
    def display_title(self) -> str:
        return self.configured_title or self.title or self.url


@dataclass(frozen=True)
class FeedPollUpdate:
    """The feed state one poll leaves behind: every column a poll owns, the
    unchanged ones carrying their old value (a pure function decides it:
    ingest.feed_changes; the store writes it as it is)."""

    last_fetch_at: datetime
    last_status: int | None
    last_outcome: str
    error_count: int
    last_error: str | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    next_poll_at: datetime | None  # None: never again (410 Gone)
    retry_after: datetime | None
    url: str | None  # a confirmed permanent redirect's target, else None: unchanged
    redirect_url: str | None
    redirect_seen: int
    # GONE after a 410, ACTIVE when a gone feed answers again, else None:
    # unchanged (feeds/ may have unsubscribed the feed while it was polled).
    status: FeedStatus | None
    title: str | None
    site_url: str | None
    self_url: str | None
    language: str | None
    updated_at: datetime | None
    ttl: float | None
    publish_interval: float | None
    last_parsed_at: datetime | None
    last_new_at: datetime | None
    visible: bool  # the change shows in the outputs (title, site link, URL, gone)
    host_wait_until: datetime | None = None  # a 429's Retry-After: every feed of the server waits, on every poller
    last_counts: str | None = None  # what the poll dropped or held (JSON: capped, folded per rule, backfilled)
    parse_path: str | None = None  # the reader that parsed its document (parse.PATH_*); None: not parsed


# --- fetch ------------------------------------------------------------------


class Outcome(enum.StrEnum):
    """What one poll of a feed came to; also the metrics label."""

    OK = "ok"  # 200, parsed
    NOT_MODIFIED = "not_modified"  # 304
    UNCHANGED = "unchanged"  # 200, byte-identical body: not parsed
    GONE = "gone"  # 410
    RATE_LIMITED = "rate_limited"  # 429 / 503
    HTTP_ERROR = "http_error"  # other 4xx / 5xx
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    CONNECTION = "connection_error"  # refused, reset, DNS
    REDIRECT = "redirect_error"  # loop, too many, refused destination
    PARSE_ERROR = "parse_error"  # nothing usable in the document
    STORE_ERROR = "store_error"  # our side: the database could not take it (disk full...)

    @property
    def is_error(self) -> bool:
        return self not in (Outcome.OK, Outcome.NOT_MODIFIED, Outcome.UNCHANGED)


@dataclass
class FetchResult:
    url: str  # the URL we asked for
    outcome: Outcome
    final_url: str | None = None  # after redirects
    status: int | None = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None  # target of a leading 301/308 chain
    error: str | None = None
    retry_after: float | None = None  # seconds, from Retry-After
    max_age: float | None = None  # seconds, from Cache-Control / Expires
    bytes_read: int = 0
    elapsed: float = 0.0


# --- parse ------------------------------------------------------------------


class ParseError(Exception):
    """The document holds nothing usable as a feed."""


@dataclass(frozen=True)
class Author:
    name: str | None = None
    email: str | None = None
    url: str | None = None

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in (("name", self.name), ("email", self.email), ("url", self.url)) if v}


@dataclass(frozen=True)
class Enclosure:
    url: str
    type: str | None = None
    length: int | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"url": self.url}
        if self.type:
            out["type"] = self.type
        if self.length is not None:
            out["length"] = self.length
        return out


@dataclass
class ParsedEntry:
    """One entry of a fetched document, normalised but not yet identified
    against what is stored."""

    entry_key: str  # identity within the feed (DESIGN §4.1)
    key_rule: str  # "guid", "link", "hash" or "link:untrusted-guid"
    content_hash: str
    guid: str | None = None
    url: str | None = None  # original link minus tracking parameters
    canonical_url: str | None = None
    title: str = ""
    authors: tuple[Author, ...] = ()
    summary: str | None = None
    content: str | None = None
    categories: tuple[str, ...] = ()
    enclosures: tuple[Enclosure, ...] = ()
    image: str | None = None
    language: str | None = None
    published_at: datetime | None = None  # as the source said (UTC), validated
    updated_at: datetime | None = None
    unchanged: bool = False  # content hash matched a stored one: fields not filled
    text: str = ""  # title-less plain text of summary and content (search, stories, filters), capped
    story_features: str | None = None  # cluster.StoryFeatures as JSON, computed beside the parser


@dataclass
class ParsedFeed:
    title: str | None = None
    site_url: str | None = None
    self_url: str | None = None
    language: str | None = None
    updated_at: datetime | None = None
    ttl: float | None = None  # RSS <ttl>, seconds
    entries: list[ParsedEntry] = field(default_factory=list)
    folded: list[tuple[str, str]] = field(default_factory=list)  # (entry key, rule) dropped in parsing
    warning: str | None = None  # bozo message, if any
    entry_count: int = 0  # entries the document had, before folding
    parse_path: str = ""  # which reader parsed it: "fast", "feedparser" or "json" (parse.PATH_*)
    fast_deferred: str | None = None  # why the fast path left it to feedparser, when it did


# --- store ------------------------------------------------------------------


@dataclass
class Article:
    id: str  # permanent output id
    feed_id: str
    entry_key: str
    guid: str | None
    url: str | None
    canonical_url: str | None
    title: str
    authors: tuple[Author, ...]
    summary: str | None
    content: str | None
    categories: tuple[str, ...]
    enclosures: tuple[Enclosure, ...]
    image: str | None
    language: str | None
    published_at: datetime | None
    updated_at: datetime | None
    first_seen_at: datetime
    content_hash: str
    duplicate_of: str | None = None
    rowid: int | None = None
    story_id: str | None = None  # its story: the output id of the story's first article
    story_score: float | None = None  # the similarity that joined it to the story
    story_rule: str | None = None  # why it is in its story: first, same-url, similar, manual
    story_why: tuple[str, ...] = ()  # the terms that weighed most in story_score
    hidden_by: str | None = None  # the filter rule that keeps it out of every output
    held: str | None = None  # kept out of the outputs: "backfill" (a quiet first poll), "expired"
    full_text: bool = False  # its content was extracted from the article's page
    full_text_error: str | None = None  # why extracting it failed (it keeps the feed's own text)


@dataclass
class IngestCounts:
    """What one poll of one feed did to the store."""

    new: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0  # stored, but folded into another feed's story
    capped: int = 0  # edits held back by the churn cap
    backfilled: int = 0  # stored but kept out of the outputs by a quiet first poll
    folded: dict[str, int] = field(default_factory=dict)  # rule -> entries merged into an existing article

    @property
    def changed(self) -> bool:
        return bool(self.new or self.updated)


@dataclass
class PollReport:
    """The result of polling one feed end to end."""

    feed_id: str
    url: str
    outcome: Outcome
    status: int | None = None
    error: str | None = None
    counts: IngestCounts = field(default_factory=IngestCounts)
    bytes_read: int = 0
    fetch_seconds: float = 0.0
    parse_seconds: float = 0.0
    next_poll_at: datetime | None = None
    warning: str | None = None  # the document parsed, with problems (feedparser's bozo)
    parse_path: str | None = None  # which reader parsed the document (parse.PATH_*), when one was parsed


# --- publish -------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """The feed a story came from, as outputs describe it (atom:source)."""

    feed_id: str
    title: str
    feed_url: str
    site_url: str | None
    updated_at: datetime | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlsoReported:
    source: Source
    url: str | None
    title: str


@dataclass
class Story:
    """One line of an output: the article that represents a story there,
    where it came from, and the other outlets that reported it."""

    article: Article
    source: Source
    also: list[AlsoReported] = field(default_factory=list)
    story_id: str = ""  # the story's id: its first article's output id
    size: int = 1  # articles in the story (shown or not)
    joined_at: datetime | None = None  # when the last of the other outlets shown joined it


@dataclass(frozen=True)
class StoryPlan:
    """Where one new article goes: into a story, or founding its own."""

    story_id: str | None  # None: it founds a story whose id is its own output id
    rule: str  # "first", "same-url" (an exact duplicate), "similar", "manual"
    score: float | None = None  # the similarity that joined it
    profile: str | None = None  # the story's profile after this article (None: unchanged)
    keys: tuple[str, ...] = ()  # the article's index keys (cluster.index_keys): it can be found by them
    why: tuple[str, ...] = ()  # the terms that weighed most in the score, for people to see


FIRST_OF_STORY = StoryPlan(story_id=None, rule="first")
