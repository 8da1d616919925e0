"""Scale benchmark: the store at 10,000 feeds and 1,000,000 articles.

    pip install -e '.[bench]'
    python -m bench.bench_scale [--feeds 10000] [--articles 1000000] [--runs 3] [--keep /tmp/big.db]

1. Builds a database of synthetic feeds and articles directly through the
   store (the same insert path polling uses, FTS triggers included, but no
   HTTP or parsing), with realistic text sizes.
   Each article is indexed for story clustering as ingest would index it
   (its terms from a Zipf-distributed vocabulary of 20,000 words, so that
   keys are as selective as in real news), the newest ending now, so the
   farm's articles meet ~12,000 stored articles in their 48-hour window.
2. Ingest rate: a cold `aggregator poll` of the 200x50 feed farm into a copy
   of that database versus into an empty one, alternating, median of runs;
   each with story clustering off and on (its cost at 1,000,000 articles),
   and into the empty database with 200 filter rules and 20 saved searches
   (the controls' cost).
   A saved-search feed's rebuild (query + render) at 1,000,000 articles.
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
import itertools
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
from datetime import datetime, timedelta
from pathlib import Path

import psutil

from aggregator import cluster
from aggregator.config import load_config
from aggregator.dedupe import Insert, Plan
from aggregator.model import FIRST_OF_STORY, Author, ParsedEntry, StoryPlan, Subscription, utcnow
from aggregator.publish import Publisher
from aggregator.publish.atom import render_atom
from aggregator.publish.common import fit
from aggregator.sanitize import to_text
from aggregator.store import SQLiteStore as Store
from aggregator.subscriptions import feed_id_for
from aggregator.urls import canonical_url
from bench.feedfarm import WORDS as FARM_WORDS
from bench.feedfarm import FarmProcess, FarmSpec

WORDS = ["government", "minister", "police", "election", "economy", "market", "health", "court", "talks", "peace", "border", "security", "council", "climate", "storm", "energy", "prices", "report", "officials", "city", "country", "week", "year", "people"]
# News text is Zipf-distributed: a few words everywhere, most words rare. Pseudo-words keep it language-neutral.
VOCABULARY = [f"{a}{b}{c}" for a in ("ka", "lo", "mi", "su", "te", "ra", "no", "vi", "de", "pa")
              for b in ("ber", "ton", "lin", "mar", "sak", "dor", "vel", "quin", "gar", "hul")
              for c in ("a", "o", "is", "en", "um", "ar", "ik", "os", "et", "ul", "an", "ir", "ez", "ov", "ut",
                        "am", "el", "ix", "on", "yr")]  # 2,000 here; times ten below
VOCABULARY = [f"{w}{s}" for w in VOCABULARY for s in ("", "ri", "sta", "mon", "dal", "vek", "tor", "lis", "pen", "gu")]
ZIPF = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(VOCABULARY))))


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(VOCABULARY, cum_weights=ZIPF, k=words))


def build_database(path: Path, feeds: int, articles: int) -> float:
    """Fill a new database; returns seconds taken."""
    started = time.monotonic()
    store = Store(path)
    store._wconn.execute("PRAGMA cache_size = -1000000")  # building, not measuring: 1 GB of page cache
    rng = random.Random(7)
    subs = [Subscription(feed_id_for(f"https://site{f}.example/feed.xml"), f"https://site{f}.example/feed.xml",
                         f"Site {f}", (f"tag{f % 40}",)) for f in range(feeds)]
    store.sync_subscriptions(subs, utcnow())
    per_feed = articles // feeds
    end = utcnow().replace(microsecond=0)
    base = end - timedelta(days=330)
    filled = {r[0] for r in store._read("SELECT id FROM feeds WHERE article_count > 0")}  # an interrupted build goes on
    for f, sub in enumerate(subs):
        if sub.feed_id in filled:
            continue
        plan = Plan()
        stories: list[StoryPlan] = []
        for n in range(per_feed):
            link = f"https://site{f}.example/{2026}/{n}/{_text(rng, 3).replace(' ', '-')}"
            summary = f"<p>{_text(rng, 60)}</p>"
            content = f"<p>{_text(rng, 120)}</p><p>{_text(rng, 120)}</p>"
            when = base + timedelta(seconds=rng.randrange(0, 330 * 86400))
            title = _text(rng, 9).capitalize()
            stories.append(_story_plan(sub.feed_id, title, f"{summary} {content}", when))
            entry = ParsedEntry(entry_key=link, key_rule="guid", content_hash=hashlib.sha256(link.encode()).hexdigest()[:32],
                                guid=link, url=link, canonical_url=canonical_url(link), title=title,
                                authors=(Author(name=f"Writer {n % 17}"),), summary=summary, content=content,
                                categories=(rng.choice(WORDS),), published_at=when)
            plan.inserts.append(Insert(entry, link, None, when))
        with store.ingest(sub.feed_id) as tx:
            tx.apply(plan, stories, end)
        if f % 1000 == 999:
            print(f"  {f + 1} feeds, {(f + 1) * per_feed:,} articles, {time.monotonic() - started:.0f}s", flush=True)
    store.close()
    return time.monotonic() - started


def _story_plan(feed_id: str, title: str, html: str, when: datetime) -> StoryPlan:
    """The story decision ingest makes for an article that founds its story: profile and index keys."""
    feats = cluster.features(title, to_text(html), None)
    profile = cluster.new_profile(cluster.Newcomer(feats, feed_id, when))
    return StoryPlan(None, "first", None, profile.to_json(), cluster.index_keys(feats), ())


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


def controls_yaml() -> str:
    """200 block rules (150 words, 50 patterns, over every field) and 20 saved searches, in config.yaml's words."""
    fields = ("title", "text", "author", "category", "url")
    # Rules that rarely hide anything (every tenth names a real, rare word): hiding is not what is measured.
    rules = [f"    - {fields[n % 5]}: {FARM_WORDS[-1 - n % len(FARM_WORDS)]}{'' if n % 10 == 0 else 'zz'}"
             for n in range(150)]
    rules += [f"    - {fields[n % 5]}: 're:\\b{FARM_WORDS[n]}[a-z]*\\s+(of|and)\\s+\\w+zz'" for n in range(50)]
    searches = [f"  - name: s{n}\n    query: '{FARM_WORDS[n]} OR \"{FARM_WORDS[n + 1]} {FARM_WORDS[n + 2]}\" -{FARM_WORDS[n + 3]}'"
                for n in range(20)]
    return "filters:\n  block:\n" + "\n".join(rules) + "\nsearches:\n" + "\n".join(searches) + "\n"


CASES = {  # the poll cases: database, extra config
    "empty": (False, "stories: {enabled: false}\n"),
    "empty, stories": (False, ""),
    "empty, stories, 200 rules + 20 searches": (False, controls_yaml()),
    "big": (True, "stories: {enabled: false}\n"),
    "big, stories": (True, ""),
}


def workdir(farm: FarmProcess, database: Path | None, extra: str = "") -> Path:
    """A config + feeds/ for the farm, with a copy of the given database."""
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (work / "feeds").mkdir()
    shutil.copy(farm.feeds_yaml, work / "feeds" / "farm.yaml")
    (work / "config.yaml").write_text(
        f"database: bench.db\nhttp: {{port: {free_port()}}}\nlogging: {{level: warning}}\n{extra}"
    )
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
    assert "Polled 200 feeds" in out and "0 failed" in out and "Articles: 10000 new" in out, out
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
    parser.add_argument("--vocabulary", type=int, default=0,
                        help="the farm's words (bench/feedfarm.py Vocabulary): 0 its ~250 common words, "
                             "N a Zipf long tail of N as in real news (default: %(default)s)")
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
    results: dict[str, list[float]] = {case: [] for case in CASES}
    spec = FarmSpec(feeds=200, entries=50, vocabulary=args.vocabulary)
    with FarmProcess(spec, Path(tempfile.mkdtemp(prefix="farm-"))) as farm:
        for run in range(args.runs):
            for case, (on_big, extra) in CASES.items():
                work = workdir(farm, big if on_big else None, extra)
                results[case].append(timed_poll(work))
                shutil.rmtree(work, ignore_errors=True)
                print(f"  run {run + 1}: {case}: {results[case][-1]:.2f} s", flush=True)
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
    # A saved-search feed at this size: the query over the full-text index, its stories, the Atom document.
    searches_yaml = Path(tempfile.mkdtemp(prefix="bench-search-")) / "config.yaml"
    searches_yaml.write_text(
        "searches:\n"
        f"  - {{name: common, query: '{VOCABULARY[3]}'}}\n"
        f"  - {{name: rare, query: '{VOCABULARY[4000]} OR {VOCABULARY[9000]}'}}\n"
        f"  - {{name: phrase, query: '\"{VOCABULARY[0]} {VOCABULARY[1]}\" -{VOCABULARY[2]}'}}\n"
    )
    searched = load_config(searches_yaml)
    search_publisher = Publisher(store, searched)
    search_times: dict[str, list[float]] = {}
    for search in searched.settings.searches:
        for _ in range(5):
            t = time.perf_counter()
            found = fit(store.latest(100, 10, seqs=search_publisher._matches(search)))
            render_atom(found, search_publisher.search_meta(search))
            search_times.setdefault(search.name, []).append(time.perf_counter() - t)
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
    median = {case: statistics.median(times) for case, times in results.items()}
    empty, loaded = median["empty"], median["big"]
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    print(f"\nMachine: {model}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"Big database: {args.feeds:,} feeds, {articles:,} articles, {size / 2**30:.2f} GiB")
    print(f"Farm: 200 feeds x 50 entries, vocabulary {args.vocabulary or 'the ~250 common words'}\n")
    print("| measure | value |\n| --- | ---: |")
    print(f"| cold poll 200x50 into an empty database (median of {args.runs}) | {empty:.2f} s = {10000 / empty:,.0f} articles/s |")
    print(f"| cold poll 200x50 into the {articles:,}-article database | {loaded:.2f} s = {10000 / loaded:,.0f} articles/s |")
    print(f"| ingest rate at {articles:,} articles / empty | {empty / loaded:.2f} |")
    for case in CASES:
        print(f"| cold poll 200x50, {case} (median of {args.runs}) | {median[case]:.2f} s |")
    print(f"| story clustering's cost, empty database | {median['empty, stories'] / empty - 1:+.0%} |")
    print(f"| story clustering's cost at {articles:,} articles | {median['big, stories'] / loaded - 1:+.0%} |")
    print(f"| 200 rules + 20 saved searches' cost (stories on) | "
          f"{median['empty, stories, 200 rules + 20 searches'] / median['empty, stories'] - 1:+.0%} |")
    for name, times in search_times.items():
        print(f"| saved search '{name}' feed rebuilt (query + stories + Atom), median of 5 | "
              f"{1000 * statistics.median(times):.0f} ms |")
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
