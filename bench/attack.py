"""Attacks on a real `aggregator serve` on 127.0.0.1, bounded in time, with one report (issue 9).

    python -m bench.attack                                  # every attack, about 4 minutes
    python -m bench.attack --only slowloris-300,slow-readers-200 --seconds 5
    python -m bench.attack --baseline 3212edc               # the same attacks on an older commit too

Each attack is a function registered with ``@attack(name)``: a context manager that puts its load on a running
``Target`` (the server's port, process and log) and yields an ``Outcome`` to describe it. While the load is on,
the common harness measures a normal client (a GET of /latest.atom and of /healthz, each on a fresh connection,
5 s timeout, back to back) and samples the server's RSS, open descriptors and temporary files; afterwards it
counts tracebacks and ERROR lines in the server's log. The report is one Markdown row per attack. New attacks
(huge fields, pathological text, bad config values) add a function; one that needs its own settings passes them
as ``@attack(name, http={...})`` and one that needs its own database or feeds can build it in the attack.

Every server gets a fresh start on a database polled once from 14 real-world feeds (shared/corpus), so the
documents are of realistic size. The hostile clients are the ones the tests use (tests/hostile_clients.py).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/hostile_clients.py, when run as a script

from tests.hostile_clients import NASTY_REQUESTS, SlowReaders, Trickle, raw_exchange, timed_get  # noqa: E402

CORPUS = Path(os.environ.get("AGGREGATOR_CORPUS", REPO.parent / "shared/corpus/realworld"))
FEEDS = ["guardian-uk_rss-parser.rss", "washingtonpost-wellness.xml", "daringfireball.atom", "tpm-news.atom",
         "lemonde.xml", "bbc-urdu_rss.xml", "techcrunch.xml", "nixos-news.xml", "voa-urdu.xml", "livemint_india.xml",
         "cloudflare-blog_trimmed.xml", "google-cloud-blog.rss", "heise-developer.atom", "rue89_fr.xml"]
MB = 1024**2


# --- the target ----------------------------------------------------------------------------------


@dataclass
class Target:
    port: int
    proc: subprocess.Popen[bytes]
    process: psutil.Process
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Outcome:
    load: str  # what the attacker did, in a few words
    notes: list[str] = field(default_factory=list)


@dataclass
class Attack:
    name: str
    run: Callable[[Target], contextlib.AbstractContextManager[Outcome]]
    http: dict[str, object]
    big_document: bool  # the database also holds a feed of 16 entries of 1 MB each


ATTACKS: dict[str, Attack] = {}


def attack(name: str, http: dict[str, object] | None = None,
           big_document: bool = False) -> Callable[[Callable[[Target], Iterator[Outcome]]], None]:
    def register(function: Callable[[Target], Iterator[Outcome]]) -> None:
        ATTACKS[name] = Attack(name, contextlib.contextmanager(function), http or {}, big_document)

    return register


class Workspace:
    """A config, a database polled from real feeds, and the code to run (this checkout or an older commit)."""

    def __init__(self, code: Path, label: str, big_document: bool = False):
        self.code = code
        self.label = label
        self.root = Path(tempfile.mkdtemp(prefix="attack-"))
        (self.root / "feeds").mkdir()
        (self.root / "corpus").mkdir()
        names = list(FEEDS)
        for name in FEEDS:
            shutil.copy(CORPUS / name, self.root / "corpus" / name)
        if big_document:
            (self.root / "corpus" / "big.rss").write_text(_big_feed(16, 1_000_000))
            names.append("big.rss")
        files = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietFiles, directory=str(self.root / "corpus")))
        threading.Thread(target=files.serve_forever, daemon=True).start()
        try:
            (self.root / "feeds" / "bench.yaml").write_text(
                "feeds:\n" + "".join(f"  - url: http://127.0.0.1:{files.server_address[1]}/{n}\n" for n in names))
            self.configure({})
            subprocess.run([sys.executable, "-m", "aggregator", "poll", "--config", str(self.root / "config.yaml")],
                           check=True, capture_output=True, env=self.env, cwd=self.root)
        finally:
            files.shutdown()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(self.code), "PYTHONUNBUFFERED": "1"}

    def configure(self, http: dict[str, object], port: int = 0) -> None:
        items = ", ".join(f"{k}: {v}" for k, v in {"port": port, **http}.items())
        (self.root / "config.yaml").write_text(
            f"database: attack.db\nhttp: {{{items}}}\noutput: {{entries: 100, per_source: 20}}\n"
            "polling: {max_bytes: 100MB}\nlogging: {level: info}\n")

    @contextlib.contextmanager
    def serve(self, http: dict[str, object]) -> Iterator[Target]:
        port = _free_port()
        self.configure(http, port)
        log_path = self.root / f"serve-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "aggregator", "serve", "--config",
                                     str(self.root / "config.yaml")], stdout=log, stderr=log, env=self.env,
                                    cwd=self.root)
        try:
            deadline = time.monotonic() + 30
            while timed_get(port, "/healthz", timeout=1)[1] != 200:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"serve did not start:\n{log_path.read_text()}")
                time.sleep(0.1)
            yield Target(port, proc, psutil.Process(proc.pid), log_path)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _big_feed(entries: int, size: int) -> str:
    """An RSS feed whose entries carry ``size`` characters of text each (nothing caps content yet: issue 9 item 3)."""
    paragraph = "<p>" + "All work and no play makes a large document. " * 20 + "</p>"
    content = paragraph * (size // len(paragraph))
    items = "".join(
        f"<item><title>Big {i}</title><link>http://big.example/{i}</link><guid>http://big.example/{i}</guid>"
        f"<pubDate>Mon, 30 Nov 2026 {i % 24:02d}:00:00 GMT</pubDate><description><![CDATA[{content}]]></description>"
        "</item>" for i in range(entries))
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Big</title>'
            f"<link>http://big.example/</link><description>d</description>{items}</channel></rss>")


class _QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- measuring -----------------------------------------------------------------------------------


class Sampler:
    """The server's peak RSS, open descriptors and bytes in open, unlinked temporary files (where
    waitress spills response buffers past 1 MB), every 0.2 s."""

    def __init__(self, process: psutil.Process):
        self.process = process
        self.rss = self.fds = self.spilled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            with contextlib.suppress(psutil.Error):
                self.rss = max(self.rss, self.process.memory_info().rss)
                self.fds = max(self.fds, self.process.num_fds())
                self.spilled = max(self.spilled, self._temp_bytes())

    def _temp_bytes(self) -> int:
        temp, total = os.path.realpath(tempfile.gettempdir()) + "/", 0
        fd_dir = f"/proc/{self.process.pid}/fd"
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                link = os.readlink(f"{fd_dir}/{fd}")
                if link.startswith(temp) and link.endswith(" (deleted)"):  # waitress' spill files are unlinked
                    total += os.stat(f"{fd_dir}/{fd}").st_size
        return total

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Row:
    attack: str
    code: str
    load: str
    latencies: dict[str, list[float]]
    errors: int
    requests: int
    rss: int
    fds: int
    spilled: int
    log_problems: int
    notes: list[str]


def normal_client(port: int, seconds: float) -> tuple[dict[str, list[float]], int, int]:
    latencies: dict[str, list[float]] = {"/latest.atom": [], "/healthz": []}
    errors = requests = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path, times in latencies.items():
            latency, status, _ = timed_get(port, path, timeout=5)
            requests += 1
            if status == 200:
                times.append(latency)
            else:
                errors += 1
                times.append(5.0 if status is None else latency)  # a timeout counts as the full 5 s
    return latencies, errors, requests


def run_attack(spec: Attack, workspace: Workspace, seconds: float) -> Row:
    with workspace.serve(spec.http) as target:
        sampler = Sampler(target.process)
        try:
            with spec.run(target) as outcome:
                latencies, errors, requests = normal_client(target.port, seconds)
        finally:
            sampler.stop()
        alive = target.proc.poll() is None
        log = target.log
    if not alive:
        outcome.notes.append("server died")
    problems = log.count("Traceback") + log.count(" ERROR ")
    return Row(spec.name, workspace.label, outcome.load, latencies, errors, requests, sampler.rss, sampler.fds,
               sampler.spilled, problems, outcome.notes)


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    if q == 0.5:
        return f"{statistics.median(ordered) * 1000:.0f}"
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.0f}"


def report(rows: list[Row], seconds: float) -> str:
    lines = [
        f"Machine: {machine()}. Normal client measured for {seconds:g} s per attack while the load was on.",
        "",
        "| attack | code | load | /latest.atom median / p99 ms | /healthz median / p99 ms | failed / requests "
        "| server RSS MB | fds | spilled to /tmp MB | tracebacks + ERROR lines | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        atom, health = r.latencies["/latest.atom"], r.latencies["/healthz"]
        lines.append(
            f"| {r.attack} | {r.code} | {r.load} | {_ms(atom, 0.5)} / {_ms(atom, 0.99)} | {_ms(health, 0.5)} / "
            f"{_ms(health, 0.99)} | {r.errors} / {r.requests} | {r.rss / MB:.0f} | {r.fds} | {r.spilled / MB:.0f} | "
            f"{r.log_problems} | {'; '.join(r.notes)} |")
    return "\n".join(lines)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


# --- the attacks ---------------------------------------------------------------------------------


@attack("none")
def no_attack(target: Target) -> Iterator[Outcome]:
    size = len(timed_get(target.port, "/latest.atom")[2])
    yield Outcome(f"nothing (reference; /latest.atom is {size / 1000:.0f} KB)")


def _slowloris(target: Target, count: int, every: float = 5.0) -> Iterator[Outcome]:
    """The issue's attack: each connection sends one header line every 5 s and never ends its request;
    connections the server closes are reopened at once."""
    with Trickle(target.port, count, every=every, reconnect=True) as trickle:
        opened = trickle.wait_open(timeout=60)
        outcome = Outcome(f"{count} connections, a header line every {every:g} s, reopened when closed")
        if not opened:
            outcome.notes.append(f"only {trickle.stats.opened} of {count} connections could be opened")
        yield outcome
        outcome.notes.append(f"attacker had {trickle.open_now} open at the end, server closed "
                             f"{trickle.stats.closed_by_server}")


@attack("slowloris-300")
def slowloris_300(target: Target) -> Iterator[Outcome]:
    yield from _slowloris(target, 300)


@attack("slowloris-500")
def slowloris_500(target: Target) -> Iterator[Outcome]:
    yield from _slowloris(target, 500)


@attack("slowloris-1000")
def slowloris_1000(target: Target) -> Iterator[Outcome]:
    yield from _slowloris(target, 1000)


@attack("slowloris-2000")
def slowloris_2000(target: Target) -> Iterator[Outcome]:
    """Twice the default connection limit, reconnecting: the server has to make room."""
    yield from _slowloris(target, 2000, every=1.0)


@attack("silent-1000")
def silent_1000(target: Target) -> Iterator[Outcome]:
    with Trickle(target.port, 1000, silent=True, reconnect=True) as silent:
        silent.wait_open(timeout=60)
        outcome = Outcome("1000 connections that send nothing, reopened when closed")
        yield outcome
        outcome.notes.append(f"server closed {silent.stats.closed_by_server}")


@attack("slow-readers-200")
def slow_readers_200(target: Target) -> Iterator[Outcome]:
    """200 clients ask for /latest.atom and read nothing (4 KB receive buffers)."""
    status, body = timed_get(target.port, "/latest.atom")[1:]
    readers = SlowReaders(target.port, 200)
    try:
        yield Outcome(f"200 GET /latest.atom ({len(body) / MB:.1f} MB, status {status}), nothing read")
    finally:
        readers.close()


@attack("none-big", big_document=True)
def no_attack_big(target: Target) -> Iterator[Outcome]:
    size = len(timed_get(target.port, "/latest.atom", timeout=60)[2])
    yield Outcome(f"nothing (reference for the next row; /latest.atom is {size / MB:.0f} MB)")


@attack("slow-readers-big", big_document=True)
def slow_readers_big(target: Target) -> Iterator[Outcome]:
    """20 clients ask for a /latest.atom of tens of MB (16 entries of 1 MB in it) and read nothing: the case
    where waitress spilled a copy per reader to /tmp."""
    status, body = timed_get(target.port, "/latest.atom", timeout=60)[1:]
    readers = SlowReaders(target.port, 20)
    try:
        yield Outcome(f"20 GET /latest.atom ({len(body) / MB:.0f} MB, status {status}), nothing read")
    finally:
        readers.close()


@attack("malformed-requests")
def malformed_requests(target: Target) -> Iterator[Outcome]:
    """The nasty requests of the tests, sent in a loop by one client; counts answers of 500 and above."""
    stop = threading.Event()
    counts = {"sent": 0, "5xx or none": 0}

    def loop() -> None:
        while not stop.is_set():
            for request in NASTY_REQUESTS.values():
                answer = raw_exchange(target.port, request, timeout=5)
                counts["sent"] += 1
                if not answer[:12].startswith((b"HTTP/1.1 1", b"HTTP/1.1 2", b"HTTP/1.1 3", b"HTTP/1.1 4",
                                               b"HTTP/1.0 1", b"HTTP/1.0 2", b"HTTP/1.0 3", b"HTTP/1.0 4")):
                    counts["5xx or none"] += 1

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    outcome = Outcome(f"{len(NASTY_REQUESTS)} kinds of malformed request, in a loop")
    try:
        yield outcome
    finally:
        stop.set()
        thread.join()
    outcome.notes.append(f"{counts['5xx or none']} of {counts['sent']} answered 5xx or not at all")


# --- main ----------------------------------------------------------------------------------------


def _checkout(commit: str) -> Path:
    """The aggregator package of an older commit, extracted to a temporary directory."""
    target = Path(tempfile.mkdtemp(prefix=f"attack-{commit}-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "aggregator"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated attack names (default: all): " + ", ".join(ATTACKS))
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the normal client is measured")
    parser.add_argument("--baseline", help="also run the attacks against this older commit")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        parser.error(f"unknown attack(s): {', '.join(unknown)}")
    codes = [(REPO, "this")]
    if args.baseline:
        codes.append((_checkout(args.baseline), args.baseline))
    rows = []
    for code, label in codes:
        for big in (False, True):
            chosen = [ATTACKS[n] for n in names if ATTACKS[n].big_document is big]
            chosen = [a for a in chosen if not (a.http and label != "this")]  # an older commit may not know them
            if not chosen:
                continue
            workspace = Workspace(code, label, big_document=big)
            try:
                for spec in chosen:
                    print(f"{label}: {spec.name} ...", file=sys.stderr, flush=True)
                    rows.append(run_attack(spec, workspace, args.seconds))
            finally:
                workspace.close()
    rows.sort(key=lambda r: (names.index(r.attack), r.code != "this"))
    print(report(rows, args.seconds))
    for code, label in codes:
        if label != "this":
            shutil.rmtree(code, ignore_errors=True)


if __name__ == "__main__":
    main()
