"""One poll of a feed, end to end: fetch, parse, identify, store (DESIGN §1).

The orchestration is thin. Fetching runs in threads; parsing runs in a pool
of worker processes (feedparser is CPU-bound Python, so processes are what
use more than one core); writing is one short transaction per feed. The
decisions (what changed on the feed, when to poll next, what is new) are
pure functions in policy.py, dedupe.py and ``feed_changes`` below.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aggregator import cluster, dedupe, filters
from aggregator.config import Config, StoriesSettings, id_authority
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.model import (
    FIRST_OF_STORY,
    NO_FETCH_OPTIONS,
    Article,
    FeedPollUpdate,
    FeedState,
    FeedStatus,
    FetchOptions,
    FetchResult,
    IngestCounts,
    Outcome,
    ParsedFeed,
    ParseError,
    PollReport,
    StoryPlan,
    Subscription,
    utcnow,
)
from aggregator.policy import PollFacts, Timing, estimate_publish_interval, next_poll_at
from aggregator.store import IngestTransaction, Store

if TYPE_CHECKING:
    from aggregator.metrics import Metrics

log = logging.getLogger(__name__)

# A 301/308 target becomes the feed's URL after it served a valid feed this many polls in a row.
REDIRECT_CONFIRMATIONS = 2


# --- parsing in worker processes -------------------------------------------------------


# Documents up to this size are parsed in the fetch thread; a bigger one (a
# long podcast archive, a hostile 10 MB feed) goes to a worker process, where
# the fast path is tried too: so the service's own memory never holds more than
# `polling.workers` trees of this size at once (lxml needs several times the
# document's size), and big documents queue for the workers' cores.
INLINE_MAX_BYTES = 1_000_000


class ParsePool:
    """Parsing with a time limit. Documents the fast path reads (parse.py,
    fastparse.py: well-formed RSS and Atom; JSON Feed) of up to
    INLINE_MAX_BYTES are parsed right here in the calling fetch thread: every
    step is linear in its capped input and the deadline (``timeout``) is
    checked at every entry of the document and between the steps of
    normalising, so such a parse is bounded by the fetcher's size cap times a
    linear cost and abandoned past ``timeout`` (lxml's parse and nh3's
    cleaning release the GIL; the rest of the reader is Python: the shares
    are in bench/RESULTS.md, "Fast parse path"). Everything else goes to
    feedparser in worker processes (pebble): a document that hangs the parser
    is killed at its timeout, one that crashes the worker costs only itself,
    and workers are replaced after ``recycle`` documents so memory cannot
    creep. The pool starts at the first document the fast path leaves to
    feedparser: a poll of well-formed feeds starts no process at all. pebble
    is used rather than concurrent.futures because it kills exactly the
    worker that overran and tells us which task it was. ``inline_fast=False``
    (or AGGREGATOR_PARSE_ENGINE=feedparser) sends every document to the pool."""

    def __init__(self, workers: int = 0, timeout: float = 30, recycle: int = 200, inline_fast: bool = True):
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self.recycle = recycle
        self.inline_fast = inline_fast
        self._pool: Any = None  # started on the first document that needs it
        self._start_lock = threading.Lock()
        self._closed = False

    def _started(self) -> Any:
        with self._start_lock:
            if self._closed:
                raise ParseError("the parser pool is shut down")
            if self._pool is None:
                import pebble

                context = multiprocessing.get_context("forkserver")
                # Workers fork from a server that has already imported the parser.
                context.set_forkserver_preload(["aggregator.worker"])
                self._pool = pebble.ProcessPool(max_workers=self.workers, max_tasks=self.recycle, context=context)
            return self._pool

    @property
    def started(self) -> bool:
        """Whether worker processes were started (some document needed feedparser)."""
        return self._pool is not None

    def parse(
        self,
        body: bytes,
        url: str,
        headers: dict[str, str],
        now: datetime,
        known: dict[str, str],
        features_for: int | None = None,
    ) -> ParsedFeed:
        from aggregator import parse as parsing  # imported only when a body needs parsing
        from aggregator.worker import parse_for_ingest

        engine, deferred = None, None
        if self.inline_fast and parsing.DEFAULT_ENGINE != "feedparser" and len(body) <= INLINE_MAX_BYTES:
            if self._closed:
                raise ParseError("the parser pool is shut down")
            try:
                return parse_for_ingest(
                    body, url, headers, now, known, time_limit=self.timeout, engine="fast", features_for=features_for
                )
            except parsing.FastPathDeferred as exc:
                engine, deferred = "feedparser", str(exc)
        import pebble

        future = self._started().schedule(
            parse_for_ingest,
            args=(body, url, headers, now, known),
            kwargs={"engine": engine, "features_for": features_for},
            timeout=self.timeout,
        )
        try:
            parsed: ParsedFeed = future.result()
            parsed.fast_deferred = parsed.fast_deferred or deferred
            return parsed
        except FutureTimeout:
            raise ParseError(f"parsing took longer than {self.timeout:g}s; the document was abandoned") from None
        except pebble.ProcessExpired as exc:
            raise ParseError(f"the parser crashed on this document (exit code {exc.exitcode})") from None
        except ParseError:
            raise
        except Exception as exc:  # the pool broke or was stopped under us, a result that would not pickle
            raise ParseError(f"could not parse this document ({type(exc).__name__}: {str(exc)[:200]})") from None

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join(timeout=10)


class InlineParser:
    """Parsing in the calling thread, for tests and callers that trust their
    input: the fast path where it applies, feedparser otherwise. Only
    parse_document's cooperative time limit applies (at every entry and
    between normalisation steps, each linear in its capped input):
    feedparser itself cannot be interrupted in-process, so a document that
    hangs it hangs the caller. Commands parse through make_parser, which has
    a hard limit."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout

    def parse(
        self,
        body: bytes,
        url: str,
        headers: dict[str, str],
        now: datetime,
        known: dict[str, str],
        features_for: int | None = None,
    ) -> ParsedFeed:
        from aggregator.worker import parse_for_ingest  # feedparser is imported only when a body needs parsing

        return parse_for_ingest(body, url, headers, now, known, time_limit=self.timeout, features_for=features_for)

    def close(self) -> None:
        pass


# --- the pure part: what a poll changes on the feed ------------------------------------


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def feed_changes(
    feed: FeedState,
    fetch: FetchResult,
    outcome: Outcome,
    error: str | None,
    parsed: ParsedFeed | None,
    body_hash: str | None,
    counts: IngestCounts,
    now: datetime,
    timing: Timing,
    rng: random.Random,
) -> FeedPollUpdate:
    """The feed's state after one poll."""
    failed = outcome.is_error
    error_count = feed.error_count + 1 if failed else 0
    etag, last_modified = _validators(feed, fetch, body_hash)
    title, site_url, self_url, language = feed.title, feed.site_url, feed.self_url, feed.language
    updated_at, ttl, last_parsed_at, publish_interval = (
        feed.updated_at,
        feed.ttl,
        feed.last_parsed_at,
        feed.publish_interval,
    )
    if parsed is not None:
        # Capped here, so no document can make the database (or an output) carry a 10 MB title.
        title = _capped(parsed.title, MAX_FEED_TITLE) or feed.title
        site_url = _bounded_url(parsed.site_url) or feed.site_url
        self_url, language, updated_at, ttl = (
            _bounded_url(parsed.self_url),
            parsed.language,
            parsed.updated_at,
            parsed.ttl,
        )
        last_parsed_at = now
        publish_interval = estimate_publish_interval(e.published_at for e in parsed.entries) or publish_interval
    url, redirect_url, redirect_seen = _redirect_changes(feed, fetch, failed)
    status = None
    if outcome is Outcome.GONE:
        status = FeedStatus.GONE
    elif not failed and feed.status is FeedStatus.GONE:
        status = FeedStatus.ACTIVE  # polled by hand (`poll --feed`) and it is back
    facts = PollFacts(outcome=outcome, error_count=error_count, max_age=fetch.max_age, ttl=ttl,
                      retry_after=fetch.retry_after)  # fmt: skip
    next_poll = next_poll_at(now, facts, timing, feed.interval, publish_interval, rng)
    host_wait = None
    if fetch.status == 429 and fetch.retry_after is not None:
        # "Too many requests" is about us and the whole server: all its feeds wait (an hour at most,
        # so one feed cannot hold a big host for a day). A 503 may be one path's trouble: that feed waits alone.
        host_wait = now + timedelta(seconds=min(fetch.retry_after, HOST_WAIT_MAX))
    return FeedPollUpdate(
        last_fetch_at=now,
        last_status=fetch.status,
        last_outcome=outcome.value,
        error_count=error_count,
        last_error=error if failed else None,
        etag=etag,
        last_modified=last_modified,
        body_hash=body_hash if body_hash is not None else feed.body_hash,
        next_poll_at=next_poll,
        retry_after=next_poll if fetch.retry_after is not None else None,
        url=url if url != feed.url else None,
        redirect_url=redirect_url,
        redirect_seen=redirect_seen,
        status=status,
        title=title,
        site_url=site_url,
        self_url=self_url,
        language=language,
        updated_at=updated_at,
        ttl=ttl,
        publish_interval=publish_interval,
        last_parsed_at=last_parsed_at,
        last_new_at=now if counts.new else feed.last_new_at,
        visible=(title, site_url, url) != (feed.title, feed.site_url, feed.url) or status is not None,
        host_wait_until=host_wait,
        last_counts=_dropped(counts, parsed) if parsed is not None else None,
        parse_path=parsed.parse_path or None if parsed is not None else None,
    )


def _dropped(counts: IngestCounts, parsed: ParsedFeed) -> str:
    """What this poll did not take as new articles, said per feed (feeds list --json)."""
    return json.dumps(
        {
            "entries": parsed.entry_count,
            "capped": counts.capped,
            "backfilled": counts.backfilled,
            **{f"folded:{rule}": n for rule, n in sorted(counts.folded.items())},
        },
        separators=(",", ":"),
    )


MAX_FULL_TEXTS_PER_POLL = 20  # pages read per poll of a `full_text: true` feed (its first poll may bring many)
HOST_WAIT_MAX = 3600.0
MAX_FEED_TITLE = 300
MAX_URL = 2000


def _capped(text: str | None, limit: int) -> str | None:
    return text if text is None or len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _bounded_url(url: str | None) -> str | None:
    """A URL too long to be real is dropped rather than cut into a wrong one."""
    return url if url is None or len(url) <= MAX_URL else None


def _validators(feed: FeedState, fetch: FetchResult, body_hash: str | None) -> tuple[str | None, str | None]:
    """ETag and Last-Modified exactly as received, from every 200 and 304 (a
    304 that omits one keeps the one we had). A 200 whose body was not taken
    in full (it did not parse, or an edit was held back) forgets them, so the
    next poll fetches it again rather than being told "not modified"."""
    if body_hash is None and fetch.status == 200:
        return None, None
    if fetch.status == 200:
        return fetch.etag, fetch.last_modified
    if fetch.status == 304:
        return fetch.etag or feed.etag, fetch.last_modified or feed.last_modified
    return feed.etag, feed.last_modified


def _redirect_changes(feed: FeedState, fetch: FetchResult, failed: bool) -> tuple[str, str | None, int]:
    """(url, redirect candidate, times seen). 301/308: adopt the new URL only
    once it has served a valid feed on REDIRECT_CONFIRMATIONS polls in a row.
    302/303/307 never change it."""
    target = fetch.permanent_redirect
    if not target or failed:
        return feed.url, None, 0
    seen = feed.redirect_seen + 1 if feed.redirect_url == target else 1
    if seen >= REDIRECT_CONFIRMATIONS:
        log.info(
            "%s: moved permanently to %s (confirmed on %d polls); polling the new URL from now on",
            feed.url,
            target,
            seen,
        )
        return target, None, 0
    return feed.url, target, seen


# --- orchestration -------------------------------------------------------------------------


class Poller:
    """Polls feeds into the store. Thread-safe: the daemon's workers share one."""

    def __init__(
        self,
        store: Store,
        config: Config,
        parser: ParsePool | InlineParser | None = None,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        settings = config.settings
        self.store = store
        self.config = config
        # A slot a dead poller held frees itself after this (a fetch never takes longer than its deadline).
        self.fetcher = Fetcher(
            FetchLimits.from_settings(settings.polling), store.host_slots(settings.polling.deadline * 2 + 30)
        )
        self.parser = parser or InlineParser()
        self.metrics = metrics
        self.timing = Timing.from_settings(settings.polling)
        self.authority = id_authority(settings.http.public_base_url)
        self.cluster_settings = cluster_settings(settings.stories)
        self.parsed_profiles = ParsedProfiles()
        self.rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.clock = clock
        self.aborted = threading.Event()  # shutdown gave up on fetches in flight
        self.fetch_options: dict[str, FetchOptions] = {}  # feed id -> credentials and headers (set_subscriptions)
        self.feed_rules: dict[str, filters.RuleSet] = {}  # feed id -> its own filters (set_subscriptions)
        self.tag_rules = settings.tag_rules()
        self._fallback_floor: datetime | None = None  # undated entries get dates below this (see _plan)

    def abort_fetches(self) -> None:
        """Stop waiting for servers: fetches in flight end now and write nothing,
        so their feeds stay due and are polled again after a restart."""
        self.aborted.set()
        self.fetcher.abort_all()

    def reconfigure(self, config: Config) -> None:
        """Take new settings (SIGHUP): timing and fetch limits apply from the next poll."""
        settings = config.settings
        self.config = config
        self.timing = Timing.from_settings(settings.polling)
        self.authority = id_authority(settings.http.public_base_url)
        self.cluster_settings = cluster_settings(settings.stories)
        self.tag_rules = settings.tag_rules()
        limits = FetchLimits.from_settings(settings.polling)
        if limits != self.fetcher.limits:
            # The old fetcher's keep-alive connections just time out.
            self.fetcher = Fetcher(limits, self.store.host_slots(settings.polling.deadline * 2 + 30))

    def set_subscriptions(self, subs: Iterable[Subscription]) -> None:
        """What feeds/ says about each feed beyond what the store keeps: what only
        the fetcher may see (credentials, headers), and the feed's own filters."""
        subs = list(subs)
        self.fetch_options = {s.feed_id: s.fetch for s in subs if not s.fetch.empty}
        self.feed_rules = {s.feed_id: s.filters for s in subs if s.filters}

    def close(self) -> None:
        self.fetcher.close()
        self.parser.close()

    def poll(self, feed: FeedState) -> PollReport:
        """Fetch, parse and store one feed. Never raises for anything a
        feed or its server does; store failures (disk full) do raise."""
        started = time.monotonic()
        options = self.fetch_options.get(feed.id, NO_FETCH_OPTIONS)
        fetch = self.fetcher.fetch(feed.url, feed.etag, feed.last_modified, options=options)
        now = self.clock()
        if self.aborted.is_set():
            return PollReport(feed.id, feed.url, fetch.outcome, error="abandoned at shutdown")
        report = PollReport(
            feed_id=feed.id,
            url=feed.url,
            outcome=fetch.outcome,
            status=fetch.status,
            error=fetch.error,
            bytes_read=fetch.bytes_read,
            fetch_seconds=fetch.elapsed,
        )
        parsed: ParsedFeed | None = None
        body_hash: str | None = None
        if fetch.outcome is Outcome.OK and fetch.body is not None:
            body_hash = body_digest(fetch.body)
            if body_hash == feed.body_hash:
                report.outcome = Outcome.UNCHANGED
            else:
                parse_started = time.monotonic()
                try:
                    parsed = self.parser.parse(
                        fetch.body,
                        fetch.final_url or feed.url,
                        fetch.headers,
                        now,
                        self.store.known_hashes(feed.id),
                        features_for=self._backfill(feed),
                    )
                except ParseError as exc:
                    report.outcome, report.error = Outcome.PARSE_ERROR, str(exc)
                    body_hash = None
                except Exception as exc:
                    if self.aborted.is_set():  # the parse pool was stopped under us
                        return PollReport(feed.id, feed.url, fetch.outcome, error="abandoned at shutdown")
                    # Something in this document broke the parser (a bug of ours or
                    # feedparser's): it costs this document, recorded on the feed,
                    # and nothing else.
                    log.debug("feed <%s>: parser failure", feed.url, exc_info=True)
                    report.outcome = Outcome.PARSE_ERROR
                    report.error = f"could not parse this document ({type(exc).__name__}: {str(exc)[:200]})"
                    body_hash = None
                report.parse_seconds = time.monotonic() - parse_started
                report.warning = parsed.warning if parsed is not None else None
                report.parse_path = parsed.parse_path if parsed is not None else None
        if self.aborted.is_set():  # shutdown gave up on this poll while it parsed: write nothing
            return PollReport(feed.id, feed.url, fetch.outcome, error="abandoned at shutdown")
        shown = self._write(feed, fetch, parsed, body_hash, report, now)
        if self.metrics is not None:
            self.metrics.record(report)
        name = feed.configured_title or (parsed.title if parsed is not None else None) or feed.display_title
        self._log(name, feed, report, time.monotonic() - started)
        if feed.full_text and shown:
            self._full_texts(feed, name, shown)
        return report

    def _full_texts(self, feed: FeedState, name: str, articles: list[tuple[int, str]]) -> None:
        """`full_text: true` feeds: each new article shown gets its page read
        once (same politeness and limits as feeds), after the poll's own
        transaction; a failure keeps the feed's text and is recorded."""
        from aggregator import fulltext  # trafilatura only for feeds that ask for it
        from aggregator.sanitize import to_text

        origin_private = self.fetcher.policy.host_is_private(urlsplit(feed.url).hostname or "")
        for seq, url in articles[:MAX_FULL_TEXTS_PER_POLL]:
            if self.aborted.is_set():
                return
            result = fulltext.fetch_full_text(self.fetcher, url, origin_private)
            self.store.set_full_text(seq, result.content, to_text(result.content or "")[:20_000], result.error)
            if self.metrics is not None:
                self.metrics.full_texts.labels(outcome="ok" if result.content else "failed").inc()
            if result.error:
                log.warning("feed %r <%s>: full text of <%s>: %s", name, feed.url, url, result.error)
        if len(articles) > MAX_FULL_TEXTS_PER_POLL:
            log.info("feed %r <%s>: full text read for the newest %d of %d new articles", name, feed.url,
                     MAX_FULL_TEXTS_PER_POLL, len(articles))  # fmt: skip

    def _write(
        self,
        feed: FeedState,
        fetch: FetchResult,
        parsed: ParsedFeed | None,
        body_hash: str | None,
        report: PollReport,
        now: datetime,
    ) -> list[tuple[int, str]]:
        """One transaction: the entries, their stories and the feed's state.
        Returns (seq, link) of the new articles the outputs show."""
        shown: list[tuple[int, str]] = []
        with self.store.ingest(feed.id) as tx:
            # feeds/ may have changed the interval while this poll ran (a reload): the next poll follows the new one.
            feed = replace(feed, interval=tx.current_interval())
            if parsed is not None:
                if any(not e.unchanged for e in parsed.entries):
                    tx.serialize()
                plan = self._plan(tx, feed, parsed, now)
                shown = tx.apply(plan, self._stories(tx, feed, plan), now)
                report.counts = plan.counts
                for _key, rule in parsed.folded:
                    plan.counts.folded[rule] = plan.counts.folded.get(rule, 0) + 1
                if plan.reparse_needed:
                    body_hash = None
            with self._rng_lock:
                update = feed_changes(
                    feed, fetch, report.outcome, report.error, parsed, body_hash, report.counts, now, self.timing,
                    self.rng,
                )  # fmt: skip
            tx.write_feed(update)
        report.next_poll_at = update.next_poll_at
        return shown

    def _plan(self, tx: IngestTransaction, feed: FeedState, parsed: ParsedFeed, now: datetime) -> dedupe.Plan:
        """What the document's entries are (new, changed, known, duplicates):
        runs inside the write transaction, so undated entries get fallback
        dates no other poll of this process shares."""
        settings = self.config.settings
        undated = sum(1 for e in parsed.entries if e.published_at is None and e.updated_at is None)
        start = now.replace(microsecond=0)
        if self._fallback_floor is not None and start >= self._fallback_floor:
            start = self._fallback_floor - timedelta(seconds=1)
        plan = dedupe.plan(
            feed.id,
            parsed.entries,
            tx.existing(parsed.entries),
            now,
            self.authority,
            fallback_start=start,
            backfill=self._backfill(feed),
            expired_before=now - timedelta(days=settings.retention.days),
        )
        if undated:
            self._fallback_floor = start - timedelta(seconds=len(parsed.entries))
        rules = self._rules_for(feed)
        if rules:
            hide, subject = filters.hidden_by, filters.subject_of
            # A held article never reaches an output whatever the rules say (`filters apply` decides it again).
            plan.inserts = [
                i if i.held else replace(i, hidden_by=hide(subject(i.entry, i.entry.text), rules)) for i in plan.inserts
            ]
            plan.updates = [replace(u, hidden_by=hide(subject(u.entry, u.entry.text), rules)) for u in plan.updates]
        return plan

    def _backfill(self, feed: FeedState) -> int | None:
        """How many entries of this poll may reach the outputs: a new feed's backfill, else None (all)."""
        if feed.last_parsed_at is not None:
            return None
        return feed.backfill if feed.backfill is not None else self.config.settings.output.backfill

    def _rules_for(self, feed: FeedState) -> list[filters.RuleSet]:
        settings = self.config.settings
        return filters.applicable(settings.filters, self.tag_rules, self.feed_rules.get(feed.id), feed.tags)

    def _stories(self, tx: IngestTransaction, feed: FeedState, plan: dedupe.Plan) -> list[StoryPlan]:
        """Where each new article goes (DESIGN §4.6): an exact duplicate joins
        the story of the article it duplicates; any other joins the most
        similar story of another outlet within the window, or starts its own.
        Decided here, once, inside the article's own transaction."""
        stories = self.config.settings.stories
        if not plan.inserts:
            return []
        clustering = stories.enabled and feed.cluster
        desk = _StoryDesk(tx, self.cluster_settings, feed.id, clustering, self.parsed_profiles)
        return [desk.place(insert) for insert in plan.inserts]

    def _log(self, name: str, feed: FeedState, report: PollReport, seconds: float) -> None:
        if not log.isEnabledFor(logging.WARNING if report.outcome.is_error else logging.INFO):
            return
        if report.outcome.is_error:
            log.warning(
                "feed %r <%s>: %s: %s (errors in a row: %d; next poll %s)",
                name,
                feed.url,
                report.outcome.value,
                report.error,
                feed.error_count + 1,
                _when(report.next_poll_at),
            )
            return
        c = report.counts
        warning = f"; the document has problems: {report.warning}" if report.warning else ""
        log.info(
            "feed %r <%s>: %s%s: %d new, %d updated, %d duplicates (%.2fs; next poll %s)%s",
            name,
            feed.url,
            report.outcome.value,
            f" {report.status}" if report.status else "",
            c.new,
            c.updated,
            c.duplicates,
            seconds,
            _when(report.next_poll_at),
            warning,
        )

    def poll_many(
        self,
        feeds: Iterable[FeedState],
        workers: int | None = None,
        on_done: Callable[[PollReport], None] | None = None,
    ) -> list[PollReport]:
        """Poll feeds concurrently (fetch threads; parsing in the pool)."""
        feeds = list(feeds)
        reports: list[PollReport] = []
        workers = workers or self.config.settings.polling.workers
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(feeds) or 1)), thread_name_prefix="fetch") as pool:
            futures = {pool.submit(self.poll, feed): feed for feed in feeds}
            for future in as_completed(futures):
                feed = futures[future]
                try:
                    report = future.result()
                except Exception as exc:  # a store failure (disk full...): report it, keep going
                    log.error("feed %r <%s>: poll failed: %s", feed.display_title, feed.url, exc)
                    report = PollReport(feed.id, feed.url, Outcome.STORE_ERROR, error=f"poll failed: {exc}")
                reports.append(report)
                if on_done is not None:
                    on_done(report)
        return reports


class ParsedProfiles:
    """Story profiles already parsed, by story id and the stored JSON they
    were parsed from. The store's text is always read (so another poller's
    change is never missed); only parsing it again is saved, which was a
    fifth of clustering's time. Thread-safe."""

    SIZE = 4096  # about the stories of a busy 48-hour window; ~3 KB each

    def __init__(self) -> None:
        self._parsed: OrderedDict[str, tuple[str, cluster.StoryProfile]] = OrderedDict()
        self._lock = threading.Lock()

    def parse(self, story_id: str, text: str) -> cluster.StoryProfile:
        """Raises ValueError for a profile cluster cannot read."""
        with self._lock:
            known = self._parsed.get(story_id)
            if known is not None and known[0] == text:
                self._parsed.move_to_end(story_id)
                return known[1]
        profile = cluster.StoryProfile.from_json(text)
        with self._lock:
            self._parsed[story_id] = (text, profile)
            if len(self._parsed) > self.SIZE:
                self._parsed.popitem(last=False)
        return profile


class _StoryDesk:
    """One poll's story decisions. Profiles of the stories its articles
    join are kept as they change, so a second article of this feed never
    joins a story the first one just joined."""

    def __init__(
        self,
        tx: IngestTransaction,
        settings: cluster.ClusterSettings,
        feed_id: str,
        clustering: bool,
        parsed: ParsedProfiles,
    ):
        self.tx = tx
        self.settings = settings
        self.feed_id = feed_id
        self.clustering = clustering
        self.parsed = parsed
        self.profiles: dict[str, cluster.StoryProfile] = {}

    def place(self, insert: dedupe.Insert) -> StoryPlan:
        features = self._features(insert)
        newcomer = cluster.Newcomer(features, self.feed_id, insert.published_at) if features else None
        keys = cluster.index_keys(features, self.settings) if features and self.clustering else ()
        if insert.duplicate_story:
            profile = self._profiles([insert.duplicate_story]).get(insert.duplicate_story)
            joined = cluster.join_profile(profile, newcomer, self.settings) if profile and newcomer else None
            return self._joined(insert.duplicate_story, "same-url", 1.0, joined, keys, ())
        if newcomer is None or not self.clustering or insert.held is not None:
            # A held article (a new feed's backfill, or older than retention) never reaches an
            # output: it is its own story and is not indexed, so no later article joins it. This
            # is most of a new feed's first poll, and comparing it would be most of that poll's time.
            return FIRST_OF_STORY
        window = timedelta(seconds=self.settings.window)
        rows = self.tx.story_index_rows(
            keys, insert.published_at - window, insert.published_at + window, self.settings.max_key_articles
        )
        selection = cluster.select_candidates(rows, self.settings)
        profiles = self._profiles(selection.story_ids)
        candidates = [cluster.Candidate(sid, profiles[sid]) for sid in selection.story_ids if sid in profiles]
        decision = cluster.assign(newcomer, candidates, selection.key_counts, self.settings)
        if decision.story_id is not None:
            joined = cluster.join_profile(profiles[decision.story_id], newcomer, self.settings)
            return self._joined(decision.story_id, "similar", decision.score, joined, keys, decision.shared)
        profile = cluster.new_profile(newcomer, self.settings)
        return StoryPlan(None, "first", None, profile.to_json(), keys, ())

    def _joined(
        self,
        story_id: str,
        rule: str,
        score: float,
        profile: cluster.StoryProfile | None,
        keys: tuple[str, ...],
        why: tuple[str, ...],
    ) -> StoryPlan:
        if profile is not None:
            self.profiles[story_id] = profile
        return StoryPlan(story_id, rule, score, profile.to_json() if profile else None, keys, why)

    def _features(self, insert: dedupe.Insert) -> cluster.StoryFeatures | None:
        stored = insert.entry.story_features
        if stored is None:
            if insert.held is not None or not self.clustering:
                return None
            # Left out where it was parsed (a first poll's older entries), yet shown: computed here.
            e = insert.entry
            return cluster.features(e.title, e.text, e.language)
        try:
            return cluster.StoryFeatures.from_json(stored)
        except ValueError:
            return None

    def _profiles(self, story_ids: Iterable[str]) -> dict[str, cluster.StoryProfile]:
        wanted = list(story_ids)
        out = {sid: self.profiles[sid] for sid in wanted if sid in self.profiles}
        for sid, text in self.tx.story_profiles([s for s in wanted if s not in out]).items():
            try:
                out[sid] = self.parsed.parse(sid, text)
            except ValueError:
                continue  # a profile of an older FEATURES_VERSION: the story takes no newcomers
        return out


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "never (feed is gone)"


def cluster_settings(stories: StoriesSettings) -> cluster.ClusterSettings:
    return replace(cluster.DEFAULT_SETTINGS, window=stories.window, threshold=stories.threshold)


def profile_builder(settings: cluster.ClusterSettings) -> Callable[[Sequence[Article]], str | None]:
    """Rebuilds a story's profile from its articles (after a hand split or join)."""
    from aggregator.sanitize import to_text

    def build(articles: Sequence[Article]) -> str | None:
        members = [
            cluster.Newcomer(
                cluster.features(a.title, to_text(" ".join(p for p in (a.summary, a.content) if p)), a.language),
                a.feed_id,
                a.published_at or a.first_seen_at,
            )
            for a in articles
        ]
        profile = cluster.build_profile(members, settings)
        return profile.to_json() if profile else None

    return build


def make_parser(config: Config, feed_count: int) -> ParsePool:
    """The parser for a command: the fast path in the fetch threads, and
    feedparser in worker processes for the rest, so every document has a
    time limit (``parse_timeout``) and a feedparser crash costs only that
    document, whichever command parses it. One feed (``poll --feed``, ``feeds
    add``) gets one worker, started at the first document the fast path
    leaves to feedparser; starting it costs about 0.45 s once on a 2-core
    machine (a fresh interpreter importing the parser), the price of a
    command that cannot hang on a hostile document."""
    polling = config.settings.polling
    workers = 1 if feed_count <= 1 else polling.parse_workers
    return ParsePool(workers, polling.parse_timeout, polling.parse_recycle)
