"""Polling decisions as pure functions: interval, floor, ceiling, jitter,
adaptation, cache hints, Retry-After, backoff, 410, redirect adoption."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from aggregator.ingest import feed_changes
from aggregator.model import FeedPollUpdate, FeedState, FeedStatus, FetchResult, IngestCounts, Outcome, ParsedEntry, ParsedFeed
from aggregator.policy import PollFacts, Timing, backoff_interval, estimate_publish_interval, next_poll_at, regular_interval

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
T = Timing(interval=1800, min_interval=600, max_interval=86400, jitter=0.1)
EXACT = Timing(interval=1800, min_interval=600, max_interval=86400, jitter=0)


def delay(facts: PollFacts, t: Timing = EXACT, feed_interval: float | None = None,
          publish_interval: float | None = None, seed: int = 1) -> float | None:
    when = next_poll_at(NOW, facts, t, feed_interval, publish_interval, random.Random(seed))
    return None if when is None else (when - NOW).total_seconds()


def test_interval_floor_and_ceiling() -> None:
    assert delay(PollFacts(Outcome.OK)) == 1800
    assert delay(PollFacts(Outcome.OK), feed_interval=60) == 600  # floor
    assert delay(PollFacts(Outcome.OK), feed_interval=3600) == 3600
    assert delay(PollFacts(Outcome.OK), feed_interval=10 * 86400) == 86400  # ceiling


def test_jitter_spreads_polls_within_bounds() -> None:
    delays = [delay(PollFacts(Outcome.OK), T, seed=s) for s in range(200)]
    assert min(delays) >= 1620 and max(delays) <= 1980  # +/- 10%
    assert len(set(delays)) > 100


def test_adapts_to_how_often_the_feed_publishes() -> None:
    hourly = [NOW - timedelta(hours=h) for h in range(10)]
    weekly = [NOW - timedelta(days=7 * w) for w in range(5)]
    busy = [NOW - timedelta(minutes=2 * m) for m in range(20)]
    assert estimate_publish_interval(hourly) == 3600
    assert estimate_publish_interval(hourly[:2]) is None  # not enough to go on
    assert regular_interval(EXACT, None, estimate_publish_interval(hourly)) == 1800
    assert regular_interval(EXACT, None, estimate_publish_interval(weekly)) == 86400  # ceiling
    assert regular_interval(EXACT, None, estimate_publish_interval(busy)) == 600  # floor
    assert regular_interval(EXACT, 7200, estimate_publish_interval(busy)) == 7200  # an explicit interval wins
    no_adapt = Timing(1800, 600, 86400, 0, adaptive=False)
    assert regular_interval(no_adapt, None, 60.0) == 1800


def test_cache_hints_are_honoured_up_to_the_ceiling() -> None:
    assert delay(PollFacts(Outcome.OK, max_age=7200)) == 7200
    assert delay(PollFacts(Outcome.NOT_MODIFIED, max_age=60)) == 1800  # shorter than the interval: interval wins
    assert delay(PollFacts(Outcome.OK, ttl=3 * 3600)) == 3 * 3600
    assert delay(PollFacts(Outcome.OK, max_age=30 * 86400)) == 86400


def test_retry_after_is_honoured_and_capped() -> None:
    assert delay(PollFacts(Outcome.RATE_LIMITED, error_count=1, retry_after=5400)) == 5400
    assert delay(PollFacts(Outcome.RATE_LIMITED, error_count=1, retry_after=90 * 86400)) == 86400
    capped = Timing(1800, 600, 86400, 0, retry_after_max=3600)
    assert delay(PollFacts(Outcome.RATE_LIMITED, error_count=1, retry_after=7200), capped) == 3600
    assert delay(PollFacts(Outcome.RATE_LIMITED, error_count=1, retry_after=1)) == 1800  # not before the backoff


def test_backoff_grows_and_never_disables() -> None:
    delays = [delay(PollFacts(Outcome.HTTP_ERROR, error_count=n)) for n in range(1, 12)]
    assert delays[:6] == [1800, 3600, 7200, 14400, 28800, 57600]
    assert delays[-1] == 86400  # stays at the ceiling, never None
    assert backoff_interval(EXACT, 1800, 1000) == 86400


def test_gone_stops_polling() -> None:
    assert delay(PollFacts(Outcome.GONE, error_count=1)) is None


def _feed(**kw: object) -> FeedState:
    return FeedState(id="f", url="http://old.example/feed", configured_url="http://old.example/feed", **kw)  # type: ignore[arg-type]


def _changes(feed: FeedState, fetch: FetchResult, outcome: Outcome = Outcome.OK) -> FeedPollUpdate:
    parsed = ParsedFeed(title="T", entries=[ParsedEntry("k", "guid", "h")]) if not outcome.is_error else None
    return feed_changes(feed, fetch, outcome, None, parsed, "hash", IngestCounts(), NOW, EXACT, random.Random(1))


def test_permanent_redirect_adopted_after_two_valid_polls() -> None:
    fetch = FetchResult(url="http://old.example/feed", outcome=Outcome.OK, status=200, permanent_redirect="https://new.example/feed")
    first = _changes(_feed(), fetch)
    assert first.redirect_url == "https://new.example/feed" and first.redirect_seen == 1 and first.url is None
    second = _changes(_feed(redirect_url="https://new.example/feed", redirect_seen=1), fetch)
    assert second.url == "https://new.example/feed" and second.redirect_url is None


def test_redirect_streak_resets() -> None:
    pending = _feed(redirect_url="https://new.example/feed", redirect_seen=1)
    no_redirect = FetchResult(url="http://old.example/feed", outcome=Outcome.OK, status=200)
    assert _changes(pending, no_redirect).redirect_seen == 0
    failed = FetchResult(url="http://old.example/feed", outcome=Outcome.HTTP_ERROR, status=500,
                         permanent_redirect="https://new.example/feed")
    changes = _changes(pending, failed, Outcome.HTTP_ERROR)
    assert changes.redirect_seen == 0 and changes.url is None
    elsewhere = FetchResult(url="http://old.example/feed", outcome=Outcome.OK, status=200, permanent_redirect="https://other.example/")
    assert _changes(pending, elsewhere).redirect_seen == 1  # a different target starts over


def test_validators_and_errors_on_the_feed() -> None:
    fetch = FetchResult(url="u", outcome=Outcome.NOT_MODIFIED, status=304, etag=None, last_modified="Mon, 01 Jun 2026 10:00:00 GMT")
    changes = feed_changes(_feed(etag='"e"', error_count=3, last_error="x"), fetch, Outcome.NOT_MODIFIED, None, None,
                           None, IngestCounts(), NOW, EXACT, random.Random(1))
    assert changes.etag == '"e"' and changes.last_modified == "Mon, 01 Jun 2026 10:00:00 GMT"
    assert changes.error_count == 0 and changes.last_error is None
    gone = FetchResult(url="u", outcome=Outcome.GONE, status=410)
    changes = feed_changes(_feed(), gone, Outcome.GONE, "HTTP 410 Gone", None, None, IngestCounts(), NOW, EXACT, random.Random(1))
    assert changes.status is FeedStatus.GONE and changes.next_poll_at is None and changes.error_count == 1


def test_health_needs_a_running_scheduler_and_a_recent_dispatch() -> None:
    from aggregator.service import polling_is_alive

    assert polling_is_alive(True, 1000.0, 1004.0, 5)
    assert not polling_is_alive(False, 1000.0, 1004.0, 5)  # scheduler stopped
    assert not polling_is_alive(True, None, 1004.0, 5)  # never dispatched
    assert not polling_is_alive(True, 1000.0, 1031.0, 5)  # stalled for over 30 s
    assert polling_is_alive(True, 1000.0, 1050.0, 10)  # 6 ticks of 10 s
