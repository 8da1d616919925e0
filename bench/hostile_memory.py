"""Peak memory of `aggregator poll` against hostile feeds.

How to run (from the repository root, in the project's venv; psutil comes
with the `test` and `bench` extras):

    python -m bench.hostile_memory              # 3 runs per case
    python -m bench.hostile_memory --runs 1 --bomb-gb 4

What it does. A small HTTP server in this process (127.0.0.1, a thread per
request) serves three feeds:

    normal   a well-formed RSS feed of 50 entries (the baseline)
    huge     a 40 MB RSS document, generated while it is sent, without a
             Content-Length (only reading while streaming can stop it)
    bomb     Content-Encoding: gzip, --bomb-gb GB of zeros (default 2 GB)
             from about 1 KB on the wire per MB inflated (~2 MB for 2 GB):
             one full-flush deflate block repeated, so nothing big is held
             here either

For each case and run, a fresh directory gets an empty config.yaml (every
setting at its default: max_bytes 10MB, timeout 30s, deadline 60s) and a
feeds/ file with that one feed, and `python -m aggregator poll --no-progress`
runs as a subprocess. The RSS of its whole process tree (the command and
any children, summed) is sampled with psutil every --interval seconds
(default 20 ms) and its peak reported, next to the kernel's ru_maxrss of
the command itself (from wait4: a peak no sampling interval can miss), the
wall time, and the outcome line the command printed.

The server counts what it wrote for each request: for `huge` and `bomb` that
shows how much of the body was sent before the poller hung up (socket
buffers hold a few MB; the rest was never read).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil

MB = 1000**2
GB = 1000**3

# --- the feeds ---------------------------------------------------------------------------------------


def normal_feed(entries: int = 50) -> bytes:
    items = "".join(
        f"<item><title>Story {n}</title><link>http://news.example/story/{n}</link>"
        f"<guid>http://news.example/story/{n}</guid><pubDate>Mon, 01 Jun 2026 10:{n % 60:02d}:00 +0000</pubDate>"
        f"<description>&lt;p&gt;Body of story {n}. {'Lorem ipsum dolor sit amet. ' * 20}&lt;/p&gt;</description></item>\n"
        for n in range(entries))
    return ('<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Normal</title>'
            f"<link>http://news.example/</link><description>d</description>\n{items}</channel></rss>\n").encode()


HUGE_HEAD = (b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Huge</title>'
             b"<link>http://huge.example/</link><description>d</description>\n")
HUGE_BLOCK = "".join(f"<item><title>Filler {i}</title><link>http://huge.example/{i}</link><description>"
                     + "x" * 400 + "</description></item>\n" for i in range(140)).encode()  # ~64 KB


def gzip_units(zeros: int = 10 * MB) -> tuple[bytes, bytes]:
    """(gzip header + first block, a block that can be repeated): each block
    inflates to ``zeros`` zero bytes and ends with a full flush."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = b"\0" * zeros
    first = compressor.compress(b"<rss>") + compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    unit = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first, unit


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}

    def add(self, path: str, n: int) -> None:
        with self.lock:
            self.sent[path] = self.sent.get(path, 0) + n


def make_handler(counter: Counter, huge_bytes: int, bomb_bytes: int) -> type[BaseHTTPRequestHandler]:
    normal = normal_feed()
    first, unit = gzip_units()
    units = max(1, bomb_bytes // (10 * MB))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _write(self, data: bytes) -> bool:
            try:
                self.wfile.write(data)
                self.wfile.flush()
            except OSError:
                return False
            counter.add(self.path, len(data))
            return True

        def do_GET(self) -> None:
            if self.path == "/normal":
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(normal)))
                self.end_headers()
                self._write(normal)
            elif self.path == "/huge":
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Connection", "close")
                self.end_headers()
                written = 0
                if not self._write(HUGE_HEAD):
                    return
                while written < huge_bytes:
                    if not self._write(HUGE_BLOCK):
                        return
                    written += len(HUGE_BLOCK)
                self._write(b"</channel></rss>\n")
            elif self.path == "/bomb":
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Connection", "close")
                self.end_headers()
                if not self._write(first):
                    return
                for _ in range(units - 1):
                    if not self._write(unit):
                        return
            else:
                self.send_error(404)

    return Handler


# --- measuring -------------------------------------------------------------------------------------------


def tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(sum of RSS over the process and its descendants, largest single RSS)."""
    total = largest = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        procs = [proc]
    for p in procs:
        try:
            rss = p.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        largest = max(largest, rss)
    return total, largest


def poll_once(url: str, interval: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hostile-memory-") as tmp:
        root = Path(tmp)
        (root / "config.yaml").write_text("# all defaults: max_bytes 10MB, timeout 30s, deadline 60s\n")
        (root / "feeds").mkdir()
        (root / "feeds" / "bench.yaml").write_text(f"feeds:\n  - url: {url}\n")
        out_path, err_path = root / "stdout", root / "stderr"
        started = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            child = subprocess.Popen([sys.executable, "-m", "aggregator", "poll", "--no-progress", "--config",
                                      str(root / "config.yaml")], stdout=out, stderr=err,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        proc = psutil.Process(child.pid)
        peak_total = peak_single = 0
        while True:
            # wait4 rather than poll(): the kernel's own peak (ru_maxrss) of the
            # command comes with it, a cross-check on the 20 ms samples.
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            total, single = tree_rss(proc)
            peak_total, peak_single = max(peak_total, total), max(peak_single, single)
            time.sleep(interval)
        wall = time.monotonic() - started
        code = os.waitstatus_to_exitcode(status)
        child.returncode = code  # reaped above
        text = out_path.read_text(errors="replace")
        summary = next((line.strip() for line in text.splitlines() if line.strip().startswith("failed:")), "")
        if not summary:
            summary = next((line.strip() for line in text.splitlines() if line.startswith("Polled")), text.strip()[:200])
        summary = re.sub(r"(127\.0\.0\.1):\d+", r"\1", summary)
        return {"peak_tree": peak_total, "peak_single": peak_single, "maxrss": usage.ru_maxrss * 1024, "wall": wall,
                "code": code, "summary": summary, "stderr": err_path.read_text(errors="replace")[-500:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case (the median and max are shown)")
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling interval, seconds")
    parser.add_argument("--huge-mb", type=int, default=40, help="size of the huge feed, MB")
    parser.add_argument("--bomb-gb", type=float, default=2.0, help="decompressed size of the gzip bomb, GB")
    args = parser.parse_args()

    counter = Counter()
    handler = make_handler(counter, args.huge_mb * MB, int(args.bomb_gb * GB))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    first, unit = gzip_units()
    units = max(1, int(args.bomb_gb * GB) // (10 * MB))
    wire = len(first) + len(unit) * (units - 1)

    cases = [("normal", "/normal", "50 entries, %d KB" % (len(normal_feed()) // 1000)),
             ("huge", "/huge", f"{args.huge_mb} MB, no Content-Length"),
             ("bomb", "/bomb", f"gzip, {args.bomb_gb:g} GB inflated, {wire / MB:.1f} MB on the wire")]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {psutil.virtual_memory().total / GB:.0f} GB RAM; "
          f"{args.runs} run(s) per case; RSS sampled every {args.interval * 1000:.0f} ms; default limits (max_bytes 10MB)")
    results: dict[str, list[dict[str, object]]] = {}
    for run in range(args.runs):
        for name, path, _ in cases:
            with counter.lock:
                counter.sent.pop(path, None)
            result = poll_once(f"http://127.0.0.1:{port}{path}", args.interval)
            time.sleep(0.2)
            with counter.lock:
                result["server_sent"] = counter.sent.get(path, 0)
            results.setdefault(name, []).append(result)
    server.shutdown()

    print()
    print(f"{'case':<7} {'feed':<44} {'peak RSS of the tree, median / max':>36} {'kernel maxrss':>14} "
          f"{'wall':>6} {'server sent':>12}")
    baseline = statistics.median(int(r["peak_tree"]) for r in results["normal"])  # type: ignore[arg-type]
    for name, _, description in cases:
        rs = results[name]
        peaks = [int(r["peak_tree"]) for r in rs]  # type: ignore[arg-type]
        median, top = statistics.median(peaks), max(peaks)
        kernel = max(int(r["maxrss"]) for r in rs)  # type: ignore[arg-type]
        wall = statistics.median(float(r["wall"]) for r in rs)  # type: ignore[arg-type]
        sent = max(int(r["server_sent"]) for r in rs)  # type: ignore[arg-type]
        delta = "" if name == "normal" else f" ({(median - baseline) / MB:+.1f} MB)"
        print(f"{name:<7} {description:<44} {median / MB:>9.1f} / {top / MB:>5.1f} MB{delta:>13} "
              f"{kernel / MB:>11.1f} MB {wall:>5.2f}s {sent / MB:>9.2f} MB")
    print()
    for name, _, _ in cases:
        r = results[name][-1]
        print(f"{name}: exit {r['code']}: {r['summary']}")
    failed = [name for name, _, _ in cases if any(r["code"] not in (0,) for r in results[name])]
    if failed:
        for name in failed:
            print(f"\n{name} stderr (last run):\n{results[name][-1]['stderr']}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
