"""Hostile world, round two (issue 9): nothing config.yaml or feeds/ holds,
no feed's size, no credential and no second process may break a command,
the service, or what it publishes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import feedparser
import pytest
import yaml

from aggregator.config import load_config
from aggregator.errors import ConfigError
from aggregator.publish import Publisher
from aggregator.subscriptions import load_subscriptions
from tests.conftest import Workspace, free_port, run_cli
from tests.daemon import Daemon
from tests.feedgen import Item, rss, story
from tests.fixture_server import FeedServer, Handler
from tests.hostile import all_output_text


# --- item 1: one bad entry never stops a command or the service ------------------------------------


@pytest.mark.parametrize("port", [":abc", ":99999", ":-1", ":0", ":65536"])
def test_a_bad_port_is_an_error_for_that_entry_only(ws: Workspace, server: FeedServer, port: str) -> None:
    good = server.add("/good", rss([story(1)]))
    ws.feeds([good, f"http://example.com{port}/rss"])
    proc = run_cli("poll", "--no-progress", "--config", str(ws.config_path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"feed #2 (http://example.com{port}/rss): url: expected a" in proc.stderr
    assert "Polled 1 feed" in proc.stdout
    listed = run_cli("feeds", "list", "--json", "--config", str(ws.config_path), check=True)
    assert [json.loads(line)["url"] for line in listed.stdout.splitlines()] == [good]


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16", "cp1252"])
def test_an_opml_file_in_another_encoding_loads(tmp_path: Path, encoding: str) -> None:
    text = ('<?xml version="1.0" encoding="{enc}"?>\n<opml version="2.0"><head><title>Abonnements</title></head>'
            '<body><outline text="Actualités"><outline type="rss" text="Café crème" title="Café crème" '
            'xmlUrl="https://cafe.example/rss"/></outline></body></opml>')
    declared = {"latin-1": "ISO-8859-1", "utf-16": "UTF-16", "cp1252": "windows-1252"}[encoding]
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "subs.opml").write_bytes(text.format(enc=declared).encode(encoding))
    subs = load_subscriptions(feeds)
    assert not subs.errors, subs.errors
    assert [(s.url, s.title, s.tags) for s in subs.feeds] == [("https://cafe.example/rss", "Café crème", ("actualités",))]


def test_an_opml_file_that_lies_about_its_encoding_is_reported_not_raised(tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "bad.opml").write_bytes(b'<?xml version="1.0" encoding="utf-8"?><opml version="2.0"><body>'
                                     b'<outline xmlUrl="https://a.example/\xe9"/></body></opml>')
    (feeds / "good.yaml").write_text("feeds: [https://b.example/rss]\n")
    subs = load_subscriptions(feeds)
    assert [s.url for s in subs.feeds] == ["https://b.example/rss"]
    assert len(subs.errors) == 1 and "bad.opml: not a valid OPML file (not utf-8 text" in subs.errors[0]
    assert subs.failed_files == ["bad.opml"]


def test_the_daemon_survives_every_bad_file_it_is_given_and_keeps_its_feeds(ws: Workspace, server: FeedServer,
                                                                             daemons: list[Daemon]) -> None:
    good = server.add("/good", rss([story(1)]))
    ws.feeds([good], name="a.yaml")
    daemon = Daemon(ws)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: server.requests_for("/good"), 10, "the good feed polled")
    feeds_dir = ws.root / "feeds"
    bad_files = [
        ("b.yaml", "feeds:\n  - url: http://example.com:abc/rss\n".encode()),
        ("c.opml", '<?xml version="1.0" encoding="ISO-8859-1"?><opml version="2.0"><body>'
                   '<outline text="caf\xe9" xmlUrl="http://example.com:99999/f"/></body></opml>'.encode("latin-1")),
        ("d.opml", "<opml version='2.0'><body><outline xmlUrl='https://x.example/f'/>".encode("utf-16")),
        ("e.yaml", b"a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
                   b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                   b"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nfeeds: [*g]\n"),
        ("f.yaml", b"\xff\xfe\x00garbage"),
        ("a.yaml", b"feeds: [\n"),  # the good feed's own file breaks: its feed must stay
    ]
    for name, content in bad_files:
        reloads = daemon.log.count("rescheduled for a new interval")
        (feeds_dir / name).write_bytes(content)
        daemon.signal(signal.SIGHUP)
        daemon.wait_until(lambda r=reloads: daemon.log.count("rescheduled for a new interval") > r, 15,
                          f"the reload with {name}")
    config = ws.config_path.read_text()
    ws.config_path.write_text(config + "polling: {max_bytes: 1.0e+400}\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_until(lambda: "keeping the old one" in daemon.log, 10, "the bad config refused")
    before = len(server.requests_for("/good"))
    daemon.wait_until(lambda: len(server.requests_for("/good")) > before, 15, "the good feed still polled")
    assert daemon.get("/healthz")[0] == 200
    assert "keeping the last good version of this file (1 feeds)" in daemon.log
    assert "Traceback" not in daemon.log
    assert daemon.stop() == 0


# --- item 6: config values that crashed start-up or a reload ----------------------------------------

@pytest.mark.parametrize("setting,value,expected", [
    ("polling", {"max_bytes": 1.0e+400}, "polling.max_bytes: expected a size"),
    ("polling", {"max_bytes": float("inf")}, "polling.max_bytes: expected a size"),
    ("output", {"max_age": float("nan")}, "output.max_age: expected a duration"),
    ("polling", {"dispatch_every": float("inf")}, "polling.dispatch_every: expected a duration"),
    ("output", {"debounce": ".inf"}, "output.debounce: expected a duration"),
    ("retention", {"days": 2674940678}, "retention.days: expected a number more than 0 and at most 36500"),
    ("http", {"threads": True}, "http.threads: expected a whole number from 1 to 64, got True"),
    ("polling", {"user_agent": "evil\r\nX-Injected: 1"}, "polling.user_agent: expected a header value"),
    ("polling", {"interval": 30}, "polling.interval: expected a duration like 90s, 15m, 2h or 1d, got 30 (add a unit"),
    ("polling", {"jitter": float("nan")}, "polling.jitter: expected a number from 0 to 0.5"),
    ("http", {"host": "0.0.0.0.1"}, "http.host: expected an IP address or host name"),
    ("http", {"port": 70000}, "http.port: expected a whole number from 0 to 65535"),
    ("polling", {"workers": 10**20}, "polling.workers: expected a whole number from 1 to 256"),
])
def test_every_config_value_is_checked_and_named(tmp_path: Path, setting: str, value: dict, expected: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({setting: value}))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value), str(info.value)
    proc = run_cli("poll", "--config", str(path))
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


# --- item 10: YAML alias bombs --------------------------------------------------------------------------

def test_a_yaml_alias_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join('*' + chr(97 + i) for _ in range(9))}]\n" for i in range(8))
    bomb += "feeds: [*i]\n"
    assert len(bomb) < 500
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "bomb.yaml").write_text(bomb)
    started = time.monotonic()
    subs = load_subscriptions(feeds)
    assert time.monotonic() - started < 2
    assert subs.feeds == [] and "refused: its aliases (*name) would expand to more than" in subs.errors[0]


def test_a_deeply_nested_yaml_file_is_an_error(tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    (feeds / "deep.yaml").write_text("feeds: " + "[" * 100_000 + "]" * 100_000 + "\n")
    subs = load_subscriptions(feeds)
    assert subs.feeds == [] and "deep.yaml" in subs.errors[0] and "invalid YAML" in subs.errors[0]


# --- item 9: feeds import at scale, atomically ----------------------------------------------------------

def test_importing_ten_thousand_outlines_takes_seconds_and_reports_duplicates(ws: Workspace, tmp_path: Path) -> None:
    ws.feeds(["https://site5.example/feed"], name="existing.yaml")
    outlines = "".join(f'<outline type="rss" text="Site {n}" xmlUrl="https://site{n}.example/feed"/>'
                       for n in range(10_000))
    outlines += '<outline type="rss" text="Again" xmlUrl="http://www.site7.example/feed"/>'  # the same feed
    opml = tmp_path / "big.opml"
    opml.write_text(f'<?xml version="1.0"?><opml version="2.0"><body>{outlines}</body></opml>')
    started = time.monotonic()
    proc = run_cli("feeds", "import", str(opml), "--config", str(ws.config_path), timeout=120)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    assert elapsed < 30, elapsed  # was 89 s for 1,000 (quadratic); generous for a shared machine
    assert "Imported 9999 feeds" in proc.stdout
    assert "1 already subscribed, left as they are" in proc.stdout and "1 listed twice in the file" in proc.stdout
    written = yaml.safe_load((ws.root / "feeds" / "big.yaml").read_text())["feeds"]
    assert len(written) == 9999 and len({f["url"] for f in written}) == 9999


def test_an_import_that_cannot_be_written_changes_nothing(ws: Workspace, tmp_path: Path) -> None:
    target = ws.root / "feeds" / "subs.yaml"
    target.write_text("feeds: [https://a.example/feed]\n")
    opml = tmp_path / "subs.opml"
    opml.write_text('<?xml version="1.0"?><opml version="2.0"><body>'
                    '<outline type="rss" xmlUrl="https://b.example/feed"/></body></opml>')
    (ws.root / "feeds" / ".subs.yaml.tmp").mkdir()  # the temporary file cannot be created
    proc = run_cli("feeds", "import", str(opml), "--config", str(ws.config_path))
    assert proc.returncode != 0 and "nothing imported" in proc.stderr and "Traceback" not in proc.stderr
    assert target.read_text() == "feeds: [https://a.example/feed]\n"


# --- item 4: credentials never leave the fetcher --------------------------------------------------------

SECRET = "s3cretPa55"
API_KEY = "k-9f8e7d6c5b4a"


def test_credentials_reach_the_server_and_nothing_else(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    seen: list[dict[str, str]] = []

    def guarded(h: Handler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        seen.append(headers)
        if headers.get("authorization") != "Basic YWxpY2U6czNjcmV0UGE1NQ==" or headers.get("x-api-key") != API_KEY:
            body = b"who are you?"
            h.send_response(401)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
            return
        body = rss([story(1, site="http://private.example")], title="Members only").encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    url = server.add("/private.xml", handler=guarded)
    with_password = url.replace("http://", f"http://alice:{SECRET}@")
    ws.feeds([{"url": with_password, "headers": {"X-Api-Key": API_KEY}}])
    ws.write_config(logging={"level": "debug"})
    daemon = Daemon(ws)
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: b"Story 1" in daemon.get("/latest.atom")[1], 15, "the private feed published")
    assert seen and all(h.get("authorization") for h in seen)
    everything = [daemon.log]
    for path in ("/latest.atom", "/latest.rss", "/latest.json", "/", "/feeds", "/opml", "/metrics", "/healthz"):
        status, body = daemon.get(path)
        assert status == 200, path
        everything.append(body.decode("utf-8", "replace"))
    public = ws.root / "public"
    everything += [p.read_text(errors="replace") for p in public.rglob("*") if p.is_file()]
    assert daemon.stop() == 0
    for command in (["status", "--json"], ["status"], ["feeds", "list", "--json"], ["feeds", "list"],
                    ["feeds", "export"], ["articles", "--json"], ["stories", "--json"]):
        proc = run_cli(*command, "--config", str(ws.config_path))
        everything += [proc.stdout, proc.stderr]
    stored = "".join(str(row) for table in ("feeds", "articles", "meta", "entry_keys", "stories")
                     for row in ws.store._read(f"SELECT * FROM {table}"))  # fmt: skip
    assert stored and SECRET not in stored and API_KEY not in stored
    if ws.backend == "sqlite":
        database = (ws.root / "test.db").read_bytes()  # the file itself, journal pages and all
        assert SECRET.encode() not in database and API_KEY.encode() not in database
    for text in everything:
        assert SECRET not in text and API_KEY not in text and "alice:" not in text
    export = run_cli("feeds", "export", "--config", str(ws.config_path)).stdout
    assert f'xmlUrl="{url}"' in export  # exported without its credentials


def test_credentials_are_not_sent_to_another_origin_after_a_redirect(ws: Workspace, server: FeedServer) -> None:
    other = FeedServer()
    try:
        target = other.add("/feed.xml", rss([story(1)]))
        start = server.add("/moved.xml", status=302, headers={"Location": target})
        ws.feeds([{"url": start.replace("http://", f"http://alice:{SECRET}@"), "headers": {"X-Api-Key": API_KEY}}])
        reports = ws.poll_all()
        assert reports[0].counts.new == 1, reports
        asked = server.requests_for("/moved.xml")[0].headers
        assert asked.get("authorization") and asked.get("x-api-key") == API_KEY
        followed = other.requests_for("/feed.xml")[0].headers
        assert "authorization" not in followed and "x-api-key" not in followed
    finally:
        other.close()


# --- item 3: output size does not follow the input ---------------------------------------------------------

def test_a_hostile_feeds_huge_fields_do_not_make_huge_outputs(ws: Workspace, server: FeedServer) -> None:
    ws.write_config(polling={"max_bytes": "20MB"})
    title = "T" * 2_000_000
    site = "https://site.example/" + "p" * 100_000
    long_link = "https://news.example/" + "l" * 100_000
    items = [Item(title=None if n % 2 else "x" * 50_000, link=long_link + str(n), guid=f"g{n}",
                  date=f"Mon, 01 Jun 2026 10:{n % 60:02d}:00 +0000", summary="<p>" + "word " * 60_000 + "</p>",
                  author="a" * 10_000, categories=["c" * 5_000] * 50,
                  enclosure=("https://cdn.example/" + "e" * 100_000, "audio/mpeg", 1)) for n in range(100)]
    url = server.add("/huge", rss(items, title=title, link=site))
    others = [server.add(f"/o{n}", rss([Item(title=f"Other {n}", link=long_link + f"o{n}", guid=f"o{n}",
                                              summary="<p>x</p>")], title=title)) for n in range(20)]
    ws.feeds([url, *others])
    ws.poll_all()
    started = time.monotonic()
    snapshot = Publisher(ws.store, ws.config()).build()
    assert time.monotonic() - started < 10
    limit = 11 * 1000**2  # output.max_bytes is 10 MB; one entry may go over
    for path in ("latest.atom", "latest.rss", "latest.json", ""):
        body = snapshot.documents[path].body
        assert len(body) < limit, (path, len(body))
    atom = feedparser.parse(snapshot.documents["latest.atom"].body)
    assert not atom.bozo and atom.entries
    assert all(len(e.source.title) <= 200 and len(e.title) <= 1000 for e in atom.entries)
    assert title[:300] not in all_output_text(snapshot)


# --- item 8: politeness across processes and deadlines -----------------------------------------------------

class _SlowHost:
    """A host that answers slowly and counts how many requests it serves at once."""

    def __init__(self, delay: float):
        self.delay = delay
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, h: Handler) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            time.sleep(self.delay)  # the server's own slowness, not a test waiting for an event
            body = rss([story(1, site=f"http://{h.path.strip('/')}.example")]).encode()
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        finally:
            with self.lock:
                self.now -= 1


def test_waiting_for_a_host_slot_does_not_count_against_the_deadline(ws: Workspace, server: FeedServer) -> None:
    slow = _SlowHost(delay=1.5)
    urls = [server.add(f"/s{n}", handler=slow) for n in range(8)]
    ws.write_config(polling={"deadline": "2s", "per_host": 2, "workers": 8})
    ws.feeds(urls)
    proc = run_cli("poll", "--no-progress", "--config", str(ws.config_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "8 ok" in proc.stdout and "deadline" not in proc.stdout + proc.stderr
    assert slow.peak <= 2


def test_the_per_host_limit_holds_across_processes(ws: Workspace, server: FeedServer, daemons: list[Daemon]) -> None:
    slow = _SlowHost(delay=1.0)
    urls = [server.add(f"/s{n}", handler=slow) for n in range(8)]
    ws.feeds(urls)
    daemon = Daemon(ws, per_host=2, workers=8, interval="2s", min_interval="2s")
    daemons.append(daemon)
    daemon.start()
    daemon.wait_until(lambda: len(server.log) >= 2, 10, "the daemon polling")
    proc = run_cli("poll", "--no-progress", "--config", str(ws.config_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert slow.peak <= 2, f"{slow.peak} requests at once to one host"
    assert daemon.stop() == 0


# --- item 11: damaged databases ------------------------------------------------------------------------

def _damage(path: Path, marker: bytes = b"<p>text text") -> None:
    """Garbage over a few pages of the articles table (bad storage under a crash): the first, middle and last
    page holding the marker, which only the articles' HTML summaries contain (the search index keeps plain
    text). Found by content rather than by position, so that no change of the file's layout moves the damage
    to pages nothing reads."""
    data = path.read_bytes()
    pages = sorted({match.start() // 4096 for match in re.finditer(re.escape(marker), data)})
    assert len(pages) >= 3, "the marker is on fewer than three pages"
    with path.open("r+b") as handle:
        for page in (pages[0], pages[len(pages) // 2], pages[-1]):
            handle.seek(page * 4096)
            handle.write(os.urandom(4096))


def _started_or_stopped(command: str, config: Path, seconds: float = 30) -> tuple[int, str]:
    """`aggregator run` or `serve`: its exit code and log once it has stopped by itself, or once it says it is
    serving and has been stopped with SIGTERM."""
    log_path = config.with_name(f"{command}.log")
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "aggregator", command, "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + seconds
    try:
        while proc.poll() is None and "serving" not in log_path.read_text():
            assert time.monotonic() < deadline, f"`aggregator {command}` neither served nor stopped: {log_path.read_text()}"
            time.sleep(0.05)  # the polling interval of the condition
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=seconds)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, log_path.read_text()


@pytest.mark.sqlite_only
def test_a_damaged_database_gets_a_clear_message_and_a_way_out(ws: Workspace, server: FeedServer) -> None:
    urls = [server.add(f"/f{n}", rss([story(i, site=f"http://f{n}.example", summary="<p>" + "text " * 200 + "</p>")
                                      for i in range(30)])) for n in range(8)]
    ws.feeds(urls)
    ws.poll_all()
    ws.close()
    db = ws.root / "test.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    _damage(db)
    check = run_cli("db", "check", "--config", str(ws.config_path))
    assert check.returncode == 1 and "damaged" in check.stderr and "db recover" in check.stderr
    # Each command either works (it never touched a damaged page) or stops with the message; never a traceback.
    # Where the damage lands depends on the file's layout: a service may start and serve (a working service does
    # not end; it is stopped once it says it serves) or stop at the first damaged page it reads.
    ws.write_config(http={"port": free_port()})
    for service in ("run", "serve"):
        code, log = _started_or_stopped(service, ws.config_path)
        assert "Traceback" not in log, (service, log)
        assert code == 0 or ("error: " in log and "damaged" in log), (service, code, log)
    for command in (["articles"], ["poll", "--no-progress"], ["feeds", "list"], ["publish"]):
        proc = run_cli(*command, "--config", str(ws.config_path), timeout=30)
        assert "Traceback" not in proc.stderr, (command, proc.stderr)
        if proc.returncode != 0:
            assert "error: " in proc.stderr and "damaged" in proc.stderr, (command, proc.stderr)
    everything = run_cli("articles", "--json", "--limit", "0", "--config", str(ws.config_path), timeout=30)
    assert everything.returncode == 2 and everything.stderr.startswith("error: ") and "damaged" in everything.stderr
    recovered = ws.root / "recovered.db"
    proc = run_cli("db", "recover", "--out", str(recovered), "--config", str(ws.config_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"articles: \d+ rows recovered", proc.stdout)
    ws.write_config(database="recovered.db")
    proc = run_cli("articles", "--limit", "0", "--config", str(ws.config_path))
    assert proc.returncode == 0 and proc.stdout.count("\n") > 0
    assert run_cli("db", "check", "--config", str(ws.config_path)).stdout.strip().endswith(": ok")


@pytest.mark.sqlite_only
def test_an_empty_database_file_is_not_taken_as_new(ws: Workspace) -> None:
    (ws.root / "test.db").write_bytes(b"")
    proc = run_cli("poll", "--config", str(ws.config_path))
    assert proc.returncode == 2 and "the database file is empty (0 bytes)" in proc.stderr
    assert (ws.root / "test.db").stat().st_size == 0
