"""Parse engines on the real-world corpus, and how much of the fast path holds the GIL (issue 15).

    python -m bench.bench_engines --runs 3            # engines on ../shared/corpus/realworld
    python -m bench.bench_engines --gil --runs 3      # the fast path in 1 vs 2 threads, time inside C

Engines, each over every document of the corpus, CPU time (user+sys of this
process) per pass, median of ``--runs`` passes, the passes of all engines
alternating so that a noisy neighbour hits them alike:

* feedparser 6 (``feedparser.parse``, as parse.py calls it: no sanitising,
  no relative-URI resolution; the prolog prepared by ``parse.prepared_xml``);
* feedparser-rs 0.7.1 and fastfeedparser 0.6.5 (``pip install -e '.[bench]'``);
* our fast reader alone (``fastparse.read`` on the prepared document; the
  documents it defers cost only the attempt);
* ``parse_document`` whole (raw read, normalising, sanitising, hashes), with
  ``engine="feedparser"`` and with the fast path (``engine="auto"``, the
  deferred documents read by feedparser).

For the two libraries it also counts, against feedparser's raw result, the
documents they fail on, those where they find a different number of
entries, and entries whose title or link differs.

``--gil``: the farm's documents (bench/feedfarm.py, 200 feeds x 50 entries)
through ``worker.parse_for_ingest(engine="fast")`` as the fetch threads run
it: the share of its time spent inside lxml's parse and nh3's clean (both
release the GIL), and the wall time of the whole set on 1 and on 2 threads.
"""

from __future__ import annotations

import argparse
import gzip
import io
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared/corpus/realworld"
NOW = datetime(2026, 6, 15, tzinfo=UTC)


def corpus() -> list[tuple[str, bytes]]:
    root = CORPUS if CORPUS.exists() else Path("/work/shared/corpus/realworld")
    docs = []
    for path in sorted(root.iterdir()):
        if path.name in ("MANIFEST.tsv", "README.md"):
            continue
        raw = path.read_bytes()
        docs.append((path.name, gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw))
    return docs


def engines(docs: list[tuple[str, bytes]]) -> dict[str, Callable[[], Any]]:
    import fastfeedparser
    import feedparser
    import feedparser_rs

    from aggregator import fastparse
    from aggregator.model import ParseError
    from aggregator.parse import prepared_xml

    prepared = [(name, prepared_xml(body)) for name, body in docs]

    def run_feedparser() -> None:
        for name, body in prepared:
            feedparser.parse(io.BytesIO(body), response_headers={"content-location": f"https://c.example/{name}"},
                             sanitize_html=False, resolve_relative_uris=False)  # fmt: skip

    def run_rs() -> None:
        for _name, body in docs:
            try:
                feedparser_rs.parse(body)
            except Exception:
                pass

    def run_fastfeedparser() -> None:
        for _name, body in docs:
            try:
                fastfeedparser.parse(body)
            except Exception:
                pass

    def run_fast_reader() -> None:
        for name, body in prepared:
            url = f"https://c.example/{name}"
            try:
                fastparse.read(body, url, {"content-location": url})
            except fastparse.Deferred:
                pass

    def whole(engine: str) -> Callable[[], None]:
        from aggregator.parse import parse_document

        def run() -> None:
            for name, body in docs:
                try:
                    parse_document(body, f"https://c.example/{name}", {}, NOW, engine=engine)
                except ParseError:
                    pass

        return run

    return {
        "feedparser 6.0 (raw)": run_feedparser,
        "feedparser-rs 0.7.1 (raw)": run_rs,
        "fastfeedparser 0.6.5 (raw)": run_fastfeedparser,
        "our fast reader (raw)": run_fast_reader,
        "parse_document, feedparser": whole("feedparser"),
        "parse_document, fast path + fallback": whole("auto"),
    }


def agreement(docs: list[tuple[str, bytes]]) -> dict[str, dict[str, int]]:
    """The libraries against feedparser's raw result, document by document."""
    import fastfeedparser
    import feedparser
    import feedparser_rs

    from aggregator.parse import prepared_xml

    out: dict[str, dict[str, int]] = {}
    reference = {}
    for name, body in docs:
        parsed = feedparser.parse(io.BytesIO(prepared_xml(body)), sanitize_html=False, resolve_relative_uris=False)
        reference[name] = [(e.get("title"), e.get("link")) for e in parsed.entries]
    for label, parse in (("feedparser-rs", feedparser_rs.parse), ("fastfeedparser", fastfeedparser.parse)):
        counts = {"failed": 0, "other entry count": 0, "titles differ": 0, "links differ": 0, "entries compared": 0}
        for name, body in docs:
            try:
                entries = [(e.get("title"), e.get("link")) for e in parse(body).entries]
            except Exception:
                counts["failed"] += 1
                continue
            ref = reference[name]
            if len(entries) != len(ref):
                counts["other entry count"] += 1
                continue
            for (title, link), (ref_title, ref_link) in zip(entries, ref, strict=True):
                counts["entries compared"] += 1
                counts["titles differ"] += (title or "") != (ref_title or "")
                counts["links differ"] += (link or "") != (ref_link or "")
        out[label] = counts
    return out


def cpu() -> float:
    return time.process_time()


def measure_engines(runs: int) -> None:
    docs = corpus()
    table = engines(docs)
    for run in table.values():  # warm-up: imports, caches
        run()
    times: dict[str, list[float]] = {label: [] for label in table}
    for _ in range(runs):
        for label, run in table.items():
            started = cpu()
            run()
            times[label].append(cpu() - started)
    base = statistics.median(times["feedparser 6.0 (raw)"])
    print(f"{len(docs)} documents, {sum(len(b) for _, b in docs) / 1e6:.1f} MB; CPU seconds per pass, median of {runs}")
    print("| engine | CPU s | x feedparser (raw) |")
    print("|---|---:|---:|")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.2f} | {median / base:.3f}x |")
    print()
    for label, counts in agreement(docs).items():
        print(label, counts)


def measure_gil(runs: int) -> None:
    import nh3
    from lxml import etree

    import aggregator.fastparse as fastparse
    import aggregator.sanitize as sanitize
    from aggregator.worker import parse_for_ingest
    from bench.feedfarm import FarmSpec, FeedModel

    spec = FarmSpec(feeds=200, entries=50, epoch=1_780_000_000)
    docs = [(m.url, m.render(0)) for m in (FeedModel(spec, i, 8080, spec.epoch) for i in range(spec.feeds))]
    inside = {"lxml": 0.0, "nh3": 0.0}
    lock = threading.Lock()
    real_fromstring = etree.fromstring

    def timed_fromstring(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_fromstring(*args, **kwargs)
        finally:
            with lock:
                inside["lxml"] += time.perf_counter() - started

    class TimedCleaner:
        def __init__(self, cleaner: nh3.Cleaner):
            self.cleaner = cleaner

        def clean(self, html: str) -> str:
            started = time.perf_counter()
            try:
                return self.cleaner.clean(html)
            finally:
                with lock:
                    inside["nh3"] += time.perf_counter() - started

    def one(item: tuple[str, Any]) -> None:
        url, rendered = item
        parse_for_ingest(rendered.body, url, {"content-type": rendered.content_type}, NOW, {}, 30, "fast")

    one(docs[0])  # warm-up
    # Single thread, instrumented: the share of the time spent in C with the GIL released.
    fastparse.etree.fromstring = timed_fromstring  # type: ignore[attr-defined]
    real_cleaner = sanitize._cleaner
    sanitize._cleaner = lambda base: TimedCleaner(real_cleaner(base))  # type: ignore[assignment]
    sanitize._TEXT_CLEANER = TimedCleaner(sanitize._TEXT_CLEANER)  # type: ignore[assignment]
    started = time.perf_counter()
    for item in docs:
        one(item)
    total = time.perf_counter() - started
    fastparse.etree.fromstring = real_fromstring  # type: ignore[attr-defined]
    sanitize._cleaner = real_cleaner
    sanitize._TEXT_CLEANER = sanitize._TEXT_CLEANER.cleaner  # type: ignore[attr-defined]
    entries = spec.feeds * spec.entries
    print(f"farm: {spec.feeds} feeds x {spec.entries} entries; one thread: {total:.2f} s = {total / entries * 1e6:.0f} us"
          f" per entry; inside lxml's parse {inside['lxml'] / total:.0%}, inside nh3 {inside['nh3'] / total:.0%}"
          f" -> GIL held {1 - (inside['lxml'] + inside['nh3']) / total:.0%} of the time")  # fmt: skip
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(runs):
        for threads in (1, 2):
            started = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, docs))
            walls[threads].append(time.perf_counter() - started)
    one_thread, two_threads = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"wall, median of {runs}: 1 thread {one_thread:.2f} s, 2 threads {two_threads:.2f} s"
          f" (speed-up {one_thread / two_threads:.2f}x on 2 cores)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gil", action="store_true", help="the fast path in threads instead of the engines")
    args = parser.parse_args()
    if args.gil:
        measure_gil(args.runs)
    else:
        measure_engines(args.runs)


if __name__ == "__main__":
    main()
