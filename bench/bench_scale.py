"""Scale benchmark: the store at 10,000 feeds and 1,000,000 articles.

    pip install -e '.[bench]'
    python -m bench.bench_scale [--feeds 10000] [--articles 1000000] [--runs 3] [--keep /tmp/big.db]

1. Builds a database of synthetic feeds and articles directly through the
   store (the same insert path polling uses, FTS triggers included, but no
   HTTP or parsing), with realistic text sizes.
2. Ingest rate: a cold `aggregator poll` of the 200x50 feed farm into a copy
   of that database versus into an empty one, alternating, median of runs.
3. The time to rebuild /latest.atom (story query + render), all outputs, and
   all outputs after one new article (the service's case: only what changed
   is rendered again); the snapshot's size.
4. Database size per article.
5. The running daemon's memory (whole process tree, RSS and PSS) while it
   polls the farm on top of the big database.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil

from aggregator.config import load_config
from aggregator.subscriptions import feed_id_for
from aggregator.dedupe import Insert, Plan
from aggregator.model import FIRST_OF_STORY, Author, ParsedEntry, Subscription, utcnow
from aggregator.publish import Publisher
from aggregator.publish.atom import render_atom
from aggregator.store import SQLiteStore as Store
from aggregator.urls import canonical_url
from bench.feedfarm import FarmProcess, FarmSpec

WORDS = ("government minister police election economy market health court talks peace border security "
         "council climate storm energy prices report officials city country week year people").split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_database(path: Path, feeds: int, articles: int) -> float:
    """Fill a new database; returns seconds taken."""
    started = time.monotonic()
    store = Store(path)
    rng = random.Random(7)
    subs = [Subscription(feed_id_for(f"https://site{f}.example/feed.xml"), f"https://site{f}.example/feed.xml",
                         f"Site {f}", (f"tag{f % 40}",)) for f in range(feeds)]
    store.sync_subscriptions(subs, utcnow())
    per_feed = articles // feeds
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for f, sub in enumerate(subs):
        plan = Plan()
        for n in range(per_feed):
            link = f"https://site{f}.example/{2026}/{n}/{_text(rng, 3).replace(' ', '-')}"
            summary = f"<p>{_text(rng, 60)}</p>"
            content = f"<p>{_text(rng, 120)}</p><p>{_text(rng, 120)}</p>"
            when = base + timedelta(seconds=rng.randrange(0, 330 * 86400))
            entry = ParsedEntry(entry_key=link, key_rule="guid", content_hash=hashlib.sha256(link.encode()).hexdigest()[:32],
                                guid=link, url=link, canonical_url=canonical_url(link), title=_text(rng, 9).capitalize(),
                                authors=(Author(name=f"Writer {n % 17}"),), summary=summary, content=content,
                                categories=(rng.choice(WORDS),), published_at=when)
            plan.inserts.append(Insert(entry, link, None, when))
        with store.ingest(sub.feed_id) as tx:
            tx.apply(plan, [FIRST_OF_STORY] * len(plan.inserts), base + timedelta(days=330))
        if f % 1000 == 999:
            print(f"  {f + 1} feeds, {(f + 1) * per_feed:,} articles, {time.monotonic() - started:.0f}s", flush=True)
    store.close()
    return time.monotonic() - started


def add_article_and_rebuild(store: Store, publisher: Publisher, previous: object, n: int,
                            sources_every: float = 0.0) -> float:
    """Insert one new article into the first feed (as a poll would), then time the rebuild."""
    sub_id = feed_id_for("https://site0.example/feed.xml")
    link = f"https://site0.example/bench-rebuild/{n}/{time.time_ns()}"
    when = utcnow()
    entry = ParsedEntry(entry_key=link, key_rule="guid", content_hash=hashlib.sha256(link.encode()).hexdigest()[:32],
                        guid=link, url=link, canonical_url=canonical_url(link), title=f"Rebuild probe {n}",
                        summary="<p>A new article.</p>", published_at=when)
    plan = Plan()
    plan.inserts.append(Insert(entry, link, None, when))
    with store.ingest(sub_id) as tx:
        tx.apply(plan, [FIRST_OF_STORY], when)
    t = time.perf_counter()
    publisher.build(previous, sources_every=sources_every)  # type: ignore[arg-type]
    return time.perf_counter() - t


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def workdir(farm: FarmProcess, database: Path | None) -> Path:
    """A config + feeds/ for the farm, with a copy of the given database."""
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (work / "feeds").mkdir()
    shutil.copy(farm.feeds_yaml, work / "feeds" / "farm.yaml")
    (work / "config.yaml").write_text(f"database: bench.db\nhttp: {{port: {free_port()}}}\nlogging: {{level: warning}}\n")
    if database is not None:
        shutil.copy(database, work / "bench.db")
        # Subscribing the farm's feeds (and unsubscribing the synthetic ones) is
        # set-up, not ingest: do it before the clock starts.
        subprocess.run([sys.executable, "-m", "aggregator", "feeds", "list", "--json", "--config", str(work / "config.yaml")],
                       check=True, capture_output=True)
    return work


def timed_poll(work: Path) -> float:
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "aggregator", "poll", "--no-progress", "--config", str(work / "config.yaml")],
                         check=True, capture_output=True, text=True).stdout
    elapsed = time.monotonic() - started
    assert "Polled 200 feeds" in out and "0 failed" in out and "10000 new" in out, out
    return elapsed


def tree_memory(proc: psutil.Process) -> tuple[int, int]:
    rss = pss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            info = p.memory_full_info()
            rss += info.rss
            pss += info.pss
        except psutil.Error:
            pass
    return rss, pss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=10_000)
    parser.add_argument("--articles", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="build (or reuse) the big database at this path")
    args = parser.parse_args()
    big = args.keep or Path(tempfile.mkdtemp(prefix="bench-big-")) / "big.db"
    if not big.exists():
        print(f"building {big}: {args.feeds:,} feeds, {args.articles:,} articles", flush=True)
        built = build_database(big, args.feeds, args.articles)
        print(f"built in {built:.0f}s", flush=True)
    store = Store(big)
    articles = store._read("SELECT COUNT(*) FROM articles")[0][0]
    store.close()
    size = big.stat().st_size
    results: dict[str, list[float]] = {"empty": [], "big": []}
    with FarmProcess(FarmSpec(feeds=200, entries=50), Path(tempfile.mkdtemp(prefix="farm-"))) as farm:
        for _ in range(args.runs):
            for case in ("empty", "big"):
                work = workdir(farm, big if case == "big" else None)
                results[case].append(timed_poll(work))
                shutil.rmtree(work, ignore_errors=True)
        # The running daemon on the big database, polling the farm.
        work = workdir(farm, big)
        daemon = subprocess.Popen([sys.executable, "-m", "aggregator", "run", "--config", str(work / "config.yaml")],
                                  stderr=subprocess.DEVNULL)
        proc = psutil.Process(daemon.pid)
        samples = []
        end = time.monotonic() + 60
        while time.monotonic() < end:
            samples.append(tree_memory(proc))
            time.sleep(0.5)
        daemon.terminate()
        daemon.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)
    # Rebuild times on the big database.
    config = load_config(None)
    store = Store(big)
    latest_times, all_times = [], []
    for _ in range(10):
        t = time.perf_counter()
        stories = store.latest(100, 10)
        render_atom(stories, Publisher(store, config).latest_meta)
        latest_times.append(time.perf_counter() - t)
    for _ in range(3):
        t = time.perf_counter()
        snapshot = Publisher(store, config).build()
        all_times.append(time.perf_counter() - t)
    # The service's case: one publisher, a new article, a rebuild that renders only what changed.
    publisher = Publisher(store, config)
    snapshot = publisher.build()
    snapshot_bytes = sum(len(d.body) for d in snapshot.documents.values())
    pages = sum(1 for p in snapshot.documents if p.startswith(("sources/", "stories/", "archive")))
    change_times, service_times = [], []
    for n in range(3):
        change_times.append(add_article_and_rebuild(store, publisher, snapshot, n))
        # As the service builds: source and archive pages, costly here, follow at most every 30 s.
        service_times.append(add_article_and_rebuild(store, publisher, snapshot, 10 + n, sources_every=30))
    store.close()
    empty, loaded = statistics.median(results["empty"]), statistics.median(results["big"])
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    print(f"\nMachine: {model}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"Big database: {args.feeds:,} feeds, {articles:,} articles, {size / 2**30:.2f} GiB\n")
    print("| measure | value |\n| --- | ---: |")
    print(f"| cold poll 200x50 into an empty database (median of {args.runs}) | {empty:.2f} s = {10000 / empty:,.0f} articles/s |")
    print(f"| cold poll 200x50 into the {articles:,}-article database | {loaded:.2f} s = {10000 / loaded:,.0f} articles/s |")
    print(f"| ingest rate at {articles:,} articles / empty | {empty / loaded:.2f} |")
    print(f"| /latest.atom rebuild (100 stories: query + render), median of 10 | {1000 * statistics.median(latest_times):.1f} ms |")
    print(f"| all outputs rebuilt (Latest + 40 tags, 3 formats each, HTML, OPML), median of 3 | {1000 * statistics.median(all_times):.0f} ms |")
    print(f"| the snapshot: {len(snapshot.documents):,} documents ({pages:,} source, story and archive pages) | "
          f"{snapshot_bytes / 1e6:.1f} MB |")
    print(f"| rebuild after one new article (one publisher, renders only what changed), median of 3 | "
          f"{1000 * statistics.median(change_times):.0f} ms |")
    print(f"| the same as the service does it (source and archive pages follow within 30 s), median of 3 | "
          f"{1000 * statistics.median(service_times):.0f} ms |")
    print(f"| database size per article (FTS index included) | {size / articles:,.0f} bytes |")
    print(f"| daemon memory, peak RSS / PSS of the process tree | {max(r for r, _ in samples) / 2**20:.0f} MB / "
          f"{max(p for _, p in samples) / 2**20:.0f} MB |")
    print(f"| daemon memory after 60 s, RSS / PSS | {samples[-1][0] / 2**20:.0f} MB / {samples[-1][1] / 2**20:.0f} MB |")


if __name__ == "__main__":
    main()
