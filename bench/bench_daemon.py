"""Daemon soak benchmark: `aggregator run` for N minutes against 1,000 local
feeds polled every minute, some of which gain a story every minute.

    pip install -e '.[bench]'
    python bench/bench_daemon.py [--minutes 10] [--feeds 1000] [--changing 100]

Measures the daemon's CPU use, its RSS over time (whole process tree: main
process plus parser workers), requests sent and the share that were
conditional, and the delay from a story appearing upstream to appearing in
/latest.atom (a watcher reads it every second, conditionally). Prints a
markdown summary.

The farm serves feeds from 20 loopback addresses (127.0.0.1-20), so the
per-host limit (2 requests at once) applies as it would on the real web.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import format_datetime
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

HOSTS = [f"127.0.0.{i}" for i in range(1, 21)]


class Farm:
    def __init__(self, feeds: int, entries: int = 20):
        self.lock = threading.Lock()
        self.stories: dict[int, list[tuple[str, float]]] = {
            f: [(f"http://site{f}.example/story/{n}", time.time() - 86400 + n * 60) for n in range(entries)]
            for f in range(feeds)}
        self.bodies: dict[int, tuple[bytes, str]] = {}
        self.added_at: dict[str, float] = {}  # story link -> when it appeared upstream
        self.requests = 0
        self.conditional = 0
        self.repeat_with_validators = 0
        self.repeat_conditional = 0
        self.polled: set[int] = set()  # feeds requested at least once (all our feeds give an ETag)
        for f in range(feeds):
            self._render(f)

    def _render(self, f: int) -> None:
        items = []
        for link, when in reversed(self.stories[f][-20:]):
            date = format_datetime(datetime.fromtimestamp(when, timezone.utc), usegmt=True)
            items.append(f"<item><title>Story {link.rsplit('/', 1)[1]} of feed {f}</title><link>{link}</link>"
                         f"<guid>{link}</guid><pubDate>{date}</pubDate><description>&lt;p&gt;Text of {link} "
                         + "lorem ipsum dolor sit amet " * 20 + "&lt;/p&gt;</description></item>")
        body = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {f}</title>'
                f"<link>http://site{f}.example/</link><description>d</description>{''.join(items)}</channel></rss>").encode()
        self.bodies[f] = (body, f'"{f}-{len(self.stories[f])}"')

    def add_story(self, f: int) -> None:
        with self.lock:
            n = len(self.stories[f])
            link = f"http://site{f}.example/story/{n}"
            now = time.time()
            self.stories[f].append((link, now))
            self.added_at[link] = now
            self._render(f)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        farm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                f = int(self.path.strip("/").split(".")[0][4:])
                with farm.lock:
                    body, etag = farm.bodies[f]
                    farm.requests += 1
                    conditional = self.headers.get("If-None-Match") is not None
                    farm.conditional += conditional
                    if f in farm.polled:
                        farm.repeat_with_validators += 1
                        farm.repeat_conditional += conditional
                    farm.polled.add(f)
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def tree_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for p in proc.children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--changing", type=int, default=100, help="feeds that gain a story every minute")
    parser.add_argument("--no-stories", action="store_true",
                        help="stories: {enabled: false}. This farm's items all read alike ('Story N of feed F' and the "
                             "same lorem ipsum), so with clustering on most new items rightly join an existing "
                             "story and never show as new entries")
    args = parser.parse_args()
    farm = Farm(args.feeds)
    port = free_port()
    servers = [Server((host, port), farm.handler()) for host in HOSTS]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="bench-daemon-"))
    (work / "feeds").mkdir()
    (work / "feeds" / "bench.yaml").write_text("feeds:\n" + "".join(
        f"  - url: http://{HOSTS[f % len(HOSTS)]}:{port}/feed{f}.xml\n" for f in range(args.feeds)))
    web_port = free_port()
    (work / "config.yaml").write_text(
        f"database: bench.db\nhttp: {{port: {web_port}}}\n"
        "polling: {interval: 1m, min_interval: 30s, max_interval: 1h, adaptive: false}\n"
        "output: {entries: 100, per_source: 5, debounce: 2s}\nlogging: {level: warning}\n"
        + ("stories: {enabled: false}\n" if args.no_stories else ""))
    daemon = subprocess.Popen([sys.executable, "-m", "aggregator", "run", "--config", str(work / "config.yaml")],
                              stderr=open(work / "daemon.log", "w"))
    proc = psutil.Process(daemon.pid)
    delays: list[float] = []
    seen_links: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        etag = None
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", web_port, timeout=5)
                conn.request("GET", "/latest.atom", headers={"If-None-Match": etag} if etag else {})
                response = conn.getresponse()
                body = response.read()
                if response.status == 200:
                    etag = response.getheader("ETag")
                    now = time.time()
                    for link in re.findall(rb'<link rel="alternate" type="text/html" href="([^"]+)"', body):
                        text = link.decode()
                        if text in farm.added_at and text not in seen_links:
                            seen_links.add(text)
                            delays.append(now - farm.added_at[text])
            except OSError:
                pass
            stop.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rss_samples: list[tuple[float, int]] = []
    started = time.time()
    rng = random.Random(1)
    changing = rng.sample(range(args.feeds), args.changing)
    next_change = started + 60
    end = started + args.minutes * 60
    while time.time() < end:
        if time.time() >= next_change:
            for f in changing:
                farm.add_story(f)
            next_change += 60
        rss_samples.append((time.time() - started, tree_rss(proc)))
        time.sleep(1)
    cpu = tree_cpu(proc)
    elapsed = time.time() - started
    stop.set()
    daemon.terminate()
    code = daemon.wait(timeout=60)
    watcher.join(timeout=5)
    for server in servers:
        server.shutdown()
    half = args.minutes * 60 / 2
    last_half = [rss for t, rss in rss_samples if t >= half]
    early = [rss for t, rss in rss_samples if half <= t < half + 60]
    late = [rss for t, rss in rss_samples if t >= args.minutes * 60 - 60]
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    print(f"Machine: {model}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"{args.feeds} feeds on {len(HOSTS)} hosts, interval 1m, {args.changing} feeds gain a story every minute, "
          f"{args.minutes:g} minutes; daemon exit code {code}\n")
    print("| measure | value |\n| --- | ---: |")
    print(f"| CPU time of the daemon (all processes) | {cpu:.1f} s ({100 * cpu / elapsed:.1f}% of one core) |")
    print(f"| peak RSS (process tree) | {max(r for _, r in rss_samples) / 2**20:.0f} MB |")
    print(f"| final RSS (process tree) | {rss_samples[-1][1] / 2**20:.0f} MB |")
    print(f"| RSS, median of minute {int(half // 60) + 1} → of the last minute | {statistics.median(early) / 2**20:.1f} MB → "
          f"{statistics.median(late) / 2**20:.1f} MB |")
    print(f"| RSS range over the last {half / 60:g} minutes | {min(last_half) / 2**20:.1f}-{max(last_half) / 2**20:.1f} MB |")
    print(f"| requests sent | {farm.requests} ({farm.requests / elapsed:.1f}/s) |")
    print(f"| repeat requests conditional (validators were given) | {farm.repeat_conditional}/{farm.repeat_with_validators}"
          f" = {100 * farm.repeat_conditional / max(1, farm.repeat_with_validators):.1f}% |")
    print(f"| stories added upstream / seen in /latest.atom | {len(farm.added_at)} / {len(delays)} |")
    if delays:
        print(f"| delay upstream → /latest.atom, median | {statistics.median(delays):.1f} s ({statistics.median(delays) / 60:.2f} intervals) |")
        print(f"| delay, max | {max(delays):.1f} s ({max(delays) / 60:.2f} intervals) |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
