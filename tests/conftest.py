from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from aggregator.config import Config, load_config
from aggregator.subscriptions import load_subscriptions
from aggregator.ingest import InlineParser, Poller
from aggregator.model import FeedState, FeedStatus, PollReport, utcnow
from aggregator.store import Store, open_store
from tests.fixture_server import FeedServer

REPO = Path(__file__).resolve().parent.parent


def _find_corpus() -> Path | None:
    """The real-world feed corpus: $AGGREGATOR_CORPUS, else ../shared/corpus/realworld next to the clone."""
    for candidate in (os.environ.get("AGGREGATOR_CORPUS", ""), REPO.parent / "shared/corpus/realworld"):
        if candidate and Path(candidate, "MANIFEST.tsv").exists():
            return Path(candidate)
    return None


# None in a plain clone: the tests marked `corpus` are then deselected (see the hooks below).
CORPUS = _find_corpus()
CORPUS_HINT = "set AGGREGATOR_CORPUS to .../shared/corpus/realworld, or clone next to shared/"
_DESELECTED = pytest.StashKey[int]()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    srv = FeedServer()
    yield srv
    srv.close()


class Workspace:
    """A config.yaml + feeds/ + database in a temporary directory."""

    def __init__(self, root: Path):
        self.root = root
        (root / "feeds").mkdir(exist_ok=True)
        # Fixture feeds are dated mid-2026 and often long: a long retention and
        # no quiet first poll unless a test asks. Their generated items read
        # alike from feed to feed ("Story 1", "Body of story 1"), which story
        # clustering rightly groups: it is off unless a test is about it
        # (tests/test_stories.py and the daemon tests turn it on).
        self.settings: dict[str, Any] = {
            "database": "test.db",
            "logging": {"level": "debug"},
            "retention": {"days": 3650},
            "output": {"backfill": 1000},
            "stories": {"enabled": False},
        }
        self._store: Store | None = None
        self.backend = "sqlite"
        self.subscriptions: list[Any] = []
        self.write_config()

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    def write_config(self, **sections: Any) -> Path:
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(self.settings.get(key), dict):
                self.settings[key].update(value)
            else:
                self.settings[key] = value
        self.config_path.write_text(yaml.safe_dump(self.settings))
        return self.config_path

    def feeds(self, entries: list[Any], name: str = "test.yaml", **header: Any) -> Path:
        path = self.root / "feeds" / name
        path.write_text(yaml.safe_dump({**header, "feeds": entries}))
        return path

    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def store(self) -> Store:
        if self._store is None:
            config = self.config()
            self._store = open_store(config.settings.database, config.root)
        return self._store

    def sync(self) -> None:
        subs = load_subscriptions(self.config().feeds_dir)
        assert not subs.errors, subs.errors
        self.store.sync_subscriptions(subs.feeds, utcnow())
        self.subscriptions = subs.feeds

    def poller(self, **kwargs: Any) -> Poller:
        poller = Poller(self.store, self.config(), parser=kwargs.pop("parser", InlineParser()), **kwargs)
        poller.set_subscriptions(self.subscriptions)  # credentials and headers, as the commands do
        return poller

    def poll_all(self, **kwargs: Any) -> list[PollReport]:
        """Sync feeds/ and poll every active feed once (in-process)."""
        self.sync()
        poller = self.poller(**kwargs)
        try:
            return [poller.poll(feed) for feed in self.store.feeds(FeedStatus.ACTIVE)]
        finally:
            poller.close()

    def poll_url(self, url: str, **kwargs: Any) -> PollReport:
        self.sync()
        feed = self.feed(url)
        poller = self.poller(**kwargs)
        try:
            return poller.poll(feed)
        finally:
            poller.close()

    def feed(self, url: str) -> FeedState:
        from aggregator.subscriptions import feed_id_for

        feed = self.store.feed(feed_id_for(url))
        assert feed is not None, url
        return feed

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


# --- the two stores --------------------------------------------------------------------------------
#
# Every test that takes a workspace runs twice: on SQLite (the embedded
# default) and on PostgreSQL (tests/pg.py finds or starts a server; each test
# gets a database of its own). Tests about SQLite itself (its file, its
# journal, its locks) are marked sqlite_only. Without PostgreSQL server
# programs on the machine, the PostgreSQL runs are deselected and counted,
# unless AGGREGATOR_REQUIRE_POSTGRES is set (CI sets it): then they fail.

BACKENDS = ("sqlite", "postgres")


def _postgres_available() -> bool:
    from tests.pg import server_bindir

    return bool(os.environ.get("AGGREGATOR_TEST_POSTGRES")) or server_bindir() is not None


@pytest.fixture(scope="session")
def postgres() -> Iterator[tuple[Any, str]]:
    from tests.pg import PgCluster

    cluster = PgCluster()
    try:
        yield cluster, cluster.template()
    finally:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def ws(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path)
    if request.param == "postgres":
        cluster, template = request.getfixturevalue("postgres")
        workspace.write_config(database=cluster.new_database(template))
    workspace.backend = request.param
    yield workspace
    workspace.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: about SQLite itself; not run on PostgreSQL")
    config.addinivalue_line("markers", "postgres_only: about the cluster; needs PostgreSQL")
    if CORPUS is None and os.environ.get("AGGREGATOR_REQUIRE_CORPUS"):  # CI (.ci/run): never run without it
        raise pytest.UsageError(f"AGGREGATOR_REQUIRE_CORPUS is set but the feed corpus was not found: {CORPUS_HINT}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"corpus: {CORPUS}" if CORPUS else f"corpus: not found; the tests marked corpus are deselected ({CORPUS_HINT})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs that cannot happen here are deselected and counted, never skipped:
    the PostgreSQL runs without PostgreSQL, the tests marked corpus without the
    corpus (so the self-contained suite passes in a plain clone)."""
    postgres = _postgres_available()
    if not postgres and os.environ.get("AGGREGATOR_REQUIRE_POSTGRES"):
        raise pytest.UsageError("PostgreSQL is required (AGGREGATOR_REQUIRE_POSTGRES) but no server programs were found")
    keep, dropped, no_corpus = [], [], []
    for item in items:
        backend = getattr(item, "callspec", None) and item.callspec.params.get("ws")
        if CORPUS is None and item.get_closest_marker("corpus"):
            no_corpus.append(item)
        elif backend == "postgres" and (not postgres or item.get_closest_marker("sqlite_only")):
            dropped.append(item)
        elif item.get_closest_marker("postgres_only") and (not postgres or backend == "sqlite"):
            dropped.append(item)
        else:
            keep.append(item)
    if dropped or no_corpus:
        config.hook.pytest_deselected(items=dropped + no_corpus)
        items[:] = keep
        if not postgres:
            print(f"\nPostgreSQL not found: {len(dropped)} PostgreSQL runs deselected (see tests/pg.py)")
        config.stash[_DESELECTED] = len(no_corpus)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    count = config.stash.get(_DESELECTED, 0)
    if count:
        terminalreporter.write_line(f"{count} tests need the real-world feed corpus, which was not found: deselected "
                                    f"({CORPUS_HINT})")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m aggregator ARGS` as a real subprocess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "aggregator", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"aggregator {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def leftover_daemons() -> Iterator[None]:
    """A daemon a failing test left running is killed when the test ends (it
    would go on polling and using a core for the rest of the session)."""
    from tests.daemon import STARTED

    before = len(STARTED)  # a module's daemon (started by a wider fixture) outlives each of its tests
    yield
    while len(STARTED) > before:
        STARTED.pop().kill()


@pytest.fixture
def daemons() -> "Iterator[list]":
    """Daemons a test starts (tests.daemon.Daemon); killed if still running at the end."""
    started: list = []
    yield started
    for daemon in started:
        daemon.kill()


# Hypothesis profiles for the fuzz tests (tests/test_fuzz_*.py). "ci" is the
# default: few examples, derandomised, so the suite stays fast and a run is
# reproducible; "long" explores (thousands of examples, a new seed each run)
# for a nightly or bench run: HYPOTHESIS_PROFILE=long, or --hypothesis-profile long.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
