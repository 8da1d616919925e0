"""Serving benchmark: `aggregator serve` answering /latest.atom (100 entries)
under wrk at 16 connections, for full 200 responses (identity and gzip) and
for 304s (If-None-Match).

    pip install -e '.[bench]'; apt install wrk
    python bench/bench_serve.py [--duration 10] [--runs 3]

The database is filled from the real-world corpus (../shared/corpus), so the
entries carry real content. Prints requests/s and p99 latency, median of the
runs, and writes nothing else.
"""

from __future__ import annotations

import argparse
import http.client
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("AGGREGATOR_CORPUS", REPO.parent / "shared/corpus/realworld"))
FEEDS = ["guardian-uk_rss-parser.rss", "washingtonpost-wellness.xml", "daringfireball.atom", "tpm-news.atom",
         "lemonde.xml", "bbc-urdu_rss.xml", "techcrunch.xml", "nixos-news.xml", "voa-urdu.xml", "livemint_india.xml",
         "cloudflare-blog_trimmed.xml", "google-cloud-blog.rss", "heise-developer.atom", "rue89_fr.xml"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def wrk(url: str, duration: int, headers: list[str]) -> tuple[float, float]:
    args = ["wrk", "-t2", "-c16", f"-d{duration}s", "--latency"]
    for header in headers:
        args += ["-H", header]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99, out
    value, unit = float(p99.group(1)), p99.group(2)
    p99_ms = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"errors during the run: {out}")
    return rps, p99_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    (work / "feeds").mkdir()
    (work / "corpus").mkdir()
    for name in FEEDS:
        shutil.copy(CORPUS / name, work / "corpus" / name)
    files = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(work / "corpus")))
    threading.Thread(target=files.serve_forever, daemon=True).start()
    port = free_port()
    (work / "feeds" / "bench.yaml").write_text(
        "feeds:\n" + "".join(f"  - url: http://127.0.0.1:{files.server_address[1]}/{n}\n" for n in FEEDS))
    (work / "config.yaml").write_text(
        f"database: bench.db\nhttp: {{port: {port}, threads: 4}}\noutput: {{entries: 100, per_source: 20}}\n"
        "logging: {level: warning}\n")
    subprocess.run([sys.executable, "-m", "aggregator", "poll", "--no-progress", "--config", str(work / "config.yaml")],
                   check=True, capture_output=True)
    server = subprocess.Popen([sys.executable, "-m", "aggregator", "serve", "--config", str(work / "config.yaml")],
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/latest.atom")
        response = conn.getresponse()
        body = response.read()
        etag = response.getheader("ETag")
        entries = body.count(b"<entry>")
        url = f"http://127.0.0.1:{port}/latest.atom"
        cases = {"200 identity": [], "200 gzip": ["Accept-Encoding: gzip"], "304 If-None-Match": [f"If-None-Match: {etag}"]}
        results: dict[str, list[tuple[float, float]]] = {case: [] for case in cases}
        for _ in range(args.runs):
            for case, headers in cases.items():  # alternate the cases run by run
                results[case].append(wrk(url, args.duration, headers))
        print(f"Machine: {machine()}")
        print(f"/latest.atom: {entries} entries, {len(body):,} bytes; wrk -t2 -c16 -d{args.duration}s, median of {args.runs} runs\n")
        print("| case | requests/s | p99 latency (ms) |")
        print("| --- | ---: | ---: |")
        for case, runs in results.items():
            print(f"| {case} | {statistics.median(r for r, _ in runs):,.0f} | {statistics.median(p for _, p in runs):.1f} |")
    finally:
        server.terminate()
        server.wait()
        files.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
