"""Prometheus metrics (served at /metrics by the daemon). A registry of our
own, so tests and several services in one process never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from aggregator.model import PollReport


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fetches = Counter("aggregator_fetches", "Feed fetches by outcome", ["outcome", "status"], registry=r)
        self.articles = Counter("aggregator_articles", "Entries seen, by what became of them", ["result"], registry=r)
        self.bytes = Counter("aggregator_fetched_bytes", "Bytes received from publishers (on the wire)", registry=r)
        self.fetch_seconds = Histogram(
            "aggregator_fetch_seconds",
            "Time to fetch one feed",
            registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.parse_seconds = Histogram(
            "aggregator_parse_seconds",
            "Time to parse and normalise one feed document",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
        )
        self.documents_parsed = Counter(
            "aggregator_documents_parsed",
            "Feed documents parsed, by the reader that parsed them (fast, feedparser, json)",
            ["path"],
            registry=r,
        )
        self.feeds_due = Gauge("aggregator_feeds_due", "Active feeds whose next poll time has come", registry=r)
        self.feeds_failing = Gauge("aggregator_feeds_failing", "Active feeds whose last poll failed", registry=r)
        self.feeds_active = Gauge("aggregator_feeds_active", "Feeds being polled", registry=r)
        self.full_texts = Counter(
            "aggregator_full_texts", "Article pages read for full text, by outcome", ["outcome"], registry=r
        )
        self.publishes = Counter("aggregator_publishes", "Times the outputs were rebuilt", registry=r)
        self.last_dispatch = Gauge(
            "aggregator_last_dispatch_timestamp_seconds", "When the dispatcher last ran", registry=r
        )
        self.last_publish = Gauge(
            "aggregator_last_publish_timestamp_seconds", "When the outputs were last rebuilt", registry=r
        )

    def record(self, report: PollReport) -> None:
        status = str(report.status) if report.status is not None else ""
        self.fetches.labels(outcome=report.outcome.value, status=status).inc()
        self.bytes.inc(report.bytes_read)
        self.fetch_seconds.observe(report.fetch_seconds)
        if report.parse_seconds:
            self.parse_seconds.observe(report.parse_seconds)
        if report.parse_path:
            self.documents_parsed.labels(path=report.parse_path).inc()
        counts = report.counts
        for result, n in (
            ("new", counts.new - counts.duplicates),
            ("duplicate", counts.duplicates),
            ("updated", counts.updated),
            ("unchanged", counts.unchanged),
            ("capped", counts.capped),
            ("backfilled", counts.backfilled),
        ):
            if n:
                self.articles.labels(result=result).inc(n)
        for rule, n in counts.folded.items():
            self.articles.labels(result=f"folded:{rule}").inc(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
