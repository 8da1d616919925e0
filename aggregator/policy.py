"""When to poll a feed next (DESIGN §5). Pure functions of what the last
poll said; the randomness for jitter is passed in."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aggregator.model import FeedState, Outcome

if TYPE_CHECKING:
    from aggregator.config import PollingSettings


@dataclass(frozen=True)
class Timing:
    interval: float  # global default, seconds
    min_interval: float  # floor
    max_interval: float  # ceiling
    jitter: float = 0.1  # +/- fraction
    adaptive: bool = True
    retry_after_max: float | None = None  # cap on Retry-After; default max_interval

    @classmethod
    def from_settings(cls, polling: PollingSettings) -> Timing:
        return cls(
            interval=polling.interval,
            min_interval=polling.min_interval,
            max_interval=polling.max_interval,
            jitter=polling.jitter,
            adaptive=polling.adaptive,
            retry_after_max=polling.retry_after_max,
        )

    def clamp(self, seconds: float) -> float:
        return max(self.min_interval, min(self.max_interval, seconds))


def estimate_publish_interval(dates: Iterable[datetime | None]) -> float | None:
    """Median gap between the newest (up to 20) distinct entry dates, or
    None when there are fewer than 3 dates to go on."""
    distinct = sorted({d for d in dates if d is not None}, reverse=True)[:20]
    if len(distinct) < 3:
        return None
    gaps = [(a - b).total_seconds() for a, b in itertools.pairwise(distinct)]
    return max(1.0, statistics.median(gaps))


def regular_interval(t: Timing, feed_interval: float | None, publish_interval: float | None) -> float:
    """The interval between successful polls: the feed's own setting if it
    has one; else, once we know how often it publishes, half that gap (so a
    story waits a quarter of a gap on average); else the global interval.
    Always within floor and ceiling."""
    if feed_interval is not None:
        return t.clamp(feed_interval)
    if t.adaptive and publish_interval is not None:
        return t.clamp(publish_interval / 2)
    return t.clamp(t.interval)


def backoff_interval(t: Timing, regular: float, error_count: int) -> float:
    """Exponential backoff after consecutive errors, up to the ceiling."""
    exponent = max(0, min(error_count - 1, 30))
    return min(t.max_interval, regular * (2.0**exponent))


def with_jitter(seconds: float, t: Timing, rng: random.Random) -> float:
    if t.jitter <= 0:
        return seconds
    return seconds * (1 + rng.uniform(-t.jitter, t.jitter))


@dataclass(frozen=True)
class PollFacts:
    """What the last poll said, as far as timing goes."""

    outcome: Outcome
    error_count: int = 0  # consecutive errors including this one
    max_age: float | None = None  # Cache-Control max-age / Expires, seconds
    ttl: float | None = None  # RSS <ttl>, seconds
    retry_after: float | None = None  # seconds


def next_poll_at(
    now: datetime,
    facts: PollFacts,
    t: Timing,
    feed_interval: float | None,
    publish_interval: float | None,
    rng: random.Random,
) -> datetime | None:
    """None means: do not poll again (410 Gone)."""
    if facts.outcome is Outcome.GONE:
        return None
    regular = regular_interval(t, feed_interval, publish_interval)
    if facts.outcome.is_error:
        delay = with_jitter(backoff_interval(t, regular, facts.error_count), t, rng)
        ceiling = t.max_interval
        if facts.retry_after is not None:
            cap = t.retry_after_max if t.retry_after_max is not None else t.max_interval
            delay = max(delay, min(facts.retry_after, cap))
            ceiling = max(ceiling, cap)  # a server's Retry-After may go past the ceiling, up to its own cap
        # Jitter never takes a feed below its floor or above the ceiling.
        return now + timedelta(seconds=min(max(delay, t.min_interval), ceiling))
    delay = with_jitter(regular, t, rng)
    # A server that says "this will not change for N seconds" is believed, up to the ceiling.
    for hint in (facts.max_age, facts.ttl):
        if hint is not None:
            delay = max(delay, min(hint, t.max_interval))
    return now + timedelta(seconds=max(t.min_interval, min(delay, t.max_interval)))


def after_interval_change(feed: FeedState, t: Timing, now: datetime) -> datetime | None:
    """A feed's next poll once its interval was changed in feeds/: one
    regular interval after its last fetch (not before now), so the change
    applies at once instead of after the old interval ran out. A feed in
    backoff keeps its backoff; a feed never fetched stays due."""
    if feed.next_poll_at is None or feed.error_count or feed.last_fetch_at is None:
        return feed.next_poll_at
    regular = regular_interval(t, feed.interval, feed.publish_interval)
    return max(now, feed.last_fetch_at + timedelta(seconds=regular))
