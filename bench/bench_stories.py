"""Story clustering benchmark on the labelled dev set (issue 11).

    python -m bench.bench_stories --offline            # quality on both timelines + speed + cost
    python -m bench.bench_stories --offline --sweep    # sensitivity of F1 to each parameter
    python -m bench.bench_stories --offline --seeds 10 # the one-week timeline under 10 seeds

The data: ../shared/corpus/stories/basil-dev.jsonl, 60 real events each
reported by Fox News, The New York Times and HuffPost (read its README). Each
line becomes an article as a feed entry would carry it: the title, a text of
the first two paragraphs that are not the title, the date, and the outlet as
its feed (``load_dev``).

Two timelines give every article a published_at (``real_timeline``,
``week_timeline``): the real dates, and every event moved into one single
week (seeded; the days between an event's articles are kept), where some 60
events compete. The dates are days: a deterministic hour from the article's
URL hash stands for the time of day a feed would carry.

Offline mode replays the articles in published_at order through the pure API
of aggregator/cluster.py while simulating the store faithfully
(``StoreSimulation``): an inverted index of rows (key, story id,
published_at), candidate stories only from rows that share a key with the
article within the window, ranked by the number of shared keys and cut to
``max_candidates``. The result is scored with B-cubed precision, recall and
F1 (``bcubed``).

End-to-end mode (the default) serves the set as three RSS feeds from
127.0.0.1, polls them with the real command (``aggregator poll`` in a fresh
directory, stories on, default settings) and scores the ``story_id`` that
``aggregator articles --json`` reports, once per timeline. A first poll sees
each feed's whole archive at once, so articles reach the clusterer feed by
feed (whichever fetch finishes first), not in date order: the order a real
first poll gives, and harder than the offline replay.
"""

from __future__ import annotations

import argparse
import dataclasses
import email.utils
import hashlib
import html
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aggregator import cluster

REPO = Path(__file__).resolve().parent.parent
STORIES = Path(os.environ.get("AGGREGATOR_STORIES", REPO.parent / "shared/corpus/stories"))
DEV_SET = STORIES / "basil-dev.jsonl"
WEEK_START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


# --- the data --------------------------------------------------------------------------


@dataclass(frozen=True)
class DevArticle:
    """One labelled article, as a feed entry would carry it."""

    url: str
    story: str  # the gold event id
    feed: str  # the outlet: fox, nyt, hpo
    outlet_name: str
    title: str
    text: str  # the first two paragraphs that are not the title
    day: date


def load_dev(path: Path = DEV_SET) -> list[DevArticle]:
    articles = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            title = row["title"].strip()
            paragraphs = [p.strip() for p in row["paragraphs"] if p.strip() and p.strip() != title]
            articles.append(
                DevArticle(
                    url=row["url"],
                    story=row["story"],
                    feed=row["outlet"],
                    outlet_name=row["outlet_name"],
                    title=title,
                    text="\n\n".join(paragraphs[:2]),
                    day=date.fromisoformat(row["date"][:10]),
                )
            )
    return articles


def time_of_day(article: DevArticle) -> timedelta:
    """A deterministic time between 06:00 and 22:00, from the URL."""
    digest = int.from_bytes(hashlib.sha256(article.url.encode()).digest()[:4], "big")
    return timedelta(seconds=6 * 3600 + digest % (16 * 3600))


def real_timeline(articles: Sequence[DevArticle]) -> dict[str, datetime]:
    """url -> published_at on the article's real date."""
    return {a.url: datetime.combine(a.day, datetime.min.time(), UTC) + time_of_day(a) for a in articles}


def week_timeline(articles: Sequence[DevArticle], seed: int = 1, start: datetime = WEEK_START) -> dict[str, datetime]:
    """url -> published_at with every event moved to start on a random day of
    one week (seeded), the days between its articles kept."""
    first: dict[str, date] = {}
    for a in articles:
        first[a.story] = min(first.get(a.story, a.day), a.day)
    rng = random.Random(seed)
    offset = {story: timedelta(days=rng.randrange(7)) for story in sorted(first)}
    return {
        a.url: start + offset[a.story] + timedelta(days=(a.day - first[a.story]).days) + time_of_day(a)
        for a in articles
    }


def replay_order(articles: Sequence[DevArticle], times: Mapping[str, datetime]) -> list[DevArticle]:
    """The order a store would see them in: published_at, then URL."""
    return sorted(articles, key=lambda a: (times[a.url], a.url))


def rss_feed(articles: Sequence[DevArticle], feed: str, times: Mapping[str, datetime]) -> bytes:
    """One outlet's articles as an RSS 2.0 document, newest first: title,
    link, guid, pubDate and a description of the lead's paragraphs (HTML)."""
    mine = sorted((a for a in articles if a.feed == feed), key=lambda a: (times[a.url], a.url), reverse=True)
    if not mine:
        raise ValueError(f"no articles of feed {feed!r}")
    items = []
    for a in mine:
        description = "".join(f"<p>{html.escape(p)}</p>" for p in a.text.split("\n\n"))
        items.append(
            f"<item><title>{html.escape(a.title)}</title><link>{html.escape(a.url)}</link>"
            f'<guid isPermaLink="true">{html.escape(a.url)}</guid>'
            f"<pubDate>{email.utils.format_datetime(times[a.url])}</pubDate>"
            f"<description>{html.escape(description)}</description></item>"
        )
    name = html.escape(mine[0].outlet_name)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
        f"<title>{name}</title><link>https://{feed}.example/</link><description>{name} (dev set)</description>"
        f"<language>en-us</language>{''.join(items)}</channel></rss>\n"
    ).encode()


# --- scoring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    stories: int  # predicted stories

    def __str__(self) -> str:
        return f"P {self.precision:.3f}  R {self.recall:.3f}  F1 {self.f1:.3f}  ({self.stories} stories)"


def bcubed(gold: Mapping[str, str], predicted: Mapping[str, str]) -> Score:
    """B-cubed precision, recall and F1 (Bagga and Baldwin, 1998) of a
    clustering: both map item -> cluster id, over the same items."""
    if set(gold) != set(predicted):
        raise ValueError("gold and predicted must cover the same items")
    gold_members: dict[str, set[str]] = defaultdict(set)
    predicted_members: dict[str, set[str]] = defaultdict(set)
    for item, label in gold.items():
        gold_members[label].add(item)
    for item, label in predicted.items():
        predicted_members[label].add(item)
    precision = recall = 0.0
    for item in gold:
        g, p = gold_members[gold[item]], predicted_members[predicted[item]]
        both = len(g & p)
        precision += both / len(p)
        recall += both / len(g)
    precision /= len(gold)
    recall /= len(gold)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1, len(predicted_members))


def load_sts(directory: Path = STORIES) -> list[tuple[float, str, str]]:
    """(human score 0-5, headline, headline) from the SemEval STS headline
    sets; rows without a score are skipped."""
    pairs = []
    for path in sorted(directory.glob("sts-headlines-*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            fields = line.split("\t")
            if len(fields) == 3 and fields[0].strip():
                pairs.append((float(fields[0]), fields[1], fields[2]))
    return pairs


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2  # ties share their mean rank
            i = j + 1
        return result

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    return cov / (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5


def sts_correlation(pairs: Sequence[tuple[float, str, str]]) -> float:
    """Spearman correlation between the human scores and the cosine of two
    headlines' features (as titles; no window statistics)."""
    sims = []
    for _, a, b in pairs:
        fa, fb = dict(cluster.features(a, "", "en").terms), cluster.features(b, "", "en").terms
        sims.append(sum(w * fa.get(t, 0) for t, w in fb) / cluster.SCALE**2)
    return spearman([score for score, _, _ in pairs], sims)


# --- the store, simulated ------------------------------------------------------------------


@dataclass
class StoreSimulation:
    """What the store does around ``cluster.assign``, in memory: index rows
    (key, story id, published_at) for every clustered article, profiles kept
    in their stored (JSON) form, and for a newcomer the rows of its keys
    within the window, at most ``max_key_articles + 1`` per key, handed to
    ``cluster.select_candidates``."""

    settings: cluster.ClusterSettings = cluster.DEFAULT_SETTINGS
    rows: dict[str, list[tuple[str, datetime]]] = field(default_factory=lambda: defaultdict(list))
    profiles: dict[str, str] = field(default_factory=dict)  # story id -> StoryProfile.to_json()
    candidate_counts: list[int] = field(default_factory=list)
    next_id: int = 0

    def add(self, article: cluster.Newcomer) -> tuple[str, cluster.Assignment]:
        """Place one article; returns its story id and the decision."""
        settings = self.settings
        window = timedelta(seconds=settings.window)
        keys = cluster.index_keys(article.features, settings)
        key_rows = {}
        for key in keys:
            near = [story for story, at in self.rows.get(key, ()) if abs(at - article.published_at) <= window]
            key_rows[key] = near[: settings.max_key_articles + 1]
        selection = cluster.select_candidates(key_rows, settings)
        self.candidate_counts.append(len(selection.story_ids))
        candidates = [
            cluster.Candidate(story, cluster.StoryProfile.from_json(self.profiles[story]))
            for story in selection.story_ids
        ]
        decision = cluster.assign(article, candidates, selection.key_counts, settings)
        if decision.story_id is None:
            story = f"s{self.next_id:06d}"  # ids in creation order: ties go to the older story
            self.next_id += 1
            profile = cluster.new_profile(article, settings)
        else:
            story = decision.story_id
            profile = cluster.join_profile(cluster.StoryProfile.from_json(self.profiles[story]), article, settings)
        self.profiles[story] = profile.to_json()
        for key in keys:
            self.rows[key].append((story, article.published_at))
        return story, decision


def cluster_dev(
    articles: Sequence[DevArticle],
    times: Mapping[str, datetime],
    settings: cluster.ClusterSettings = cluster.DEFAULT_SETTINGS,
) -> tuple[dict[str, str], StoreSimulation]:
    """Replay the articles through the pure API; url -> predicted story."""
    store = StoreSimulation(settings)
    predicted = {}
    for a in replay_order(articles, times):
        feats = cluster.features(a.title, a.text, "en", settings)
        predicted[a.url], _ = store.add(cluster.Newcomer(feats, a.feed, times[a.url]))
    return predicted, store


def score_dev(
    articles: Sequence[DevArticle],
    times: Mapping[str, datetime],
    settings: cluster.ClusterSettings = cluster.DEFAULT_SETTINGS,
) -> Score:
    predicted, _ = cluster_dev(articles, times, settings)
    return bcubed({a.url: a.story for a in articles}, predicted)


# --- reports -------------------------------------------------------------------------------


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def quality(articles: Sequence[DevArticle], seeds: int) -> None:
    real = score_dev(articles, real_timeline(articles))
    week = score_dev(articles, week_timeline(articles, seed=1))
    print("| timeline | precision | recall | F1 | stories (gold 60) |\n| --- | ---: | ---: | ---: | ---: |")
    for name, s in (("real dates", real), ("one week (seed 1)", week)):
        print(f"| {name} | {s.precision:.3f} | {s.recall:.3f} | {s.f1:.3f} | {s.stories} |")
    if seeds > 1:
        scores = [score_dev(articles, week_timeline(articles, seed=seed)) for seed in range(1, seeds + 1)]
        for what in ("precision", "recall", "f1"):
            values = [getattr(s, what) for s in scores]
            print(
                f"| one week, seeds 1-{seeds}: {what} | median {statistics.median(values):.3f}"
                f" | min {min(values):.3f} | max {max(values):.3f} | |"
            )


def errors(articles: Sequence[DevArticle], times: Mapping[str, datetime]) -> None:
    """Print every predicted story that mixes events and every split event."""
    predicted, _ = cluster_dev(articles, times)
    by_url = {a.url: a for a in articles}
    members: dict[str, list[DevArticle]] = defaultdict(list)
    for url, story in predicted.items():
        members[story].append(by_url[url])
    for story, group in sorted(members.items()):
        if len({a.story for a in group}) > 1:
            print(f"MERGED {story}:")
            for a in group:
                print(f"    {a.story[:8]} {a.feed} {times[a.url]:%m-%d %H:%M} {a.title}")
    events: dict[str, set[str]] = defaultdict(set)
    for a in articles:
        events[a.story].add(predicted[a.url])
    for event, stories in sorted(events.items()):
        if len(stories) > 1:
            print(f"SPLIT {event[:8]}:")
            for a in sorted((a for a in articles if a.story == event), key=lambda a: times[a.url]):
                print(f"    {predicted[a.url]} {a.feed} {times[a.url]:%m-%d %H:%M} {a.title}")


SWEEP: tuple[tuple[str, tuple[float, ...]], ...] = (
    ("threshold", (0.15, 0.18, 0.2, 0.22, 0.25, 0.3)),
    ("idf_strength", (0, 0.3, 0.6, 1, 2)),
    ("title_weight", (1, 1.5, 2, 3)),
    ("window", (24 * 3600, 36 * 3600, 48 * 3600, 72 * 3600)),
    ("max_span", (48 * 3600, 72 * 3600, 96 * 3600, 1000 * 3600)),
    ("max_terms", (20, 30, 40, 60)),
    ("max_keys", (4, 6, 8, 12, 20)),
    ("centroid_terms", (20, 40, 80)),
    ("max_key_articles", (5, 10, 100)),
    ("max_candidates", (5, 10, 20, 50)),
)


def sweep(articles: Sequence[DevArticle], seeds: int) -> None:
    """P and F1 (real dates; median of the one-week seeds) as each setting
    moves alone from its default."""
    real = real_timeline(articles)
    weeks = [week_timeline(articles, seed=seed) for seed in range(1, seeds + 1)]
    base = cluster.DEFAULT_SETTINGS
    print(f"| setting | value | real P / F1 | one week P / F1 (median of {seeds} seeds) | one week min F1 |")
    print("| --- | ---: | --- | --- | ---: |")
    for name, values in SWEEP:
        for value in values:
            kind = type(getattr(base, name))
            settings = dataclasses.replace(base, **{name: kind(value)})
            r = score_dev(articles, real, settings)
            w = [score_dev(articles, t, settings) for t in weeks]
            shown = f"{value / 3600:g} h" if name in ("window", "max_span") else f"{value:g}"
            marker = " (default)" if settings == base else ""
            print(
                f"| {name} | {shown}{marker} | {r.precision:.3f} / {r.f1:.3f} |"
                f" {statistics.median(s.precision for s in w):.3f} / {statistics.median(s.f1 for s in w):.3f} |"
                f" {min(s.f1 for s in w):.3f} |",
                flush=True,
            )


def _per_item(action: Callable[[], object], items: int, repeats: int = 7) -> float:
    """Median over repeats of the seconds per item of one run of action."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        runs.append((time.perf_counter() - started) / items)
    return statistics.median(runs)


def speed(articles: Sequence[DevArticle]) -> dict[str, float]:
    """µs per article for each step a store takes around clustering; prints
    a table and returns the figures."""
    inputs = [(a.title, a.text) for a in articles]
    words = statistics.median(len(f"{t} {x}".split()) for t, x in inputs)
    figures: dict[str, float] = {}
    # The yardstick, measured in the same run: parsing the entries of the dev
    # set's three RSS documents (what a parse worker does for each article).
    from aggregator.parse import parse_document

    timeline = real_timeline(articles)
    documents = [rss_feed(articles, feed, timeline) for feed in sorted({a.feed for a in articles})]
    assert sum(len(parse_document(d, "https://bench.example/feed").entries) for d in documents) == len(articles)
    figures["parse"] = _per_item(
        lambda: [parse_document(d, "https://bench.example/feed") for d in documents], len(inputs)
    )
    print(f"| yardstick: parse_document() of the dev set's RSS | {1e6 * figures['parse']:.0f} µs per entry |")
    figures["features"] = _per_item(lambda: [cluster.features(t, x, "en") for t, x in inputs], len(inputs))
    print(f"| features() | {1e6 * figures['features']:.0f} µs per article (title + lead, median {words:.0f} words) |")
    times = week_timeline(articles)
    ordered = replay_order(articles, times)
    _, store = cluster_dev(articles, times)
    counts = store.candidate_counts
    print(f"| candidates per article (one-week replay) | median {statistics.median(counts):.0f}, max {max(counts)} |")
    newcomers = [cluster.Newcomer(cluster.features(a.title, a.text, "en"), "bench", times[a.url]) for a in ordered]
    stored = list(store.profiles.values())
    profiles = [cluster.StoryProfile.from_json(p) for p in stored]
    # Every candidate in the window and of another feed, so that each one is scored.
    span = {"first_at": WEEK_START, "last_at": WEEK_START + timedelta(days=3)}
    profiles = [dataclasses.replace(p, **span) for p in profiles]

    def assign_all(candidates: list[cluster.Candidate]) -> None:
        for n in newcomers:
            keys = cluster.index_keys(n.features)
            cluster.assign(dataclasses.replace(n, published_at=WEEK_START), candidates, dict.fromkeys(keys, 3))

    for count in (7, cluster.DEFAULT_SETTINGS.max_candidates):
        candidates = [cluster.Candidate(f"s{i:06d}", profiles[i % len(profiles)]) for i in range(count)]
        figures[f"assign{count}"] = _per_item(lambda c=candidates: assign_all(c), len(newcomers))
        print(f"| assign() with {count} candidates | {1e6 * figures[f'assign{count}']:.0f} µs per article |")
    figures["from_json"] = _per_item(lambda: [cluster.StoryProfile.from_json(p) for p in stored], len(stored))
    print(f"| StoryProfile.from_json() | {1e6 * figures['from_json']:.0f} µs per candidate profile |")
    pairs = list(zip(profiles, newcomers, strict=False))
    figures["join"] = _per_item(lambda: [cluster.join_profile(p, n).to_json() for p, n in pairs], len(pairs))
    print(f"| join_profile() + to_json() | {1e6 * figures['join']:.0f} µs per article |")
    keys = cluster.index_keys(newcomers[0].features)
    key_rows = {k: [f"s{i:06d}" for i in range(j, j + 8)] for j, k in enumerate(keys)}
    figures["select"] = _per_item(lambda: [cluster.select_candidates(key_rows) for _ in range(100)], 100)
    print(f"| select_candidates() ({len(key_rows)} keys x 8 rows) | {1e6 * figures['select']:.0f} µs per article |")
    for count in (7, cluster.DEFAULT_SETTINGS.max_candidates):
        total = figures["features"] + figures["select"] + count * figures["from_json"]
        total += figures[f"assign{count}"] + figures["join"]
        print(
            f"| all of the above, {count} candidates | {1e6 * total:.0f} µs per article"
            f" = {total / figures['parse']:.2f}x parsing the entry |"
        )
    sizes = [len(n.features.to_json().encode()) for n in newcomers]
    profile_sizes = [len(p.encode()) for p in stored]
    print(f"| features JSON | median {statistics.median(sizes):.0f} bytes |")
    print(f"| profile JSON | median {statistics.median(profile_sizes):.0f} bytes, max {max(profile_sizes)} |")
    return figures


def cost() -> None:
    """Import time and memory that aggregator.cluster adds to a process that
    already has aggregator.model (as every process of the service does)."""
    probe = (
        "import resource, time\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()\n"
        "import json, re, aggregator.model\n"
        "before = rss(); t = time.perf_counter()\n"
        "import aggregator.cluster as c\n"
        "imported = time.perf_counter() - t\n"
        "c.features('Warm Up', 'Loads the English stop words.', 'en')\n"
        "english = rss()\n"
        "c.features('x', 'y', None); c.features('x', 'y', 'fr'); c.features('x', 'y', 'ar')\n"
        "print(imported, english - before, rss() - english)\n"
    )
    # As installed: bytecode compiled once (this machine sets PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-c", "import aggregator.cluster"], env=env, check=True)
    runs = [
        subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
        ).stdout.split()
        for _ in range(7)
    ]
    seconds = statistics.median(float(r[0]) for r in runs)
    english = statistics.median(int(r[1]) for r in runs)
    more = statistics.median(int(r[2]) for r in runs)
    print(f"| import aggregator.cluster (median of 7) | {1000 * seconds:.1f} ms |")
    print(f"| RSS after import + first English features() | +{english / 1024:.0f} KiB |")
    print(f"| RSS for the unknown-language, French and Arabic stop words | +{more / 1024:.0f} KiB |")
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import json, re, aggregator.model; import aggregator.cluster"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stderr
    for name in ("stop_words", "unicodedata", "aggregator.cluster"):
        line = next((line for line in out.splitlines() if line.rstrip().endswith(f" {name}")), None)
        if line:
            fields = [f.strip() for f in line.split(":", 1)[1].split("|")]
            print(f"| -X importtime {name} (self / cumulative) | {fields[0]} / {fields[1]} µs |")


# --- end to end: the real command against feeds on 127.0.0.1 --------------------------------


class _Documents(ThreadingHTTPServer):
    documents: dict[str, bytes]


class _FeedHandler(BaseHTTPRequestHandler):
    server: _Documents

    def do_GET(self) -> None:
        body = self.server.documents.get(self.path.strip("/").removesuffix(".xml"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _aggregator(work: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", *args], cwd=work, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"aggregator {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def end_to_end(articles: Sequence[DevArticle], times: Mapping[str, datetime]) -> tuple[Score, float]:
    """Serve the set as three feeds, poll them once with the real command in
    a fresh directory and score story_id; also the poll's wall time."""
    feeds = sorted({a.feed for a in articles})
    server = _Documents(("127.0.0.1", 0), _FeedHandler)
    server.documents = {feed: rss_feed(articles, feed, times) for feed in feeds}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-stories-") as tmp:
            work = Path(tmp)
            # The dev set's events are from 2010-2018: a retention that keeps
            # them and a backfill that lets every entry be published; the
            # story settings are the defaults.
            (work / "config.yaml").write_text(
                "database: dev.db\nretention: {days: 36500}\noutput: {backfill: 1000}\nstories: {enabled: true}\n"
            )
            (work / "feeds").mkdir()
            port = server.server_address[1]
            (work / "feeds" / "dev.yaml").write_text(
                "feeds:\n" + "".join(f"  - url: http://127.0.0.1:{port}/{feed}.xml\n" for feed in feeds)
            )
            started = time.perf_counter()
            _aggregator(work, "poll")
            elapsed = time.perf_counter() - started
            listing = _aggregator(work, "articles", "--limit", "0", "--json")
            records = [json.loads(line) for line in listing.splitlines()]
    finally:
        server.shutdown()
        server.server_close()
    predicted = {r["guid"]: r["story_id"] for r in records}
    gold = {a.url: a.story for a in articles}
    missing = set(gold) - set(predicted)
    if missing:
        raise SystemExit(f"{len(missing)} articles were not stored, e.g. {sorted(missing)[:3]}")
    return bcubed(gold, {url: predicted[url] for url in gold}), elapsed


def end_to_end_report(articles: Sequence[DevArticle], seeds: int) -> None:
    timelines = [("real dates", real_timeline(articles))]
    timelines += [(f"one week (seed {seed})", week_timeline(articles, seed=seed)) for seed in range(1, seeds + 1)]
    print("| timeline (end to end) | precision | recall | F1 | stories (gold 60) | poll |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    week_scores = []
    for name, times in timelines:
        score, elapsed = end_to_end(articles, times)
        if name.startswith("one week"):
            week_scores.append(score)
        figures = f"{score.precision:.3f} | {score.recall:.3f} | {score.f1:.3f} | {score.stories}"
        print(f"| {name} | {figures} | {elapsed:.2f} s |")
    if len(week_scores) > 1:
        for what in ("precision", "recall", "f1"):
            values = [getattr(s, what) for s in week_scores]
            print(
                f"| one week, seeds 1-{seeds}: {what} | median {statistics.median(values):.3f}"
                f" | min {min(values):.3f} | max {max(values):.3f} | | |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--offline", action="store_true", help="replay through the pure API instead of the CLI")
    parser.add_argument("--sweep", action="store_true", help="F1 as each parameter moves alone")
    parser.add_argument("--errors", action="store_true", help="print the wrong merges and splits")
    parser.add_argument("--seeds", type=int, default=5, help="one-week timelines to summarise (default 5)")
    args = parser.parse_args()
    articles = load_dev()
    print(f"Machine: {machine()}\nDev set: {len(articles)} articles, {len({a.story for a in articles})} events\n")
    if not (args.offline or args.sweep or args.errors):
        end_to_end_report(articles, args.seeds)
        return
    if args.errors:
        print("== real dates"), errors(articles, real_timeline(articles))
        print("== one week, seed 1"), errors(articles, week_timeline(articles))
        return
    if args.sweep:
        sweep(articles, args.seeds)
        return
    quality(articles, args.seeds)
    pairs = load_sts()
    print(f"\nSTS headlines ({len(pairs)} scored pairs): Spearman {sts_correlation(pairs):.3f}")
    print("\n| step | cost |\n| --- | --- |")
    speed(articles)
    cost()


if __name__ == "__main__":
    main()
