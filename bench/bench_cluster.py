"""Several pollers sharing one PostgreSQL database (issue 14).

    pip install -e '.[test,bench]'
    python -m bench.bench_cluster [--feeds 10000] [--minutes 5] [--pollers 1,2,3] [--json out.json]
    python -m bench.bench_cluster --feeds 1000 --minutes 1 --pollers 1,2     # a smoke run (~6 minutes)

What it does. A feed farm (bench/feedfarm.py, its own process) serves
--feeds synthetic feeds from --hosts loopback addresses and logs every feed
request's start and end. A throwaway PostgreSQL (tests/pg.py, Unix socket
only) holds the database. Set-up, untimed: one cold `aggregator poll` of all
feeds into a template database (every entry stored once). Then, for each
number of pollers P:

  * a copy of the template (CREATE DATABASE ... TEMPLATE), with every feed's
    next poll spread evenly over the coming minute (a steady state, not a
    thundering start) and the farm back at its first generation;
  * P `aggregator run` processes, each with its own config and port, the same
    database and feeds/, polling every feed every minute (interval,
    min_interval and max_interval 1m, adaptive off, the default 10% jitter);
  * once all answer /healthz, a window of --minutes during which every minute
    --changing of the feeds (round robin) gain 2 entries (so some polls are
    200 with new articles, most are 304) ;
  * then SIGTERM, and the database is dropped.

Reported per P, over the window only (start-up excluded): polls per second
(feed requests the farm answered), CPU seconds per 1,000 polls of the
pollers' process trees (user+sys of every process, reaped children
included), the same for the database server and the farm (they share the
cores), the claim query's server-side time (median, p99: PostgreSQL logs the
duration of every statement of the bench database, log_min_duration_statement
= 0; the claim is the UPDATE ... FOR UPDATE SKIP LOCKED of claim_due; its
parse, bind and execute steps are added up), double polls (two requests for
one feed whose [start, end] overlap at the farm: must be 0), early repolls
(two polls of one feed less than half an interval apart: a claim race would
show here), the gap between two polls of one feed (median and p95: about 60 s
when the pollers keep up), and the per-host peak of concurrent requests the
farm saw (must not exceed polling.per_host).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable
    sys.path.insert(0, str(ROOT))

from bench.feedfarm import FarmProcess, FarmSpec  # noqa: E402
from tests.pg import PgCluster  # noqa: E402

# The claim of claim_due (aggregator/store/feeds.py) as PostgreSQL logs it; claim() of `aggregator poll` differs.
CLAIM_SQL = "UPDATE feeds SET lease_owner = $1, lease_until = $2 WHERE id IN ( SELECT f.id FROM feeds f WHERE"
DURATION = re.compile(
    r"\[(?P<pid>\d+)\] LOG:  duration: (?P<ms>[\d.]+) ms  (?P<step>parse|bind|execute) [^:]*: (?P<sql>.*)"
)
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def tree_cpu(pid: int) -> float:
    """User+sys seconds of a process and its descendants, reaped children included."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            continue
    return total


@dataclass
class Result:
    pollers: int
    window: float  # seconds
    polls: int
    status: dict[str, int]
    cpu_pollers: float
    cpu_server: float
    cpu_farm: float
    claims: int
    claim_ms_median: float
    claim_ms_p99: float
    claim_ms_max: float
    double_polls: int
    early_repolls: int
    gap_median: float
    gap_p95: float
    feeds_polled: int
    overdue_at_end: int
    host_peak: int
    per_host: int
    errors: int
    load: list[float] = field(default_factory=list)

    @property
    def polls_per_second(self) -> float:
        return self.polls / self.window

    def per_1000(self, cpu: float) -> float:
        return 1000 * cpu / self.polls if self.polls else float("nan")


class Bench:
    def __init__(self, args: argparse.Namespace, base: Path):
        self.args = args
        self.base = base
        self.feeds_dir = base / "feeds"
        self.pg = PgCluster()
        if self.pg.root is None:
            raise SystemExit("bench_cluster needs a server of its own (unset AGGREGATOR_TEST_POSTGRES)")
        self.server_log = self.pg.root / "server.log"
        self.postmaster = int((self.pg.root / "data" / "postmaster.pid").read_text().split()[0])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        for key in ("NO_PROXY", "no_proxy"):
            env[key] = ",".join(filter(None, [env.get(key), "127.0.0.0/8", "localhost"]))
        self.env = env
        self.executable = str(Path(sys.executable).with_name("aggregator"))

    def config(self, directory: Path, database: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        a = self.args
        text = (
            f"database: {json.dumps(database)}\nfeeds_dir: {json.dumps(str(self.feeds_dir))}\n"
            f"http: {{port: {free_port()}}}\nlogging: {{level: warning}}\n"
            f"polling: {{interval: 1m, min_interval: 1m, max_interval: 1m, adaptive: false, workers: {a.workers},"
            f" per_host: {a.per_host}}}\n"
        )
        path = directory / "config.yaml"
        path.write_text(text)
        return path

    def template(self, farm: FarmProcess) -> str:
        """The template database: every farm feed polled once (cold), untimed set-up."""
        self.feeds_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(farm.feeds_yaml, self.feeds_dir / "farm.yaml")
        self.pg.admin("CREATE DATABASE cluster_template")
        config = self.config(self.base / "template", self.pg.url("cluster_template"))
        log(f"set-up: cold `aggregator poll` of {self.args.feeds} feeds into the template database")
        started = time.monotonic()
        out = subprocess.run([self.executable, "poll", "--no-progress", "--config", str(config)], env=self.env,
                             capture_output=True, text=True, check=True).stdout
        self.cold_seconds = time.monotonic() - started
        self.cold_summary = next((line for line in out.splitlines() if line.startswith("Polled ")), out.strip()[-300:])
        log(f"set-up: {self.cold_summary} ({self.cold_seconds:.0f}s)")
        return "cluster_template"

    def copy(self, template: str, name: str) -> str:
        self.pg.admin(f"DROP DATABASE IF EXISTS {name}")
        self.pg.admin(f"CREATE DATABASE {name} TEMPLATE {template}")
        # Every statement of this database gets its duration logged (the claim's is read back); no parameters.
        self.pg.admin(f"ALTER DATABASE {name} SET log_min_duration_statement = 0")
        self.pg.admin(f"ALTER DATABASE {name} SET log_parameter_max_length = 0")
        import psycopg

        with psycopg.connect(self.pg.url(name), autocommit=True) as conn:
            # A steady state: every feed's next poll somewhere in the coming minute, nobody holding anything.
            conn.execute(
                "UPDATE feeds SET next_poll_at = to_char((now() + random() * interval '60 seconds') AT TIME ZONE 'UTC',"
                " 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), lease_owner = NULL, lease_until = NULL"
            )
            for table in ("host_slots", "host_backoff", "nodes", "node_feeds"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("VACUUM ANALYZE feeds")
        return name

    def overdue(self, name: str) -> int:
        import psycopg

        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        with psycopg.connect(self.pg.url(name), autocommit=True) as conn:
            conn.execute("SET log_min_duration_statement = -1")
            row = conn.execute(
                "SELECT count(*) FROM feeds WHERE status = 'active' AND next_poll_at < to_char("
                "(%s::timestamptz - interval '10 seconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                (stamp,),
            ).fetchone()
        return int(row[0]) if row else 0

    def run(self, farm: FarmProcess, template: str, pollers: int) -> Result:
        a = self.args
        name = self.copy(template, f"cluster_{pollers}")
        farm.client.reset()
        url = self.pg.url(name)
        procs: list[tuple[subprocess.Popen[bytes], int, Path]] = []
        for i in range(pollers):
            directory = self.base / f"p{pollers}" / f"node{i}"
            config = self.config(directory, url)
            port = int(re.search(r"port: (\d+)", config.read_text()).group(1))  # type: ignore[union-attr]
            with (directory / "stderr.log").open("wb") as err:
                proc = subprocess.Popen([self.executable, "run", "--config", str(config)], cwd=directory,
                                        env=self.env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
            procs.append((proc, port, directory))
        try:
            deadline = time.monotonic() + 180
            for proc, port, directory in procs:
                while not self._healthy(port):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"poller in {directory} did not start: "
                                           f"{(directory / 'stderr.log').read_text()[-2000:]}")
                    time.sleep(0.2)
            log(f"[{pollers} poller(s)] all healthy; measuring {a.minutes:g} minutes")
            start = self._snapshot(procs, farm)
            log_offset = self.server_log.stat().st_size
            stop = threading.Event()
            bumper = threading.Thread(target=self._bump, args=(farm, stop), daemon=True)
            bumper.start()
            end_at = time.monotonic() + a.minutes * 60
            while time.monotonic() < end_at:
                for proc, _, directory in procs:
                    if proc.poll() is not None:
                        tail = (directory / "stderr.log").read_text()[-2000:]
                        raise RuntimeError(f"poller in {directory} died: {tail}")
                time.sleep(min(5.0, max(0.0, end_at - time.monotonic())))
            end = self._snapshot(procs, farm)
            stop.set()
            overdue = self.overdue(name)
            requests = farm.client.requests()
            stats = farm.client.stats()
            bumper.join(timeout=120)
        finally:
            for proc, _, _ in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc, _, _ in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        claims = self._claim_times(log_offset)
        window = end["time"] - start["time"]
        polls = [r for r in requests if start["time"] <= r[1] < end["time"]]
        doubles, early, gaps, polled = _overlaps(polls, 30.0)
        errors = sum((d / "stderr.log").read_text(errors="replace").count(" ERROR ") for _, _, d in procs)
        self.pg.admin(f"DROP DATABASE {name}")
        return Result(
            pollers=pollers, window=window, polls=len(polls),
            status={k: int(v) for k, v in stats["status"].items()},
            cpu_pollers=end["pollers"] - start["pollers"], cpu_server=end["server"] - start["server"],
            cpu_farm=end["farm"] - start["farm"], claims=len(claims),
            claim_ms_median=statistics.median(claims) if claims else float("nan"),
            claim_ms_p99=percentile(claims, 99), claim_ms_max=max(claims, default=float("nan")),
            double_polls=doubles, early_repolls=early,
            gap_median=statistics.median(gaps) if gaps else float("nan"), gap_p95=percentile(gaps, 95),
            feeds_polled=polled, overdue_at_end=overdue, host_peak=max(stats["host_peak"].values(), default=0),
            per_host=a.per_host, errors=errors, load=[round(x, 2) for x in os.getloadavg()],
        )  # fmt: skip

    @staticmethod
    def _healthy(port: int) -> bool:
        try:
            with _opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def _snapshot(self, procs: list[tuple[subprocess.Popen[bytes], int, Path]], farm: FarmProcess) -> dict[str, float]:
        return {"time": time.time(), "pollers": sum(tree_cpu(p.pid) for p, _, _ in procs),
                "server": tree_cpu(self.postmaster), "farm": tree_cpu(farm.pid)}

    def _bump(self, farm: FarmProcess, stop: threading.Event) -> None:
        count = round(self.args.changing * self.args.feeds)
        while count and not stop.wait(60):
            farm.client.bump_some(count)

    def _claim_times(self, offset: int) -> list[float]:
        """Server-side milliseconds of each claim_due statement logged after ``offset``:
        parse + bind + execute of one statement (one backend runs one at a time)."""
        pending: dict[str, float] = {}
        times: list[float] = []
        with self.server_log.open("rb") as f:
            f.seek(offset)
            for raw in f:
                line = raw.decode("utf-8", "replace")
                if "duration:" not in line or CLAIM_SQL not in line:
                    continue
                m = DURATION.search(line)
                if not m:
                    continue
                pid = m["pid"]
                pending[pid] = pending.get(pid, 0.0) + float(m["ms"])
                if m["step"] == "execute":
                    times.append(pending.pop(pid))
        return times

    def stop(self) -> None:
        self.pg.stop()


def _overlaps(requests: list[tuple[int, float, float]], early: float) -> tuple[int, int, list[float], int]:
    """Double polls (two requests for one feed overlapping in time), polls of one
    feed less than ``early`` seconds apart, the gaps between polls of one feed,
    and how many feeds were polled."""
    by_feed: dict[int, list[tuple[float, float]]] = {}
    for index, started, ended in requests:
        by_feed.setdefault(index, []).append((started, ended))
    doubles = repolls = 0
    gaps: list[float] = []
    for times in by_feed.values():
        times.sort()
        for (s0, e0), (s1, _) in itertools.pairwise(times):
            if s1 < e0:
                doubles += 1
            elif s1 - s0 < early:
                repolls += 1
            gaps.append(s1 - s0)
    return doubles, repolls, gaps, len(by_feed)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())  # fmt: skip
    return (f"{model}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
            f"{psutil.virtual_memory().total / 2**30:.1f} GiB RAM, Linux {platform.release()}, "
            f"Python {platform.python_version()}")  # fmt: skip


def report(results: list[Result], bench: Bench, args: argparse.Namespace, load_start: list[float]) -> str:
    out = [
        f"- Machine: {machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; load average at start "
        f"{' / '.join(f'{x:.2f}' for x in load_start)} (1/5/15 min)",
        f"- Farm: {args.feeds} feeds x {args.entries} entries on {args.hosts} loopback addresses; every minute "
        f"{args.changing:.0%} of the feeds gain 2 entries. Set-up (untimed): {bench.cold_summary}",
        f"- Pollers: `aggregator run`, workers {args.workers}, per_host {args.per_host}, interval 1 min; "
        f"window {args.minutes:g} min after all answered /healthz",
        "",
        "| pollers | polls/s | 200 / 304 | CPU s per 1,000 polls: pollers | server | farm | claims | claim ms "
        "median | p99 | max | double polls | early repolls | gap s median / p95 | overdue at end | host peak "
        "(per_host) | errors |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in results:
        out.append(
            f"| {r.pollers} | {r.polls_per_second:.1f} | {r.status.get('200', 0)} / {r.status.get('304', 0)} | "
            f"{r.per_1000(r.cpu_pollers):.1f} | {r.per_1000(r.cpu_server):.1f} | {r.per_1000(r.cpu_farm):.1f} | "
            f"{r.claims} | {r.claim_ms_median:.2f} | {r.claim_ms_p99:.2f} | {r.claim_ms_max:.1f} | {r.double_polls} | "
            f"{r.early_repolls} | {r.gap_median:.1f} / {r.gap_p95:.1f} | {r.overdue_at_end} | {r.host_peak} "
            f"({r.per_host}) | {r.errors} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=10_000)
    parser.add_argument("--entries", type=int, default=10, help="entries per feed (default: %(default)s)")
    parser.add_argument("--hosts", type=int, default=20, help="loopback addresses (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=5, help="measured window per poller count (default: 5)")
    parser.add_argument("--pollers", default="1,2,3", help="poller counts to run (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=8, help="polling.workers of each poller (default: 8)")
    parser.add_argument("--per-host", type=int, default=2, help="polling.per_host (default: 2)")
    parser.add_argument("--changing", type=float, default=0.1,
                        help="fraction of the feeds that gain 2 entries each minute (default: 0.1)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, poller logs)")
    args = parser.parse_args(argv)
    load_start = list(os.getloadavg())
    base = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    bench = Bench(args, base)
    results: list[Result] = []
    try:
        spec = FarmSpec(feeds=args.feeds, entries=args.entries, hosts=args.hosts)
        with FarmProcess(spec, base / "farm", log_requests=True) as farm:
            template = bench.template(farm)
            for count in (int(p) for p in args.pollers.split(",")):
                result = bench.run(farm, template, count)
                log(f"[{count} poller(s)] {result.polls_per_second:.1f} polls/s, "
                    f"{result.per_1000(result.cpu_pollers):.1f} CPU s per 1,000 polls, claim median "
                    f"{result.claim_ms_median:.2f} ms p99 {result.claim_ms_p99:.2f} ms, "
                    f"{result.double_polls} double polls, host peak {result.host_peak}")
                results.append(result)
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    text = report(results, bench, args, load_start)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": [asdict(r) for r in results]}, indent=1))
    bad = [r for r in results if r.double_polls or r.host_peak > r.per_host]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
