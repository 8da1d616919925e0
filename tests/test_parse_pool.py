"""The parser pool (ingest.ParsePool) with real worker processes: a document
that overruns `polling.parse_timeout` is abandoned and its worker replaced, a
worker that dies costs only its document, and workers are replaced after
`polling.parse_recycle` documents. Workers are known by the process tree
(the processes the pool started), never by name."""

from __future__ import annotations

import multiprocessing
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
import yaml

from aggregator.config import load_config
from aggregator.ingest import ParsePool, make_parser
from aggregator.model import Outcome, ParsedFeed, ParseError
from tests.conftest import Workspace
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer

NOW = datetime(2026, 6, 1, tzinfo=UTC)
SMALL = rss([story(1), story(2)]).encode()
# ~4.3 MB, 2,000 entries of markup, and not well-formed (a bare "&" at the top),
# so the fast path gives it up at once and feedparser's loose parser reads it:
# about 5 s on a 2-core machine, 10x over a 0.5 s limit. (A well-formed
# document would be read by the fast path, whose speed on a fast machine can
# come under the limit: seen once in CI.)
SLOW = (
    rss([story(n, summary="<p>" + "<b>word</b> " * 80 + "</p>") for n in range(2000)])
    .replace("<channel>", "<channel><x>&</x>", 1)
    .encode()
)


def workers(before: set[int]) -> set[int]:
    """Pids of the live parser workers started since ``before``: the processes
    this process started (multiprocessing.active_children: pebble's workers are
    multiprocessing processes, forked by the forkserver on our behalf). Other
    descendants, such as a PostgreSQL server the tests started, are not among them."""
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None and p.pid not in before}


def descendants() -> set[int]:
    return {p.pid for p in multiprocessing.active_children() if p.pid is not None}


def wait_for(condition, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {seconds}s waiting for {what}"
        time.sleep(0.05)  # the polling interval of the condition


def parse(pool: ParsePool, body: bytes) -> ParsedFeed:
    return pool.parse(body, "http://example.com/feed", {"content-type": "application/rss+xml"}, NOW, {})


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            continue
    return out


class Sampler(threading.Thread):
    """The worker pids seen while it runs, in the order they appeared (a worker
    killed at its timeout lives only that long; its replacement comes after it)."""

    def __init__(self, before: set[int]):
        super().__init__(daemon=True)
        self.before = before
        self.seen: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.seen += sorted(workers(self.before) - set(self.seen))

    def stop(self) -> list[int]:
        self.done.set()
        self.join()
        return self.seen


def test_a_document_over_parse_timeout_is_abandoned_and_the_next_one_parses(ws: Workspace, server: FeedServer) -> None:
    ws.write_config(polling={"parse_timeout": "0.5s"})
    url = server.add("/feed", SLOW)
    ws.feeds([url])
    ws.sync()
    before = descendants()
    poller = ws.poller(parser=make_parser(ws.config(), 1))  # what `poll --feed` and `feeds add` use
    try:
        sampler = Sampler(before)
        sampler.start()
        started = time.monotonic()
        report = poller.poll(ws.feed(url))
        took = time.monotonic() - started
        seen = sampler.stop()
        assert report.outcome is Outcome.PARSE_ERROR
        assert report.error == "parsing took longer than 0.5s; the document was abandoned"
        assert took < 0.5 + 5, took  # abandoned, not waited for (worker start-up included)
        assert ws.feed(url).last_error == report.error and ws.store.articles() == []
        assert seen, "no parser worker was seen"
        overran = {seen[0]}  # one worker (make_parser for one feed): the first seen parsed the document
        wait_for(lambda: not alive(overran), 10, "the overrunning worker killed")
        server.update("/feed", body=SMALL)
        report = poller.poll(ws.feed(url))
        assert report.outcome is Outcome.OK and report.counts.new == 2, report.error
        assert workers(before) - overran  # parsed by a new worker
    finally:
        poller.close()


def test_a_worker_that_dies_costs_only_its_document() -> None:
    before = descendants()
    # Every document to the worker (a well-formed one would be read by the fast path in this thread).
    pool = ParsePool(workers=1, timeout=60, recycle=200, inline_fast=False)
    try:
        assert parse(pool, SMALL).entries  # the worker is up
        [worker] = workers(before)
        outcome: dict[str, BaseException | ParsedFeed] = {}

        def slow() -> None:
            try:
                outcome["result"] = parse(pool, SLOW)
            except BaseException as exc:  # handed to the test thread
                outcome["result"] = exc

        thread = threading.Thread(target=slow)
        thread.start()
        # Killed while it parses (as the kernel's OOM killer would): once it has used CPU on this document.
        cpu_before = sum(psutil.Process(worker).cpu_times()[:2])
        wait_for(lambda: sum(psutil.Process(worker).cpu_times()[:2]) > cpu_before + 0.2, 20, "the worker parsing")
        psutil.Process(worker).kill()
        thread.join(30)
        error = outcome["result"]
        assert isinstance(error, ParseError), error
        assert str(error) == "the parser crashed on this document (exit code -9)"
        assert len(parse(pool, SMALL).entries) == 2  # a new worker took its place
        assert worker not in workers(before)
    finally:
        pool.close()


@pytest.mark.parametrize("recycle", [1, 3])
def test_workers_are_replaced_after_parse_recycle_documents(tmp_path: Path, recycle: int) -> None:
    config = tmp_path / "config.yaml"  # no store: the pool alone
    config.write_text(yaml.safe_dump({"polling": {"parse_recycle": recycle, "parse_workers": 1}}))
    before = descendants()
    pool = make_parser(load_config(config), 2)
    assert pool.recycle == recycle and pool.workers == 1
    pool.inline_fast = False  # every document to the workers, which this test is about

    def the_worker(other_than: int | None = None) -> int:
        """The one live worker (not ``other_than``), once there is exactly one."""
        found: set[int] = set()

        def one() -> bool:
            found.clear()
            found.update(workers(before))
            return len(found) == 1 and other_than not in found

        wait_for(one, 15, f"one worker other than {other_than}")
        return found.pop()

    used: list[int] = []  # the workers, in order: each parses R documents, then retires and is replaced
    current: int | None = None
    try:
        for done in range(1, 2 * recycle + 2):
            assert len(parse(pool, SMALL).entries) == 2
            if done % recycle == 0:  # its R-th document: the worker that parsed it retires
                current = the_worker(other_than=current)
                assert current not in used
                used.append(current)
            elif current is None:
                current = the_worker()
                used.append(current)
            else:
                assert the_worker() == current, (done, used)  # the same process until its R-th document
    finally:
        pool.close()
    assert len(used) == 3, used  # R=1: the three replacements; R=3: documents 1-3, 4-6 and 7
