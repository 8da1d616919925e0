"""One poll of a feed, end to end: fetch, parse, identify, store (DESIGN §1).

The orchestration is thin. Fetching runs in threads; parsing runs in a pool
of worker processes (feedparser is CPU-bound Python, so processes are what
use more than one core); writing is one short transaction per feed. The
decisions (what changed on the feed, when to poll next, what is new) are
pure functions in policy.py, dedupe.py and ``feed_changes`` below.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aggregator import dedupe
from aggregator.config import Config, id_authority
from aggregator.fetch import Fetcher, FetchLimits
from aggregator.model import (
    FeedState,
    FeedStatus,
    FetchResult,
    IngestCounts,
    Outcome,
    ParsedFeed,
    ParseError,
    PollReport,
    utcnow,
)
from aggregator.policy import PollFacts, Timing, estimate_publish_interval, next_poll_at
from aggregator.store import Store

if TYPE_CHECKING:
    from aggregator.metrics import Metrics

log = logging.getLogger(__name__)

# A 301/308 target becomes the feed's URL after it served a valid feed this many polls in a row.
REDIRECT_CONFIRMATIONS = 2


# --- parsing in worker processes -------------------------------------------------------


class ParsePool:
    """feedparser in worker processes (pebble): a document that hangs the
    parser is killed at its timeout, one that crashes the worker costs only
    itself, and workers are replaced after ``recycle`` documents so memory
    cannot creep. pebble is used rather than concurrent.futures because it
    kills exactly the worker that overran and tells us which task it was."""

    def __init__(self, workers: int = 0, timeout: float = 30, recycle: int = 200):
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout
        self.recycle = recycle
        self._pool: Any = None  # started on the first document: a poll where nothing changed needs none
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
                context.set_forkserver_preload(["aggregator.parse"])
                self._pool = pebble.ProcessPool(max_workers=self.workers, max_tasks=self.recycle, context=context)
            return self._pool

    def parse(self, body: bytes, url: str, headers: dict[str, str], now: datetime, known: dict[str, str]) -> ParsedFeed:
        import pebble

        from aggregator.parse import parse_document

        future = self._started().schedule(parse_document, args=(body, url, headers, now, known), timeout=self.timeout)
        try:
            parsed: ParsedFeed = future.result()
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
    input. Only parse_document's cooperative time limit applies (between
    normalisation steps, each linear in its capped input): feedparser itself
    cannot be interrupted in-process, so a document that hangs it hangs the
    caller. Commands parse through make_parser, which has a hard limit."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout

    def parse(self, body: bytes, url: str, headers: dict[str, str], now: datetime, known: dict[str, str]) -> ParsedFeed:
        from aggregator.parse import parse_document  # feedparser is imported only when a body needs parsing

        return parse_document(body, url, headers, now, known, time_limit=self.timeout)

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
) -> dict[str, Any]:
    """The feed-state columns one poll changes."""
    fields: dict[str, Any] = {"last_fetch_at": now, "last_status": fetch.status, "last_outcome": outcome.value}
    failed = outcome.is_error
    error_count = feed.error_count + 1 if failed else 0
    fields["error_count"] = error_count
    fields["last_error"] = error if failed else None
    if body_hash is None and fetch.status == 200:
        # The body was not taken in full (it did not parse, or an edit was held
        # back): forget the validators, so the next poll fetches it again
        # rather than being told "not modified".
        fields["etag"] = fields["last_modified"] = None
    elif fetch.etag or fetch.last_modified or fetch.status in (200, 304):
        # Validators exactly as received, from every 200 and 304; a 304 that
        # omits one keeps the one we had.
        if fetch.status == 200:
            fields["etag"], fields["last_modified"] = fetch.etag, fetch.last_modified
        elif fetch.status == 304:
            fields["etag"] = fetch.etag or feed.etag
            fields["last_modified"] = fetch.last_modified or feed.last_modified
    if body_hash is not None:
        fields["body_hash"] = body_hash
    publish_interval = feed.publish_interval
    if parsed is not None:
        fields.update(
            title=parsed.title or feed.title,
            site_url=parsed.site_url or feed.site_url,
            self_url=parsed.self_url,
            language=parsed.language,
            updated_at=parsed.updated_at,
            ttl=parsed.ttl,
            last_parsed_at=now,
        )
        estimate = estimate_publish_interval(e.published_at for e in parsed.entries)
        if estimate is not None:
            publish_interval = fields["publish_interval"] = estimate
    if counts.new:
        fields["last_new_at"] = now
    fields.update(_redirect_changes(feed, fetch, failed))
    if outcome is Outcome.GONE:
        fields["status"] = FeedStatus.GONE
    elif not failed and feed.status is FeedStatus.GONE:
        fields["status"] = FeedStatus.ACTIVE  # polled by hand (`poll --feed`) and it is back
    facts = PollFacts(
        outcome=outcome,
        error_count=error_count,
        max_age=fetch.max_age,
        ttl=parsed.ttl if parsed is not None else feed.ttl,
        retry_after=fetch.retry_after,
    )
    fields["next_poll_at"] = next_poll_at(now, facts, timing, feed.interval, publish_interval, rng)
    fields["retry_after"] = fields["next_poll_at"] if fetch.retry_after is not None else None
    return fields


def _redirect_changes(feed: FeedState, fetch: FetchResult, failed: bool) -> dict[str, Any]:
    """301/308: adopt the new URL only once it has served a valid feed on
    REDIRECT_CONFIRMATIONS polls in a row. 302/303/307 never change it."""
    target = fetch.permanent_redirect
    if not target or failed:
        return {"redirect_url": None, "redirect_seen": 0} if feed.redirect_url else {}
    seen = feed.redirect_seen + 1 if feed.redirect_url == target else 1
    if seen >= REDIRECT_CONFIRMATIONS:
        log.info(
            "%s: moved permanently to %s (confirmed on %d polls); polling the new URL from now on",
            feed.url,
            target,
            seen,
        )
        return {"url": target, "redirect_url": None, "redirect_seen": 0}
    return {"redirect_url": target, "redirect_seen": seen}


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
        self.fetcher = Fetcher(FetchLimits.from_settings(settings.polling))
        self.parser = parser or InlineParser()
        self.metrics = metrics
        self.timing = Timing.from_settings(settings.polling)
        self.authority = id_authority(settings.http.public_base_url)
        self.rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self.clock = clock
        self.aborted = threading.Event()  # shutdown gave up on fetches in flight

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
        limits = FetchLimits.from_settings(settings.polling)
        if limits != self.fetcher.limits:
            self.fetcher = Fetcher(limits)  # the old one's keep-alive connections just time out

    def close(self) -> None:
        self.fetcher.close()
        self.parser.close()

    def poll(self, feed: FeedState) -> PollReport:
        """Fetch, parse and store one feed. Never raises for anything a
        feed or its server does; store failures (disk full) do raise."""
        started = time.monotonic()
        fetch = self.fetcher.fetch(feed.url, feed.etag, feed.last_modified)
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
                        fetch.body, fetch.final_url or feed.url, fetch.headers, now, self.store.known_hashes(feed.id)
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
        if self.aborted.is_set():  # shutdown gave up on this poll while it parsed: write nothing
            return PollReport(feed.id, feed.url, fetch.outcome, error="abandoned at shutdown")
        self._write(feed, fetch, parsed, body_hash, report, now)
        if self.metrics is not None:
            self.metrics.record(report)
        name = feed.configured_title or (parsed.title if parsed is not None else None) or feed.display_title
        self._log(name, feed, report, time.monotonic() - started)
        return report

    def _write(
        self,
        feed: FeedState,
        fetch: FetchResult,
        parsed: ParsedFeed | None,
        body_hash: str | None,
        report: PollReport,
        now: datetime,
    ) -> None:
        with self.store.ingest(feed.id) as tx:
            if parsed is not None:
                existing = tx.existing(parsed.entries)
                plan = dedupe.plan(feed.id, parsed.entries, existing, now, self.authority)
                tx.apply(plan, now)
                report.counts = plan.counts
                for _key, rule in parsed.folded:
                    plan.counts.folded[rule] = plan.counts.folded.get(rule, 0) + 1
                if plan.reparse_needed:
                    body_hash = None
            with self._rng_lock:
                fields = feed_changes(
                    feed,
                    fetch,
                    report.outcome,
                    report.error,
                    parsed,
                    body_hash,
                    report.counts,
                    now,
                    self.timing,
                    self.rng,
                )
            visible = parsed is not None and (parsed.title != feed.title or parsed.site_url != feed.site_url)
            tx.update_feed(fields, content_visible=visible or "url" in fields or report.outcome is Outcome.GONE)
        report.next_poll_at = fields["next_poll_at"]

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


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "never (feed is gone)"


def make_parser(config: Config, feed_count: int) -> ParsePool:
    """The parser for a command: worker processes, so every document has a
    hard time limit (``parse_timeout``) and a parser crash costs only that
    document, whichever command parses it. One feed (``poll --feed``, ``feeds
    add``) gets one worker, started at the first document that needs parsing
    (a 304 or an unchanged body needs none); starting it costs about 0.45 s
    once on a 2-core machine (a fresh interpreter importing the parser), the
    price of a command that cannot hang on a hostile document."""
    polling = config.settings.polling
    workers = 1 if feed_count <= 1 else polling.parse_workers
    return ParsePool(workers, polling.parse_timeout, polling.parse_recycle)
