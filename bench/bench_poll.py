"""Poll benchmark: aggregator vs. a requests+feedparser baseline (and reader).

How to run (from the repository root, in the project's venv):

    pip install -e '.[bench]'          # psutil, and reader 3.26 for --peer reader
    python -m bench.bench_poll --peer reader --runs 3 \\
        --markdown bench/RESULTS-poll-draft.md --json /tmp/bench-poll.json
    python -m bench.bench_poll --sizes 50x10 --runs 1     # quick smoke run
    python -m bench.bench_poll --postgres --tools ours     # SQLite against PostgreSQL

What it measures. For each size (N feeds x M entries; default 200x50 and
1000x20) a feed farm (bench/feedfarm.py) serves the feeds from 20 loopback
addresses in a separate process. Each tool then runs the sequence

    cold     empty database, every feed is new (N*M new entries)
    warm     the same feeds again, nothing changed (N conditional GETs, all 304)
    changed  after every feed gained 2 entries at the top (2*N new entries)

on a fresh database and a freshly reset farm; one such sequence is a "run".
Runs alternate between the tools (ours, baseline, peer, ours, ...) so that
noise on a shared machine falls on all of them alike, and each figure is the
median over --runs runs. The tools, each a subprocess:

    ours      aggregator poll --no-progress --config <tmp>/config.yaml
              (default polling settings: 8 fetch threads, 2 per host,
              one parse process per core; change with --ours-polling K=V)
    baseline  bench/baseline_poll.py: requests.get + feedparser.parse, one
              thread, conditional requests; stores nothing
    reader    bench/peer_reader.py: lemon24/reader 3.26 with its defaults
              (update_feeds(workers=1), i.e. one thread)
    ours-pg   (--postgres) ours with `database: postgresql://...`: a fresh
              database per run on a throwaway PostgreSQL server (tests/pg.py:
              Unix socket, fsync off), reported against ours (SQLite) of the
              same runs. The server is not in the tool's process tree: its
              CPU (postmaster and backends, reaped ones included) is measured
              around each phase and reported beside the tool's.

Per tool, size and phase it reports wall time (start to exit of the tool's
main process), CPU seconds of the whole process tree (user+sys from
wait4() of the tool and of every descendant: the runner is a child
subreaper, so orphaned grandchildren such as a forkserver and its workers
are reparented to it and reaped with their usage), the peak of the summed
RSS of the tree (sampled every --interval seconds with psutil; shared pages
of forked workers are counted once per process, as RSS does), the same for
PSS (shared pages split fairly; sampled 5x less often, reading smaps is
costly) and the peak RSS of the largest single process (sampled; the
kernel's ru_maxrss is kept in the JSON as a cross-check). A second table
gives, from the farm's counters, the HTTP connections each phase opened
(keep-alive reuse), the bytes sent and the farm's own CPU time.

Linux only (prctl, /proc). Child processes get a private bytecode cache
(PYTHONPYCACHEPREFIX under the work dir), filled by an untimed warm-up run
of every tool on a tiny farm, so that no tool pays for compiling sources.

Every phase is checked: the tool's own summary must show N feeds polled
with the expected number of new entries (and nothing updated), and the
farm's counters must show exactly N requests, all 200 (cold, changed) or
all 304 (warm). Failed checks are printed loudly and make the exit code 1.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import psutil

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as a script (python bench/bench_poll.py): make `bench` importable
    sys.path.insert(0, str(ROOT))

from bench.feedfarm import FarmProcess, FarmSpec, iter_sizes  # noqa: E402

PHASES = ("cold", "warm", "changed")
PR_SET_CHILD_SUBREAPER = 36
PSS_EVERY = 5  # sample PSS every this many RSS samples
ORPHAN_TIMEOUT = 20.0  # seconds a tool's descendants may outlive it before they count as leaked


# --- measuring one process tree -------------------------------------------------------------


@dataclass
class Measured:
    wall: float = 0.0
    cpu: float = 0.0  # user+sys of the tool and every descendant, from wait4()
    cpu_sampled: float = 0.0  # the same from psutil samples (a lower bound): a cross-check
    rss_sum_peak: int = 0  # bytes
    rss_single_peak: int = 0  # bytes
    pss_sum_peak: int = 0  # bytes, sampled less often (reading smaps is costly)
    maxrss_kernel: int = 0  # bytes: ru_maxrss, largest single process as the kernel saw it
    max_processes: int = 0
    exit_code: int = 0
    leaked: list[int] = field(default_factory=list)  # descendants still alive long after the tool exited
    stdout: str = ""
    stderr: str = ""


class TreeSampler:
    """Samples the RSS of every descendant of this process except `exclude`
    (the farm). Descendants rather than the tool's own subtree, because the
    tool's orphans are reparented to us (we are a subreaper) and still count."""

    def __init__(self, exclude: set[int], interval: float, pss_every: int = PSS_EVERY):
        self.exclude = exclude
        self.interval = interval
        self.pss_every = pss_every
        self._samples = 0
        self.rss_sum_peak = 0
        self.pss_sum_peak = 0
        self.rss_single_peak = 0
        self.max_processes = 0
        self._cpu: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._me = psutil.Process()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu(self) -> float:
        return sum(self._cpu.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        try:
            procs = self._me.children(recursive=True)
        except psutil.Error:
            return
        # RSS counts pages shared by forked workers once per process; PSS
        # splits them fairly, but reading smaps costs ~0.4 ms a process, so
        # it is sampled only every pss_every-th time.
        with_pss = self._samples % self.pss_every == 0
        self._samples += 1
        total = count = pss_total = 0
        for proc in procs:
            if proc.pid in self.exclude:
                continue
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
                    key = (proc.pid, proc.create_time())
                    pss = proc.memory_full_info().pss if with_pss and rss else 0
            except psutil.Error:  # exited between listing and reading
                continue
            if rss == 0:  # a zombie
                continue
            total += rss
            pss_total += pss
            count += 1
            self.rss_single_peak = max(self.rss_single_peak, rss)
            self._cpu[key] = times.user + times.system
        self.rss_sum_peak = max(self.rss_sum_peak, total)
        self.pss_sum_peak = max(self.pss_sum_peak, pss_total)
        self.max_processes = max(self.max_processes, count)


def become_subreaper() -> None:
    """Orphaned descendants of our tools (a multiprocessing forkserver and
    the workers it forked) are reparented to us instead of init, so that we
    can reap them and their CPU time is not lost."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def run_measured(cmd: list[str], cwd: Path, env: dict[str, str], exclude: set[int], interval: float,
                 orphan_timeout: float = ORPHAN_TIMEOUT) -> Measured:
    result = Measured()
    sampler = TreeSampler(exclude, interval)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        result.wall = time.perf_counter() - started
        proc.returncode = result.exit_code = os.waitstatus_to_exitcode(status)
        result.cpu = usage.ru_utime + usage.ru_stime
        result.maxrss_kernel = usage.ru_maxrss * 1024
        _reap_orphans(result, exclude, orphan_timeout)
        sampler.stop()
        out.seek(0)
        err.seek(0)
        result.stdout = out.read().decode("utf-8", "replace")
        result.stderr = err.read().decode("utf-8", "replace")
    result.cpu_sampled = sampler.cpu
    result.rss_sum_peak = sampler.rss_sum_peak
    result.rss_single_peak = sampler.rss_single_peak
    result.pss_sum_peak = sampler.pss_sum_peak
    result.max_processes = sampler.max_processes
    return result


def _reap_orphans(result: Measured, exclude: set[int], timeout: float) -> None:
    """Wait for the tool's reparented descendants, adding their usage. One
    still alive after `timeout` is a leak in the tool: noted, then killed."""
    me = psutil.Process()
    deadline = time.monotonic() + timeout
    while True:
        children = [c for c in me.children() if c.pid not in exclude]
        if not children:
            return
        for child in children:
            try:
                pid, _, usage = os.wait4(child.pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if pid:
                result.cpu += usage.ru_utime + usage.ru_stime
                result.maxrss_kernel = max(result.maxrss_kernel, usage.ru_maxrss * 1024)
        if time.monotonic() > deadline:
            for child in children:
                if child.pid not in result.leaked:
                    result.leaked.append(child.pid)
                try:
                    child.kill()
                except psutil.Error:
                    pass
        time.sleep(0.01)


# --- the tools -----------------------------------------------------------------------------


@dataclass
class Expect:
    feeds: int
    entries: int

    def new(self, phase: str) -> int:
        return {"cold": self.feeds * self.entries, "warm": 0, "changed": 2 * self.feeds}[phase]


class Tool:
    name = ""
    label = ""

    def prepare(self, workdir: Path, farm: FarmProcess) -> None:
        """Set up a fresh run in an empty `workdir`."""

    def finish(self, workdir: Path) -> None:
        """After a run's phases (drop what prepare made outside workdir)."""

    def server_cpu(self) -> float:
        """CPU seconds so far of a server the tool uses outside its own process tree."""
        return 0.0

    def command(self, phase: str, workdir: Path, farm: FarmProcess) -> list[str]:
        raise NotImplementedError

    def check(self, phase: str, measured: Measured, expect: Expect) -> tuple[dict[str, Any], list[str]]:
        """The tool's own summary of the phase, and what is wrong with it."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment variables of this tool's process, besides the common ones."""
        return {}


def _json_summary(measured: Measured) -> dict[str, Any]:
    lines = measured.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        return {}


def _compare(summary: dict[str, Any], wanted: dict[str, int]) -> list[str]:
    return [f"{key} = {summary.get(key)!r}, expected {value}" for key, value in wanted.items() if summary.get(key) != value]


class Ours(Tool):
    name = "ours"
    label = "aggregator"
    SUMMARY = re.compile(
        r"Polled (?P<polled>\d+) feeds? in (?P<seconds>[\d.]+)s: (?P<ok>\d+) ok \((?P<unchanged>\d+) unchanged\), "
        r"(?P<failed>\d+) failed\. Articles: (?P<new>\d+) new \((?P<duplicates>\d+) of them duplicates[^)]*\), "
        r"(?P<updated>\d+) updated[.;]"
    )

    def __init__(self, polling: dict[str, str]):
        self.polling = polling
        self.executable = str(Path(sys.executable).with_name("aggregator"))
        if not Path(self.executable).exists():
            self.executable = shutil.which("aggregator") or "aggregator"

    def database(self, workdir: Path) -> str:
        return "bench.db"

    def prepare(self, workdir: Path, farm: FarmProcess) -> None:
        lines = [f"database: {json.dumps(self.database(workdir))}", "feeds_dir: feeds", "logging: {level: warning}"]
        if self.polling:
            lines.append("polling:")
            lines += [f"  {key}: {value}" for key, value in self.polling.items()]
        (workdir / "config.yaml").write_text("\n".join(lines) + "\n")
        (workdir / "feeds").mkdir()
        shutil.copy(farm.feeds_yaml, workdir / "feeds" / "bench.yaml")

    def command(self, phase: str, workdir: Path, farm: FarmProcess) -> list[str]:
        return [self.executable, "poll", "--no-progress", "--config", str(workdir / "config.yaml")]

    def check(self, phase: str, measured: Measured, expect: Expect) -> tuple[dict[str, Any], list[str]]:
        match = self.SUMMARY.search(measured.stdout)
        if not match:
            return {}, [f"no summary line in the output: {measured.stdout.strip()[-300:]!r}"]
        summary: dict[str, Any] = {k: (float(v) if k == "seconds" else int(v)) for k, v in match.groupdict().items()}
        n = expect.feeds
        wanted = {"polled": n, "ok": n, "failed": 0, "new": expect.new(phase), "updated": 0,
                  "unchanged": n if phase == "warm" else 0}
        return summary, _compare(summary, wanted)


class OursPg(Ours):
    """Ours on PostgreSQL: a fresh database per run on one throwaway server."""

    name = "ours-pg"
    label = "aggregator (PostgreSQL)"

    def __init__(self, polling: dict[str, str], cluster: Any):
        super().__init__(polling)
        self.cluster = cluster  # tests.pg.PgCluster, started before we became a subreaper
        assert cluster.root is not None, "--postgres needs a server of its own (unset AGGREGATOR_TEST_POSTGRES)"
        self.postmaster = int((cluster.root / "data" / "postmaster.pid").read_text().split()[0])
        self._databases: dict[Path, str] = {}

    def database(self, workdir: Path) -> str:
        url: str = self.cluster.new_database()
        self._databases[workdir] = url.split("?")[0].rsplit("/", 1)[1]
        return url

    def finish(self, workdir: Path) -> None:
        name = self._databases.pop(workdir, None)
        if name:
            self.cluster.admin(f"DROP DATABASE {name}")

    def server_cpu(self) -> float:
        """The postmaster and its backends; ended backends through the postmaster's reaped-children times."""
        total = 0.0
        try:
            root = psutil.Process(self.postmaster)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                continue
        return total


class OursFeedparser(Ours):
    """Ours with the fast parse path turned off: every document goes to
    feedparser in the parse processes, as before issue 15."""

    name = "ours-fp"
    label = "aggregator, feedparser only"

    def env(self) -> dict[str, str]:
        return {"AGGREGATOR_PARSE_ENGINE": "feedparser"}


class Baseline(Tool):
    name = "baseline"
    label = "requests+feedparser"

    def command(self, phase: str, workdir: Path, farm: FarmProcess) -> list[str]:
        return [sys.executable, "-m", "bench.baseline_poll", "--urls", str(farm.urls_file),
                "--state", str(workdir / "state.json")]

    def check(self, phase: str, measured: Measured, expect: Expect) -> tuple[dict[str, Any], list[str]]:
        summary = _json_summary(measured)
        n = expect.feeds
        warm = phase == "warm"
        wanted = {"feeds": n, "ok": 0 if warm else n, "not_modified": n if warm else 0, "failed": 0,
                  "new": expect.new(phase)}
        return summary, _compare(summary, wanted)


class Reader(Tool):
    name = "reader"
    label = "reader 3.26"

    def command(self, phase: str, workdir: Path, farm: FarmProcess) -> list[str]:
        return [sys.executable, "-m", "bench.peer_reader", "--db", str(workdir / "reader.sqlite"),
                "--urls", str(farm.urls_file), "--phase", phase]

    def check(self, phase: str, measured: Measured, expect: Expect) -> tuple[dict[str, Any], list[str]]:
        summary = _json_summary(measured)
        n = expect.feeds
        warm = phase == "warm"
        wanted = {"feeds": n, "ok": 0 if warm else n, "not_modified": n if warm else 0, "failed": 0,
                  "new": expect.new(phase), "modified": 0}
        return summary, _compare(summary, wanted)


def _farm_problems(phase: str, stats: dict[str, Any], n: int) -> list[str]:
    status = stats.get("status", {})
    wanted = {"304": n} if phase == "warm" else {"200": n}
    problems = []
    if stats.get("requests") != n:
        problems.append(f"farm saw {stats.get('requests')} requests, expected {n}")
    for code, count in wanted.items():
        if status.get(code, 0) != count:
            problems.append(f"farm answered {status.get(code, 0)} x {code}, expected {count} (all: {status})")
    return problems


# --- running everything -----------------------------------------------------------------------


@dataclass
class Sample:
    size: str
    feeds: int
    entries: int
    tool: str
    run: int
    phase: str
    wall: float
    cpu: float
    cpu_sampled: float
    rss_sum_peak: int
    rss_single_peak: int
    pss_sum_peak: int
    maxrss_kernel: int
    max_processes: int
    exit_code: int
    summary: dict[str, Any]
    farm: dict[str, Any]
    problems: list[str]
    server_cpu: float = 0.0  # CPU seconds of a database server outside the tool's tree (ours-pg)


NOT_MEASURED: set[int] = set()  # our own helper processes (the CPU burner): not part of any tool's tree


def burn_one_core() -> subprocess.Popen[bytes]:
    """A process that keeps one core (CPU 0) busy, for the "one core busy"
    measurements: the tools then share the other core, and this one with it."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                              preexec_fn=lambda: os.sched_setaffinity(0, {0}))  # fmt: skip
    NOT_MEASURED.add(burner.pid)
    return burner


def child_env(pycache: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # Farm traffic must never go through a proxy from the environment.
    for key in ("NO_PROXY", "no_proxy"):
        env[key] = ",".join(filter(None, [env.get(key), "127.0.0.0/8", "localhost"]))
    # With PYTHONDONTWRITEBYTECODE (set on some machines) the editable
    # aggregator package would be compiled from source on every run while the
    # other tools load their installed .pyc files. A private bytecode cache,
    # filled by the warm-up, treats all tools alike and writes nothing into
    # the source tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def warm_up(tools: list[Tool], args: argparse.Namespace, base: Path, env: dict[str, str],
            log: Callable[[str], None]) -> None:
    """One untimed run of every tool on a tiny farm: fills the bytecode and
    page caches so the first timed run is not penalised, and proves the whole
    setup works before the long runs start."""
    samples, _ = bench_size(5, 2, tools, args, base, env, lambda line: None, runs=1)
    for s in samples:
        for problem in s.problems:
            log(f"    FAILED CHECK in the warm-up: {s.tool} {s.phase}: {problem}")


def run_phase(tool: Tool, phase: str, run: int, size: str, expect: Expect, workdir: Path, farm: FarmProcess,
              env: dict[str, str], interval: float) -> Sample:
    """One timed poll by one tool, checked against its own summary and the farm's counters."""
    farm.client.reset_stats()
    farm_process = psutil.Process(farm.pid)
    farm_cpu = sum(farm_process.cpu_times()[:2])
    server_cpu = tool.server_cpu()
    measured = run_measured(tool.command(phase, workdir, farm), workdir, {**env, **tool.env()},
                            {farm.pid, *NOT_MEASURED}, interval)
    server_cpu = tool.server_cpu() - server_cpu
    # The farm shares the cores with the tool: its CPU shows whether it could have been the bottleneck.
    farm_cpu = sum(farm_process.cpu_times()[:2]) - farm_cpu
    stats = farm.client.stats()
    # Each control call is a connection of its own; the /_stats one just made was counted.
    stats["connections"] -= 1
    summary, problems = tool.check(phase, measured, expect)
    if measured.exit_code != 0:
        problems.insert(0, f"exit code {measured.exit_code}; stderr: {measured.stderr.strip()[-500:]!r}")
    if measured.leaked:
        problems.append(f"processes still alive {ORPHAN_TIMEOUT:g}s after exit (killed): {measured.leaked}")
    problems += _farm_problems(phase, stats, expect.feeds)
    return Sample(
        size=size, feeds=expect.feeds, entries=expect.entries, tool=tool.name, run=run, phase=phase,
        wall=measured.wall, cpu=measured.cpu, cpu_sampled=measured.cpu_sampled,
        rss_sum_peak=measured.rss_sum_peak, rss_single_peak=measured.rss_single_peak,
        pss_sum_peak=measured.pss_sum_peak, maxrss_kernel=measured.maxrss_kernel,
        max_processes=measured.max_processes, exit_code=measured.exit_code, summary=summary,
        farm={**{k: stats[k] for k in ("requests", "connections", "conditional", "gzip", "body_bytes", "status")},
              "cpu": round(farm_cpu, 3)},
        problems=problems, server_cpu=round(server_cpu, 3),
    )


def bench_size(feeds: int, entries: int, tools: list[Tool], args: argparse.Namespace, base: Path,
               env: dict[str, str], log: Callable[[str], None], runs: int | None = None,
               ) -> tuple[list[Sample], dict[str, Any]]:
    """All runs of all tools at one size, on one farm. Tools alternate within
    each run so that machine noise is spread over all of them."""
    size = f"{feeds}x{entries}"
    runs = runs or args.runs
    spec = FarmSpec(feeds=feeds, entries=entries, seed=args.seed, hosts=args.hosts)
    samples: list[Sample] = []
    expect = Expect(feeds, entries)
    with FarmProcess(spec, base / f"farm-{size}") as farm:
        farm_info = json.loads((farm.out / "farm.json").read_text())
        for run in range(1, runs + 1):
            for tool in tools:
                farm.client.reset()  # generation 0: "changed" is always exactly +2 entries per feed
                workdir = base / f"{size}-{tool.name}-{run}"
                workdir.mkdir(parents=True)
                tool.prepare(workdir, farm)
                for phase in PHASES:
                    if phase == "changed":
                        farm.client.bump()
                    sample = run_phase(tool, phase, run, size, expect, workdir, farm, env, args.interval)
                    if not farm.alive():
                        raise RuntimeError("the feed farm died")
                    samples.append(sample)
                    log(f"[{size} run {run}/{runs}] {tool.name:8} {phase:7}: {sample.wall:6.2f}s wall, "
                        f"{sample.cpu:6.2f}s CPU, {sample.rss_sum_peak / 2**20:6.0f} MB RSS (sum), "
                        f"{sample.max_processes} procs, {sample.farm['connections']} connections"
                        + ("" if not sample.problems else "  <-- CHECK FAILED"))
                    for problem in sample.problems:
                        log(f"    FAILED CHECK: {tool.name} {size} {phase} run {run}: {problem}")
                tool.finish(workdir)
                if not args.keep:
                    shutil.rmtree(workdir, ignore_errors=True)
    return samples, farm_info


# --- reporting --------------------------------------------------------------------------------


METRICS = ("wall", "cpu", "rss_sum_peak", "pss_sum_peak", "rss_single_peak", "max_processes", "server_cpu")


def medians(samples: list[Sample]) -> dict[tuple[str, str, str], dict[str, float]]:
    groups: dict[tuple[str, str, str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.size, s.tool, s.phase), []).append(s)
    out = {}
    for key, group in groups.items():
        row: dict[str, float] = {m: statistics.median(getattr(s, m) for s in group) for m in METRICS}
        row["wall_min"] = min(s.wall for s in group)
        row["wall_max"] = max(s.wall for s in group)
        row["runs"] = len(group)
        out[key] = row
    return out


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    # aggregator/ may be edited while benchmarks run: say which code was measured.
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    if git("status", "--porcelain", "--", "aggregator"):
        commit += " + uncommitted changes in aggregator/"
    return {
        "commit": commit,
        "cpu": model, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "kernel": platform.release(),
        "python": platform.python_version(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": {d: version(d) for d in ("aggregator", "feedparser", "requests", "urllib3", "reader", "psutil")},
    }


def _ratio(value: float, reference: float | None) -> str:
    if not reference:
        return "–"
    return f"{value / reference:.2f}×"


def render_markdown(samples: list[Sample], farms: dict[str, dict[str, Any]], tools: list[Tool], info: dict[str, Any],
                    args: argparse.Namespace, ours_settings: str) -> str:
    med = medians(samples)
    peer = args.peer
    v = info["versions"]
    loads = [" / ".join(str(x) for x in info[key]) for key in ("loadavg_at_start", "loadavg_at_end")]
    machine_line = (
        f"- Machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), {info['memory_gib']} GiB "
        f"RAM, Linux {info['kernel']}, Python {info['python']}; {info['date']}; load average {loads[0]} at start, "
        f"{loads[1]} at end (1/5/15 min; a shared machine: expect noise)"
    )
    versions_line = (
        f"- Versions: aggregator {v['aggregator']}, feedparser {v['feedparser']}, requests {v['requests']}, "
        f"urllib3 {v['urllib3']}" + (f", reader {v['reader']}" if peer else "")
    )
    tools_line = (
        f"- Tools: **ours** = `aggregator poll --no-progress` ({ours_settings}); **baseline** = `requests.get` + "
        "`feedparser.parse`, one thread, conditional GETs, stores nothing"
        + ("; **reader** = lemon24/reader with its defaults: `update_feeds()` with workers=1 (one thread), SQLite, "
           "no search index" if peer else "")
    )
    farm_line = (
        "- Farm (`bench/feedfarm.py`, a separate process on the same cores): "
        f"{args.hosts} loopback addresses, HTTP/1.1 keep-alive, gzip, ETag + Last-Modified; "
        "RSS 2.0 and (1 in 5) Atom, ~1-2 KB HTML per entry"
    )
    method_line = (
        f"- Each figure is the median of {args.runs} runs; a run is cold → warm → changed on a fresh database and a "
        "reset farm; the tools' runs alternate. Wall = start to exit of the tool's process. CPU = user+sys of the "
        "whole process tree (parse workers included). RSS sum = peak of the summed RSS of all processes of the tree "
        f"(sampled every {args.interval * 1000:g} ms); PSS sum = the same with shared pages split between the "
        f"processes that share them (sampled every {args.interval * PSS_EVERY * 1000:g} ms); max proc = peak RSS of "
        "the largest process; procs = most processes at once. ×baseline / ×reader = this figure divided by the "
        "baseline's / reader's (below 1 is better)."
    )
    if args.burn_core:
        machine_line += "; **one core busy**: a spinning process pinned to CPU 0 ran throughout"
    if any(tool.name == "ours-fp" for tool in tools):
        tools_line += "; **ours-fp** = ours with `AGGREGATOR_PARSE_ENGINE=feedparser` (every document to feedparser)"
    out = ["# Poll benchmark", "", machine_line, f"- Code: aggregator at commit {info['commit']}", versions_line,
           tools_line, farm_line, method_line, ""]
    ref_names = ["baseline"] + ([peer] if peer else [])
    for size, farm in farms.items():
        out.append(f"## {farm['feeds']} feeds × {farm['entries']} entries "
                   f"({farm['bytes'] / 1e6:.1f} MB of feed XML, {farm['gzip_bytes'] / 1e6:.1f} MB gzipped, "
                   f"{farm['atom_feeds']} Atom)")
        out.append("")
        header = ["phase", "tool", "wall s (min–max)"] + [f"×{r}" for r in ref_names]
        header += ["CPU s"] + [f"×{r}" for r in ref_names]
        header += ["RSS sum MB"] + [f"×{r}" for r in ref_names]
        header += ["PSS sum MB", "max proc MB", "procs"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|")
        for phase in PHASES:
            for tool in tools:
                row = med.get((size, tool.name, phase))
                if row is None:
                    continue
                refs = [med.get((size, r, phase)) for r in ref_names]
                cells = [phase, tool.name, f"{row['wall']:.2f} ({row['wall_min']:.2f}–{row['wall_max']:.2f})"]
                cells += [_ratio(row["wall"], ref["wall"] if ref else None) for ref in refs]
                cells += [f"{row['cpu']:.2f}"] + [_ratio(row["cpu"], ref["cpu"] if ref else None) for ref in refs]
                cells += [f"{row['rss_sum_peak'] / 2**20:.0f}"]
                cells += [_ratio(row["rss_sum_peak"], ref["rss_sum_peak"] if ref else None) for ref in refs]
                cells += [f"{row['pss_sum_peak'] / 2**20:.0f}", f"{row['rss_single_peak'] / 2**20:.0f}",
                          f"{row['max_processes']:.0f}"]
                out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append("HTTP connections the farm accepted per phase (median; keep-alive reuse shows as fewer "
                   f"than {farm['feeds']}), response bodies sent, and the CPU the farm itself used meanwhile:")
        out.append("")
        out.append("| tool | " + " | ".join(f"{p} conns" for p in PHASES) + " | "
                   + " | ".join(f"{p} MB" for p in PHASES) + " | " + " | ".join(f"farm CPU s {p}" for p in PHASES) + " |")
        out.append("|---|" + "---:|" * (3 * len(PHASES)))
        for tool in tools:
            runs = [s for s in samples if s.size == size and s.tool == tool.name]
            conns = [statistics.median(s.farm["connections"] for s in runs if s.phase == p) for p in PHASES]
            sent = [statistics.median(s.farm["body_bytes"] for s in runs if s.phase == p) / 1e6 for p in PHASES]
            farm_cpu = [statistics.median(s.farm["cpu"] for s in runs if s.phase == p) for p in PHASES]
            out.append(f"| {tool.name} | " + " | ".join(f"{c:.0f}" for c in conns) + " | "
                       + " | ".join(f"{b:.1f}" for b in sent) + " | " + " | ".join(f"{c:.2f}" for c in farm_cpu) + " |")
        out.append("")
    if any(s.tool == "ours-pg" for s in samples):
        out += render_postgres(med, farms)
    problems = [f"- {s.tool} {s.size} {s.phase} run {s.run}: {p}" for s in samples for p in s.problems]
    out.append("## Checks")
    out.append("")
    if problems:
        out.append("**FAILED CHECKS** (the figures above for these phases are suspect):")
        out.append("")
        out += problems
    else:
        out.append("All phases passed their checks: every tool polled N feeds, with N×M new entries cold, "
                   "0 new (all 304) warm and 2×N new (0 updated) after the change; the farm saw exactly N "
                   "requests per phase with the expected status codes.")
    out.append("")
    return "\n".join(out)


def render_postgres(med: dict[tuple[str, str, str], dict[str, float]], farms: dict[str, dict[str, Any]]) -> list[str]:
    """Ours on PostgreSQL against ours on SQLite, from the same runs."""
    out = ["## PostgreSQL against SQLite (ours-pg / ours, same runs)", "",
           "CPU of ours-pg is the tool's process tree; server = the PostgreSQL server's processes meanwhile "
           "(SQLite's work is inside the tool). Ratios below 1.5x meet issue 14's target.", "",
           "| size | phase | SQLite wall s | PostgreSQL wall s | ratio | SQLite CPU s | PG CPU s tool + server | ratio |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for size in farms:
        for phase in PHASES:
            lite, pg = med.get((size, "ours", phase)), med.get((size, "ours-pg", phase))
            if lite is None or pg is None:
                continue
            pg_cpu = pg["cpu"] + pg["server_cpu"]
            out.append(f"| {size} | {phase} | {lite['wall']:.2f} | {pg['wall']:.2f} | {_ratio(pg['wall'], lite['wall'])} | "
                       f"{lite['cpu']:.2f} | {pg['cpu']:.2f} + {pg['server_cpu']:.2f} | {_ratio(pg_cpu, lite['cpu'])} |")
    out.append("")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_poll", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200x50,1000x20", help="NxM feeds x entries, comma-separated (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per tool and size; the median is reported (default: %(default)s)")
    parser.add_argument("--peer", choices=("reader",), help="also run this peer (reader: lemon24/reader 3.26)")
    parser.add_argument("--postgres", action="store_true",
                        help="also run ours on PostgreSQL (a throwaway server, a fresh database per run)")
    parser.add_argument("--tools", default="ours,baseline",
                        help="comma-separated subset of ours,ours-fp,baseline (default: %(default)s); ours-fp = "
                             "ours with AGGREGATOR_PARSE_ENGINE=feedparser (no fast parse path)")
    parser.add_argument("--burn-core", action="store_true",
                        help="keep one core (CPU 0) busy with a spinning process for the whole benchmark")
    parser.add_argument("--ours-polling", action="append", default=[], metavar="KEY=VALUE",
                        help="a polling: setting for our tool, e.g. parse_workers=1 (repeatable)")
    parser.add_argument("--seed", type=int, default=1, help="feed farm seed")
    parser.add_argument("--hosts", type=int, default=20, help="loopback addresses the farm spreads feeds over")
    parser.add_argument("--interval", type=float, default=0.02, help="RSS sampling interval in seconds")
    parser.add_argument("--json", type=Path, help="write raw samples, medians and machine info here")
    parser.add_argument("--markdown", type=Path, help="also write the markdown report here")
    parser.add_argument("--workdir", type=Path, help="where to put databases and farm files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the databases and farm files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = None
    if args.postgres:
        from tests.pg import PgCluster

        # Started before we become a subreaper, so the server is not one of our descendants (not sampled as
        # the tool's, not reaped as its leaked orphan).
        cluster = PgCluster()
    try:
        return _main(args, cluster)
    finally:
        if cluster is not None:
            cluster.stop()


def _main(args: argparse.Namespace, cluster: Any) -> int:
    become_subreaper()
    polling = dict(item.split("=", 1) for item in args.ours_polling)
    registry: dict[str, Callable[[], Tool]] = {"ours": lambda: Ours(polling), "ours-fp": lambda: OursFeedparser(polling),
                                               "baseline": Baseline}
    tools = [registry[name.strip()]() for name in args.tools.split(",") if name.strip()]
    if cluster is not None:
        tools.insert(next((i + 1 for i, t in enumerate(tools) if t.name == "ours"), 0), OursPg(polling, cluster))
    if args.peer == "reader":
        tools.append(Reader())
    defaults = {"workers": "8", "per_host": "2", "parse_workers": f"0 (= {os.cpu_count()} processes)"}
    ours_settings = ", ".join(f"{k}={polling.get(k, d)}" for k, d in defaults.items())
    ours_settings += "".join(f", {k}={val}" for k, val in polling.items() if k not in defaults)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    info = machine()
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-poll-"))
    base.mkdir(parents=True, exist_ok=True)
    env = child_env(base / "pycache")
    samples: list[Sample] = []
    farms: dict[str, dict[str, Any]] = {}
    burner = burn_one_core() if args.burn_core else None
    try:
        warm_up(tools, args, base / "warm-up", env, log)
        for feeds, entries in iter_sizes(args.sizes):
            got, farm_info = bench_size(feeds, entries, tools, args, base, env, log)
            samples += got
            farms[f"{feeds}x{entries}"] = farm_info
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        if not args.keep and args.workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report = render_markdown(samples, farms, tools, info, args, ours_settings)
    print(report)
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        med = medians(samples)
        args.json.write_text(json.dumps({
            "machine": info, "args": {k: str(v) for k, v in vars(args).items()}, "farms": farms,
            "samples": [asdict(s) for s in samples],
            "medians": [{"size": k[0], "tool": k[1], "phase": k[2], **v} for k, v in med.items()],
        }, indent=1))
    failed = sum(len(s.problems) for s in samples)
    if failed:
        log(f"\n*** {failed} CHECK(S) FAILED: see the Checks section ***")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
