"""Which feed is polled when (DESIGN §5): APScheduler 3 runs a dispatcher
job every few seconds; it reads the due feeds from the database
(``next_poll_at <= now``) and hands them to a bounded pool of fetch workers,
never more than ``per_host`` at once to one host. ``next_poll_at`` lives in
the database, so a restart resumes the schedule instead of polling
everything at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerThreads
from apscheduler.schedulers.background import BackgroundScheduler

from aggregator.ingest import Poller
from aggregator.logs import log_failure
from aggregator.metrics import Metrics
from aggregator.model import FeedState, PollReport, utcnow
from aggregator.policy import backoff_interval
from aggregator.store import LeaseLost, Store
from aggregator.store.feeds import host_of

log = logging.getLogger(__name__)


CLAIM_ROUNDS = 10  # claims per fill: a host at its limit gives its feeds back and the next round skips it


def _host(url: str) -> str:
    return host_of(url)


class Dispatcher:
    def __init__(
        self,
        store: Store,
        poller: Poller,
        workers: int,
        per_host: int,
        every: float,
        on_polled: Callable[[PollReport | None], None],
        metrics: Metrics | None = None,
        retention_days: float | None = None,
        retention_batch: int = 500,
        lease: float = 60.0,
    ):
        self.store = store
        self.poller = poller
        self.workers = workers
        self.per_host = per_host
        self.every = every
        self.on_polled = on_polled  # after every poll (and retention): the publisher decides what changed
        self.metrics = metrics
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch")
        self._lock = threading.Lock()
        self._fill_lock = threading.Lock()  # one selection of due feeds at a time
        self._stopping = threading.Event()
        self._in_flight: dict[str, str] = {}  # feed id -> host
        # Feeds whose poll could not be stored (disk full...): the database
        # could not record their next poll, so the backoff is kept here.
        self._held: dict[str, tuple[float, int]] = {}  # feed id -> (retry at, monotonic; failures in a row)
        self.last_dispatch: float | None = None  # time.time()
        self.last_poll: float | None = None
        self.health: dict[str, int] = {}
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            # One thread for the dispatcher: it is quick, and two at once would
            # race for the same due feeds. Retention gets its own, so a long
            # first clean-up never holds up polling.
            executors={"default": SchedulerThreads(1), "maintenance": SchedulerThreads(1)},
            job_defaults={
                "coalesce": True,  # after a stall, run once, not once per missed tick
                "max_instances": 1,  # never two dispatchers at once
                # A tick that starts late is still worth running, but not one
                # from long ago (e.g. after the machine slept): the next comes soon.
                "misfire_grace_time": max(1, int(every * 2)),
            },
        )
        self.scheduler.add_job(self.dispatch, "interval", seconds=every, id="dispatch", next_run_time=None)
        self.lease = lease
        self.scheduler.add_job(self.renew, "interval", seconds=max(1.0, lease / 3), id="renew", executor="maintenance")
        self.retention_days = retention_days
        self.retention_batch = retention_batch
        if retention_days:
            self.scheduler.add_job(
                self.retention,
                "interval",
                hours=6,
                id="retention",
                executor="maintenance",
                next_run_time=utcnow() + timedelta(minutes=1),
                misfire_grace_time=3600,
            )

    def reconfigure(self, per_host: int, every: float, retention_days: float, retention_batch: int) -> None:
        """New settings after a reload."""
        self.per_host = per_host
        self.retention_days = retention_days
        self.retention_batch = retention_batch
        if every != self.every:
            self.every = every
            self.scheduler.reschedule_job("dispatch", trigger="interval", seconds=every)

    def retention(self) -> None:
        """Delete articles older than the retention period, a batch per
        transaction with a pause between, so polling keeps writing."""
        assert self.retention_days
        if not self.store.try_job("retention"):
            return  # another node of the cluster does it
        now = utcnow()
        try:
            result = self.store.delete_older_than(
                now - timedelta(days=self.retention_days),
                self.retention_batch,
                now,
                pause=0.05,
                stop=self._stopping.is_set,
            )
            # Tombstones outlive the entries by far: feeds drop old entries within days.
            purged = self.store.purge_tombstones(now - timedelta(days=self.retention_days * 4))
            if result.deleted or purged:
                log.info(
                    "retention: deleted %d articles older than %g days in %d batches; %d old tombstones purged",
                    result.deleted,
                    self.retention_days,
                    result.batches,
                    purged,
                )
                self.on_polled(None)
        except Exception:
            log_failure(log, "retention failed; it runs again in 6 hours")

    def start(self) -> None:
        self.scheduler.start()
        # First tick right away rather than one interval from now.
        self.scheduler.modify_job("dispatch", next_run_time=utcnow())

    @property
    def alive(self) -> bool:
        return bool(self.scheduler.running)

    def in_flight(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def dispatch(self) -> None:
        """The scheduler's tick: hand due feeds to free workers, refresh the
        health figures. Runs in the scheduler's thread."""
        now = utcnow()
        try:
            self._fill()
            self.health = self.store.feed_health(now)
            if self.metrics is not None:
                self.metrics.feeds_due.set(self.health["due"])
                self.metrics.feeds_failing.set(self.health["failing"])
                self.metrics.feeds_active.set(self.health["active"])
                self.metrics.last_dispatch.set(time.time())
            self.last_dispatch = time.time()
        except Exception:
            log_failure(log, "dispatcher: could not read due feeds; will retry")

    def _fill(self) -> None:
        """Give every free worker a due feed whose host is below its limit,
        claimed with a lease so no other poller of the database takes it.
        Called by the tick and whenever a poll finishes, so a slot never
        waits for the next tick."""
        if self._stopping.is_set():
            return
        with self._fill_lock:
            with self._lock:
                free = self.workers - len(self._in_flight)
                moment = time.monotonic()
                held = {fid for fid, (until, _) in self._held.items() if until > moment}
                per_host = Counter(self._in_flight.values())
            now = utcnow()
            for _ in range(CLAIM_ROUNDS):
                if free <= 0:
                    return
                full = {host for host, n in per_host.items() if n >= self.per_host}
                claimed = self.store.claim_due(self.store.node, now, free, self.lease, skip_hosts=full)
                if not claimed:
                    return
                giving_back = []
                for feed in claimed:
                    host = _host(feed.url)
                    if feed.id in held or per_host[host] >= self.per_host or free <= 0:
                        giving_back.append(feed.id)  # its host is at its limit here: another time, or another poller
                        continue
                    per_host[host] += 1
                    free -= 1
                    self._submit(feed, host)
                if giving_back:
                    self.store.release_leases(self.store.node, giving_back)
                if len(giving_back) == len(claimed):
                    return

    def renew(self) -> None:
        """Polls running long keep their feeds (every third of a lease)."""
        with self._lock:
            running = list(self._in_flight)
        try:
            self.store.renew_leases(self.store.node, running, utcnow() + timedelta(seconds=self.lease))
        except Exception:
            log_failure(log, "dispatcher: could not renew the leases of the polls in flight; retrying")

    def _submit(self, feed: FeedState, host: str) -> None:
        with self._lock:
            self._in_flight[feed.id] = host
        self.pool.submit(self._poll, feed)

    def _poll(self, feed: FeedState) -> PollReport | None:
        try:
            report = self.poller.poll(feed)
        except LeaseLost:
            log.warning("feed %r <%s>: another poller took it over (this poll ran past its lease); not stored",
                        feed.display_title, feed.url)  # fmt: skip
            return None
        except Exception as exc:
            with self._lock:
                failures = self._held.get(feed.id, (0.0, 0))[1] + 1
                timing = self.poller.timing
                delay = backoff_interval(timing, timing.clamp(feed.interval or timing.interval), failures)
                self._held[feed.id] = (time.monotonic() + delay, failures)
            log.error(
                "feed %r <%s>: could not be stored (%s: %s); trying again in %gs",
                feed.display_title,
                feed.url,
                type(exc).__name__,
                exc,
                delay,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return None
        finally:
            with self._lock:
                self._in_flight.pop(feed.id, None)
        with self._lock:
            self._held.pop(feed.id, None)
        if self.poller.aborted.is_set():
            return None
        self.last_poll = time.time()
        self.on_polled(report)
        try:
            self._fill()
        except Exception:
            log_failure(log, "dispatcher: could not read due feeds; the next tick retries")
        return report

    def stop(self, timeout: float) -> int:
        """Stop dispatching, give fetches in flight ``timeout`` seconds, then
        abandon them (their feeds stay due and are polled after restart).
        Returns the number abandoned."""
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        deadline = time.monotonic() + timeout
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        abandoned = self.in_flight()
        if abandoned:
            self.poller.abort_fetches()
            end = time.monotonic() + 2
            while self.in_flight() and time.monotonic() < end:
                time.sleep(0.05)
        self.pool.shutdown(wait=False, cancel_futures=True)
        try:  # feeds whose polls were abandoned are free again at once, not after the lease
            self.store.release_leases(self.store.node)
        except Exception:
            log_failure(log, "dispatcher: could not release this poller's leases; they expire by themselves")
        return abandoned
