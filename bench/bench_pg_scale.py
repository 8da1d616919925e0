"""The PostgreSQL store at 100,000 feeds and 10,000,000 articles (issue 14):
the claim query and the Latest rebuild.

    pip install -e '.[test,bench]'
    python -m bench.bench_pg_scale [--feeds 100000] [--articles 10000000] [--runs 200] [--plans plans.txt]
    python -m bench.bench_pg_scale --feeds 2000 --articles 200000 --runs 50      # a smoke run (~2 minutes)

What it does. On a throwaway PostgreSQL server (tests/pg.py: Unix socket,
fsync off, the server's default shared_buffers of 128 MB) it creates the
schema through the store (PostgresStore), then fills it directly in SQL
(INSERT ... SELECT from generate_series; no ingest, no parsing):

  feeds       --feeds rows: 1 in 10 on one big host, the rest on 18,000
              hosts; 1% gone, 1% unsubscribed; one of 40 tags each
  articles    --articles rows, round robin over the feeds, dated over the
              past year in arrival order; titles and a ~140-character
              summary, no content (long content would be TOASTed, out of
              the row); every 10th article joins the story of the article 3
              before it (cross-feed stories), 1 in 50 hidden by a filter.
              The article indexes are dropped for the load and built again
              from the schema's own CREATE INDEX statements, then VACUUM
              ANALYZE (as autovacuum would in time).
  host_backoff  50 hosts in Retry-After backoff

and times, through the store's own methods (the statements the service runs):

  claim    store.claim_due(node, now, limit=8, lease=60, skip_hosts=5 hosts),
           what the dispatcher runs to fill its workers; its leases are
           released after each call (untimed), so every call sees the same
           state. Two states: steady (next polls spread over the coming hour,
           ~1.6% of the feeds due) and backlog (every feed due: after an
           outage).
  latest   store.latest(100, 10), the queries behind /latest.atom (the walk
           down articles_latest, each story's representative, the rows of the
           chosen ones, their other outlets, their feeds); and the same plus
           render_atom, the whole /latest.atom rebuild.

Median and p99 of --runs calls each (after 5 untimed warm-up calls). The
plans: one more call of each with auto_explain (log_analyze, log_buffers) on
the session, read back from the server log: EXPLAIN (ANALYZE, BUFFERS) of the
exact statements the store ran, written to --plans.

The database takes ~1.4 KB per article (13-14 GB at 10,000,000): the free
space is checked first, and the whole server is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(ROOT))

from aggregator.config import load_config  # noqa: E402
from aggregator.model import utcnow  # noqa: E402
from aggregator.publish import Publisher  # noqa: E402
from aggregator.publish.atom import render_atom  # noqa: E402
from aggregator.store.postgres import SCHEMA, PostgresStore  # noqa: E402
from tests.pg import PgCluster  # noqa: E402

BYTES_PER_ARTICLE = 1400  # measured: heap + the article indexes
CHUNK = 1_000_000
ISO = "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"
ISO_MS = "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"
LOG_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def article_indexes() -> list[str]:
    """The schema's own CREATE INDEX statements for articles: what the load drops and builds again."""
    return [s.strip() for s in SCHEMA.split(";") if re.match(r"\s*CREATE INDEX \w+ ON articles\b", s)]


def build(conn: psycopg.Connection[Any], feeds: int, articles: int) -> float:
    """Fill feeds, feed_tags, articles and host_backoff; returns seconds."""
    started = time.monotonic()
    run = conn.execute
    host = "CASE WHEN n % 10 = 0 THEN 'feeds.bighost.example' ELSE 'site' || (n % 18000) || '.example' END"
    run(f"""
        INSERT INTO feeds (id, url, host, configured_url, title, tags, status, added_at, next_poll_at, article_count,
                           last_fetch_at, last_status, last_outcome, etag)
        SELECT substr(md5('feed' || n), 1, 12), 'https://' || {host} || '/feed' || n || '.xml', {host},
               'https://' || {host} || '/feed' || n || '.xml', 'Site ' || n, '["tag' || (n % 40) || '"]',
               CASE n % 100 WHEN 0 THEN 'gone' WHEN 1 THEN 'unsubscribed' ELSE 'active' END,
               to_char(now() AT TIME ZONE 'UTC' - interval '400 days', {ISO}),
               to_char(now() AT TIME ZONE 'UTC', {ISO_MS}), {articles} / {feeds},
               to_char(now() AT TIME ZONE 'UTC' - interval '1 hour', {ISO}), 304, 'not_modified', '"e' || n || '"'
        FROM generate_series(0, {feeds - 1}) AS n
    """)  # fmt: skip
    run(f"INSERT INTO feed_tags (feed_id, tag) SELECT substr(md5('feed' || n), 1, 12), 'tag' || (n % 40)"
        f" FROM generate_series(0, {feeds - 1}) AS n")  # fmt: skip
    run("INSERT INTO host_backoff (host, until) SELECT 'site' || n || '.example',"
        f" to_char(now() AT TIME ZONE 'UTC' + interval '1 hour', {ISO_MS}) FROM generate_series(1, 50) AS n")
    log(f"  {feeds:,} feeds in {time.monotonic() - started:.0f}s")
    indexes = article_indexes()
    for statement in indexes:
        run(f"DROP INDEX {statement.split()[2]}")
    run("ALTER TABLE articles DROP CONSTRAINT articles_id_key")
    for first in range(1, articles + 1, CHUNK):
        last = min(articles, first + CHUNK - 1)
        # s: arrival order; the newest article arrived a minute ago, the oldest a year ago.
        run(f"""
            INSERT INTO articles (seq, id, feed_id, entry_key, guid, url, canonical_url, title, summary, published_at,
                                  first_seen_at, sort_at, content_hash, story_id, visible, hidden_by)
            SELECT s, md5('article' || s), substr(md5('feed' || (s % {feeds})), 1, 12), 'guid:' || s, 'guid:' || s,
                   url, url, 'Story ' || s || ' ' || md5(s::text), '<p>' || repeat(md5('summary' || s), 4) || '</p>',
                   to_char(published, {ISO}), to_char(seen, {ISO}), to_char(published, {ISO}),
                   substr(md5('hash' || s), 1, 32),
                   substr(md5('story' || CASE WHEN s % 10 = 0 AND s > 3 THEN s - 3 ELSE s END), 1, 16),
                   CASE WHEN s % 50 = 7 THEN 0 ELSE 1 END, CASE WHEN s % 50 = 7 THEN 'filter' END
            FROM (SELECT s, 'https://site' || (s % {feeds}) || '.example/' || s || '.html' AS url,
                         seen - (s % 7) * interval '13 minutes' AS published, seen
                  FROM (SELECT s, now() AT TIME ZONE 'UTC' - interval '1 minute'
                                  - ({articles} - s) * (interval '365 days' / {articles}) AS seen
                        FROM generate_series({first}, {last}) AS s) AS t) AS u
        """)  # fmt: skip
        log(f"  {last:,} articles, {time.monotonic() - started:.0f}s")
    run("SELECT setval(pg_get_serial_sequence('articles', 'seq'), %s)", (articles,))
    run("SET maintenance_work_mem = '1GB'")
    run("ALTER TABLE articles ADD CONSTRAINT articles_id_key UNIQUE (id)")
    for statement in indexes:
        run(statement)
        log(f"  {statement.split()[2]} built, {time.monotonic() - started:.0f}s")
    run("VACUUM ANALYZE")
    log(f"  vacuumed and analysed, {time.monotonic() - started:.0f}s")
    return time.monotonic() - started


def spread_polls(conn: psycopg.Connection[Any], backlog: bool) -> int:
    """Next polls spread over the coming hour (a minute's worth due now), or all in the past two hours."""
    window = "now() - random() * interval '2 hours'" if backlog else "now() + (random() - 0.016) * interval '1 hour'"
    run = conn.execute
    run(f"UPDATE feeds SET next_poll_at = to_char(({window}) AT TIME ZONE 'UTC', {ISO_MS}),"
        " lease_owner = NULL, lease_until = NULL")  # fmt: skip
    run("VACUUM ANALYZE feeds")
    row = run(f"SELECT count(*) FROM feeds WHERE status = 'active' AND next_poll_at <= to_char(now() AT TIME ZONE"
              f" 'UTC', {ISO_MS})").fetchone()  # fmt: skip
    return int(row[0])


def time_claims(store: PostgresStore, runs: int, skip: list[str]) -> tuple[list[float], list[float]]:
    """Claims, and giving back all of the node's leases after each (what a node does at exit)."""
    claims, releases = [], []
    for i in range(runs + 5):
        now = utcnow()
        started = time.perf_counter()
        claimed = store.claim_due(store.node, now, 8, 60.0, skip_hosts=skip)
        middle = time.perf_counter()
        store.release_leases(store.node)
        ended = time.perf_counter()
        assert len(claimed) == 8, len(claimed)
        if i >= 5:
            claims.append((middle - started) * 1000)
            releases.append((ended - middle) * 1000)
    return claims, releases


def time_latest(store: PostgresStore, publisher: Publisher, runs: int) -> tuple[list[float], list[float]]:
    query, rebuild = [], []
    for i in range(runs + 5):
        started = time.perf_counter()
        stories = store.latest(100, 10)
        middle = time.perf_counter()
        render_atom(stories, publisher.latest_meta)
        ended = time.perf_counter()
        assert len(stories) == 100, len(stories)
        if i >= 5:
            query.append((middle - started) * 1000)
            rebuild.append((ended - started) * 1000)
    return query, rebuild


def explained(cluster: PgCluster, url: str, name: str, work: Callable[[PostgresStore], object]) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement ``work(store)`` runs, from auto_explain in the server log."""
    server_log = cluster.root / "server.log"  # type: ignore[operator]
    for setting in ("session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = 0",
                    "auto_explain.log_analyze = on", "auto_explain.log_buffers = on",
                    "auto_explain.log_timing = on", "auto_explain.log_nested_statements = on"):  # fmt: skip
        cluster.admin(f"ALTER DATABASE {name} SET {setting}")
    offset = server_log.stat().st_size
    store = PostgresStore(url)
    try:
        work(store)
    finally:
        store.close()
        cluster.admin(f"ALTER DATABASE {name} RESET ALL")
    entries: list[str] = []
    with server_log.open("rb") as f:
        f.seek(offset)
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if LOG_ENTRY.match(line):
                entries.append(line)
            elif entries:
                entries[-1] += "\n" + line
    # The store's start-up (migration check, meta) is not what is measured.
    startup = ("pg_advisory_lock(", "pg_advisory_unlock(", "schema_migrations", "FROM meta WHERE key")
    return [e for e in entries if "plan:" in e and not any(s in e.split("\n", 2)[1] for s in startup)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_pg_scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=100_000)
    parser.add_argument("--articles", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=200, help="timed calls of each query (default: %(default)s)")
    parser.add_argument("--plans", type=Path, help="write the EXPLAIN (ANALYZE, BUFFERS) plans here")
    args = parser.parse_args(argv)
    need = BYTES_PER_ARTICLE * args.articles * 1.5
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if free < need:
        raise SystemExit(f"{free / 2**30:.0f} GiB free in {tempfile.gettempdir()}, about {need / 2**30:.0f} needed")
    log(f"{free / 2**30:.0f} GiB free, about {need / 2**30 / 1.5:.0f} GiB needed")
    cluster = PgCluster()
    if cluster.root is None:
        raise SystemExit("bench_pg_scale needs a server of its own (unset AGGREGATOR_TEST_POSTGRES)")
    load_start = os.getloadavg()
    try:
        name = "scale"
        cluster.admin(f"CREATE DATABASE {name}")
        url = cluster.url(name)
        PostgresStore(url).close()  # the schema, as the service creates it
        log(f"building {args.feeds:,} feeds and {args.articles:,} articles")
        with psycopg.connect(url, autocommit=True) as conn:
            built = build(conn, args.feeds, args.articles)
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        skip = [f"site{n}.example" for n in range(100, 105)]  # hosts at their limit in this poller
        config = load_config(None)
        results: dict[str, tuple[list[float], int]] = {}
        plans: dict[str, list[str]] = {}
        for state in ("steady", "backlog"):
            with psycopg.connect(url, autocommit=True) as conn:
                due = spread_polls(conn, state == "backlog")
            store = PostgresStore(url)
            try:
                claims, releases = time_claims(store, args.runs, skip)
                results[f"claim ({state})"] = (claims, due)
                results[f"release all of a node's leases ({state})"] = (releases, 0)
            finally:
                store.close()

            def claim_once(store: PostgresStore) -> None:
                store.claim_due(store.node, utcnow(), 8, 60.0, skip_hosts=skip)
                store.release_leases(store.node)

            plans[f"claim ({state})"] = explained(cluster, url, name, claim_once)
        store = PostgresStore(url)
        try:
            publisher = Publisher(store, config)
            query, rebuild = time_latest(store, publisher, args.runs)
        finally:
            store.close()
        results["store.latest(100, 10)"] = (query, 0)
        results["/latest.atom rebuild (latest + render_atom)"] = (rebuild, 0)
        plans["latest"] = explained(cluster, url, name, lambda s: s.latest(100, 10))
        cluster.admin(f"DROP DATABASE {name}")
    finally:
        cluster.stop()
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    print(f"Machine: {model}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, "
          f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average "
          f"{' / '.join(f'{x:.2f}' for x in load_start)} at start")
    print(f"Database: {args.feeds:,} feeds, {args.articles:,} articles, {size / 2**30:.1f} GiB, built in "
          f"{built / 60:.0f} min\n")
    print("| query | median ms | p99 ms | max ms | calls |\n|---|---:|---:|---:|---:|")
    for label, (times, due) in results.items():
        note = f" ({due:,} feeds due)" if due else ""
        print(f"| {label}{note} | {statistics.median(times):.2f} | {percentile(times, 99):.2f} | {max(times):.2f} | "
              f"{len(times)} |")
    text = "\n\n".join(f"### {label}\n\n" + "\n\n".join(entries) for label, entries in plans.items())
    if args.plans:
        args.plans.write_text(text + "\n")
        print(f"\nplans written to {args.plans}")
    else:
        print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
