"""The web layer against hostile clients (issue 9, items 2 and 7; issue 10, item 8):
slow and silent connections, the connection and open-file limits, slow
readers of a large document, malformed requests and headers, and start-up
errors of the web server.

The attacks run against `aggregator serve` as a real subprocess (or, where a
test needs a document or an application the database cannot give, against
the real WebServer and App in this process), always on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.config import HttpSettings
from aggregator.publish import Document, Snapshot
from aggregator.web import App, SnapshotHolder, WebServer, _accepts_gzip
from tests.conftest import Workspace, free_port, run_cli
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer
from tests.hostile_clients import NASTY_REQUESTS, SlowReaders, Trickle, raw_exchange, timed_get

MB = 1000**2
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9]) ")


# --- `aggregator serve` as a subprocess --------------------------------------------------------


class Serve:
    """`aggregator serve` with its log in a file (a pipe could fill and block it)."""

    def __init__(self, ws: Workspace, port: int, rlimit_nofile: int | None = None):
        self.port = port
        self.log_path = ws.root / f"serve-{port}.log"
        with open(self.log_path, "ab") as log:
            limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (rlimit_nofile, rlimit_nofile))) \
                if rlimit_nofile else None
            self.proc = subprocess.Popen([sys.executable, "-m", "aggregator", "serve", "--config", str(ws.config_path)],
                                         stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                         preexec_fn=limit)
        self.process = psutil.Process(self.proc.pid)
        deadline = time.monotonic() + 30
        while timed_get(port, "/healthz", timeout=2)[1] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start:\n{self.log}")
            time.sleep(0.1)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        """Stop it (it must exit cleanly) and return its log."""
        self.proc.terminate()
        try:
            assert self.proc.wait(timeout=15) == 0, self.log
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"serve did not stop on SIGTERM:\n{self.log}") from None
        return self.log


@pytest.fixture
def start_serve(ws: Workspace, server: FeedServer) -> Iterator[Any]:
    started: list[Serve] = []

    def start(rlimit_nofile: int | None = None, **http: object) -> Serve:
        port = free_port()
        ws.write_config(http={"port": port, "base_url": f"http://127.0.0.1:{port}/", **http},
                        logging={"level": "info"})
        url = server.add("/a", rss([story(i) for i in range(5)], title="Source A"))
        ws.feeds([{"url": url}])
        run_cli("poll", "--config", str(ws.config_path), check=True)
        started.append(Serve(ws, port, rlimit_nofile))
        return started[-1]

    yield start
    for serve in started:
        if serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(timeout=10)


def probe(port: int, seconds: float, paths: tuple[str, ...] = ("/latest.atom", "/healthz")) -> list[tuple[str, float, int | None]]:
    """A normal client: a GET on a fresh connection, alternating paths, for ``seconds``."""
    results = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for path in paths:
            latency, status, body = timed_get(port, path, timeout=5)
            results.append((path, latency, status))
            assert status != 200 or path != "/latest.atom" or body.startswith(b"<?xml")
        time.sleep(0.1)
    return results


def assert_served_quickly(results: list[tuple[str, float, int | None]], what: str) -> None:
    failed = [r for r in results if r[2] != 200]
    assert not failed, f"{what}: {len(failed)} of {len(results)} requests failed: {failed[:5]}"
    latencies = [r[1] for r in results]
    assert max(latencies) < 2.0, f"{what}: slowest {max(latencies):.2f}s (median {statistics.median(latencies):.3f}s)"
    assert statistics.median(latencies) < 0.5, f"{what}: median {statistics.median(latencies):.3f}s"


def assert_no_traceback(log: str) -> None:
    assert "Traceback" not in log, log[-4000:]
    assert " ERROR " not in log, log[-4000:]


# --- slow connections (issue 9 item 2) ---------------------------------------------------------


def test_normal_clients_are_served_while_300_connections_trickle_headers(start_serve: Any) -> None:
    # waitress alone stopped accepting at 200 connections and never timed
    # these out: /latest.atom and /healthz hung until they went away.
    serve = start_serve()
    with Trickle(serve.port, 300, every=1.0) as trickle:
        assert trickle.wait_open(timeout=30)
        results = probe(serve.port, 6)
        assert trickle.open_now >= 290  # the attack is still on while we measured
    assert_served_quickly(results, "300 trickling connections")
    assert len(results) >= 10
    assert_no_traceback(serve.stop())


def test_at_the_connection_limit_the_slowest_connections_make_room(start_serve: Any) -> None:
    serve = start_serve(max_connections=50, request_timeout="60s", idle_timeout="60s")
    with Trickle(serve.port, 300, every=1.0, reconnect=True) as trickle:
        assert trickle.wait_open(timeout=30)
        results = probe(serve.port, 6)
        # The server made room by closing trickling connections (not ours).
        assert trickle.stats.closed_by_server >= 250
    assert_served_quickly(results, "300 reconnecting trickling connections over a limit of 50")
    log = serve.stop()
    assert "at http.max_connections (50)" in log
    assert log.count("at http.max_connections") <= 3  # throttled: at most one line a minute
    assert_no_traceback(log)


def test_request_deadline_idle_timeout_and_keep_alive(start_serve: Any) -> None:
    serve = start_serve(request_timeout="2s", idle_timeout="3s")
    client = http.client.HTTPConnection("127.0.0.1", serve.port, timeout=10)
    client.request("GET", "/healthz")
    response = client.getresponse()
    assert response.status == 200 and response.read() and not response.will_close
    kept_alive = client.sock
    answered = time.monotonic()
    with Trickle(serve.port, 20, every=0.5, reconnect=False) as trickling, \
            Trickle(serve.port, 20, silent=True, reconnect=False) as silent:
        assert trickling.wait_closed(20, timeout=15) and silent.wait_closed(20, timeout=15)
        assert kept_alive.recv(1) == b""  # closed by the server
        kept_alive_for = time.monotonic() - answered
    # Trickling: closed request_timeout after the first byte (sweeps run every second), with a 408.
    assert all(1.5 < t < 5.0 for t in trickling.stats.lifetimes), trickling.stats.lifetimes
    assert trickling.stats.answers and all(a.startswith(b"HTTP/1.1 408 ") for a in trickling.stats.answers)
    # Silent and idle keep-alive connections: closed idle_timeout after their last byte.
    assert all(2.5 < t < 6.0 for t in silent.stats.lifetimes), silent.stats.lifetimes
    assert 2.5 < kept_alive_for < 6.0
    kept_alive.close()
    assert_no_traceback(serve.stop())


def test_open_file_limit_lowers_the_connection_limit_and_nothing_hangs(start_serve: Any) -> None:
    # With 300 descriptors and 256 kept for the rest of the service, at most
    # 44 connections: the server says so and never runs out (no EMFILE loop).
    serve = start_serve(rlimit_nofile=300)
    assert "http.max_connections lowered from 1000 to 44" in serve.log
    with Trickle(serve.port, 200, every=1.0, reconnect=True) as trickle:
        assert trickle.wait_open(timeout=30)
        results = probe(serve.port, 4)
        assert serve.process.num_fds() < 300
    assert_served_quickly(results, "200 trickling connections, 300 descriptors")
    log = serve.stop()
    assert "cannot accept" not in log
    assert_no_traceback(log)


# --- the same server in this process, where a test needs a special app or document -------------


@pytest.fixture
def in_process() -> Iterator[Any]:
    servers: list[WebServer] = []

    def start(app: Any, **http: Any) -> WebServer:
        server = WebServer(app, HttpSettings(port=0, **http))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_when_every_connection_is_busy_a_new_one_gets_503_at_once(in_process: Any) -> None:
    release = threading.Event()

    def blocking_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        release.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
        return [b"ok\n"]

    server = in_process(blocking_app, max_connections=16, threads=1)
    busy = []
    try:
        for _ in range(16):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append(sock)
        deadline = time.monotonic() + 10
        while sum(1 for c in list(server.server.active_channels.values()) if c.requests) < 16:
            assert time.monotonic() < deadline, "the 16 requests never arrived"
            time.sleep(0.02)
        started = time.monotonic()
        answer = raw_exchange(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in answer
        assert time.monotonic() - started < 1.0
        release.set()
        for sock in busy:  # the busy ones are served as usual
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    finally:
        release.set()
        for sock in busy:
            sock.close()


def _open_temp_files() -> list[str]:
    temp = os.path.realpath(tempfile.gettempdir())
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(temp + "/"):
            found.append(target)
    return found


def test_slow_readers_of_a_large_document_cost_no_memory_no_disk_and_no_threads(in_process: Any) -> None:
    # waitress copied each response into a buffer that spills to /tmp past
    # 1 MB: a 200 MB document and slow readers made it buffer 1.9 GB.
    body = b"<?xml version='1.0'?><feed>" + os.urandom(24 * MB // 2).hex().encode() + b"</feed>"  # 24 MB
    document = Document("latest.atom", body, "application/atom+xml; charset=utf-8", datetime(2026, 1, 1, tzinfo=UTC))
    app = App(SnapshotHolder(Snapshot(documents={"latest.atom": document})),
              extra={"healthz": lambda: (200, "application/json", b"{}\n")})
    server = in_process(app, threads=2, idle_timeout="60s")
    timed_get(server.port, "/healthz")
    rss_before = psutil.Process().memory_info().rss
    temp_before = _open_temp_files()  # pytest's own output capture uses some
    readers = SlowReaders(server.port, 20)
    try:
        deadline = time.monotonic() + 20
        channels = server.server.active_channels
        while sum(1 for c in list(channels.values()) if c.total_outbufs_len > MB and not c.requests) < 20:
            assert time.monotonic() < deadline, "the slow readers' responses never started"
            time.sleep(0.05)
        # 20 x 24 MB pending, yet nothing was copied or spilled to disk ...
        assert _open_temp_files() == temp_before
        assert psutil.Process().memory_info().rss - rss_before < 60 * MB
        # ... and the two worker threads are free for everyone else.
        latency, status, _ = timed_get(server.port, "/healthz")
        assert status == 200 and latency < 1.0
        latency, status, full = timed_get(server.port, "/latest.atom", timeout=30)
        assert status == 200 and full == body
    finally:
        readers.close()


def test_a_reader_that_stops_reading_is_closed_after_idle_timeout(in_process: Any) -> None:
    body = b"x" * (8 * MB)
    document = Document("latest.atom", body, "application/atom+xml; charset=utf-8", None)
    server = in_process(App(SnapshotHolder(Snapshot(documents={"latest.atom": document}))), idle_timeout="2s")
    readers = SlowReaders(server.port, 3)
    try:
        deadline = time.monotonic() + 15
        while server.server.active_channels:
            assert time.monotonic() < deadline, "stalled readers were never closed"
            time.sleep(0.1)
    finally:
        readers.close()


def test_at_the_limit_readers_that_stopped_reading_make_room(in_process: Any) -> None:
    document = Document("latest.atom", b"x" * (8 * MB), "application/atom+xml; charset=utf-8", None)
    app = App(SnapshotHolder(Snapshot(documents={"latest.atom": document})),
              extra={"healthz": lambda: (200, "application/json", b"{}\n")})
    server = in_process(app, max_connections=16, idle_timeout="60s")
    readers = SlowReaders(server.port, 16)
    try:
        deadline = time.monotonic() + 15
        while sum(1 for c in list(server.server.active_channels.values()) if c.total_outbufs_len) < 16:
            assert time.monotonic() < deadline, "the slow readers' responses never started"
            time.sleep(0.05)
        for _ in range(5):
            latency, status, _ = timed_get(server.port, "/healthz")
            assert status == 200 and latency < 2.0
        # Readers stuck with output were chosen to make room, and closed by the next sweep (not left waiting
        # for a POLLOUT that never comes).
        deadline = time.monotonic() + 5
        while True:
            channels = list(server.server.active_channels.values())
            if len(channels) < 16 and not any(c.will_close for c in channels):
                break
            assert time.monotonic() < deadline, f"{len(channels)} open, {sum(c.will_close for c in channels)} closing"
            time.sleep(0.05)
    finally:
        readers.close()


# --- malformed requests and headers (issue 9 item 7) ----------------------------------------------


@pytest.mark.parametrize(("header", "gzip_ok"), [
    ("gzip;q=1.2.3", False), ("gzip;q=.", False), ("gzip;q=1.0001", False), ("gzip;q=", False),
    ("gzip;q=0", False), ("gzip;q=0.000", False), ("gzip;q=0.001", True), ("GZIP ; Q = 1", True),
    ("gzip", True), ("x-gzip", True), ("*", True), ("*;q=0", False), ("gzip;q=0, *", False),
    ("*;q=0, gzip", True), ("br, deflate", False), ("gzip;q=abc, *;q=0.5", True), ("", False),
    (",,,;;;===", False), ("gzip;q=1e3", False), ("gzip;q=" + "9" * 5000, False),
])
def test_accept_encoding(header: str, gzip_ok: bool) -> None:
    assert _accepts_gzip(header) is gzip_ok


def _app_for_fuzz() -> App:
    documents = {
        "latest.atom": Document("latest.atom", b"<feed/>", "application/atom+xml; charset=utf-8",
                                datetime(2026, 1, 1, tzinfo=UTC)),
        "": Document("", b"<!DOCTYPE html><p>hi</p>", "text/html; charset=utf-8", None),
    }
    return App(SnapshotHolder(Snapshot(documents=documents)),
               extra={"healthz": lambda: (200, "application/json", b"{}\n")})


# Header values as waitress hands them over: any byte but CR and LF, decoded as Latin-1.
latin1_values = st.text(st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n"), max_size=300)
paths = st.one_of(
    st.sampled_from(["/", "/latest.atom", "/healthz", "/tags/../latest.atom", "/%2e%2e/", "/feeds/", "/opml",
                     "/tags/x.atom/../../config.yaml", "//latest.atom", "/latest.atom/", "*", ""]),
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=200).map(lambda p: "/" + p),
    st.builds(lambda n: "/" + "a/" * n, st.integers(0, 4000)),
)
methods = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "OPTIONS", "TRACE", "PUT", "PATCH", "DELETE", "get",
                                     "PRI", "CONNECT"]),
                    st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20))
header_names = st.sampled_from(["HTTP_ACCEPT_ENCODING", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_RANGE",
                                "HTTP_IF_RANGE", "HTTP_HOST", "HTTP_ACCEPT", "HTTP_CONNECTION", "HTTP_FORWARDED"])
http_dates = st.builds(lambda d, y: d + str(y) + " 00:00:00 GMT", st.sampled_from(["Mon, 01 Jan ", "Tue, 31 Feb "]),
                       st.integers(-10, 10**25))


def test_the_app_answers_any_method_path_and_headers_without_error(caplog: pytest.LogCaptureFixture) -> None:
    app = _app_for_fuzz()
    caplog.set_level(logging.DEBUG)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(method=methods, path=paths,
           headers=st.dictionaries(header_names, st.one_of(latin1_values, http_dates), max_size=6))
    def check(method: str, path: str, headers: dict[str, str]) -> None:
        statuses = []
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.url_scheme": "http", **headers}
        body = b"".join(app(environ, lambda status, hdrs: statuses.append((status, hdrs))))
        status, response_headers = statuses[0]
        assert int(status[:3]) in (200, 304, 404, 405), status
        names = {name.lower(): value for name, value in response_headers}
        if method == "HEAD" or status.startswith("304"):
            assert body == b""
        else:
            assert int(names["content-length"]) == len(body)
        if names.get("content-encoding") == "gzip":
            gzip.decompress(body)

    check()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


header_lines = st.lists(
    st.tuples(st.one_of(st.sampled_from([b"Accept-Encoding", b"If-None-Match", b"If-Modified-Since", b"Range",
                                         b"Host", b"Connection", b"Transfer-Encoding", b"Content-Length", b"Expect",
                                         b"X-Forwarded-For", b"Forwarded", b"If-Range"]),
                        st.binary(min_size=0, max_size=30)),
              st.binary(max_size=200).map(lambda v: v.replace(b"\r", b"").replace(b"\n", b""))),
    max_size=8,
)


def test_the_server_answers_any_raw_request_with_a_status_and_no_traceback(
        in_process: Any, caplog: pytest.LogCaptureFixture) -> None:
    server = in_process(_app_for_fuzz())
    caplog.set_level(logging.DEBUG)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(method=st.one_of(st.sampled_from([b"GET", b"HEAD", b"POST", b"get", b"PRI"]), st.binary(min_size=1, max_size=12)),
           target=st.one_of(st.sampled_from([b"/latest.atom", b"http://x/latest.atom", b"*", b"/%00", b"/%2f%2e%2e"]),
                            st.binary(max_size=300).map(lambda t: b"/" + t)),
           version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1x", b""]),
           headers=header_lines)
    def check(method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]]) -> None:
        request = method + b" " + target + b" " + version + b"\r\n"
        request += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
        answer = raw_exchange(server.port, request, timeout=10)
        # Either a status line, or (a request whose end never came, half-closed) nothing at all.
        match = STATUS_LINE.match(answer)
        if match is None:
            assert answer == b"", answer[:200]
        elif int(match.group(1)) == 501:
            # RFC 9112 6.1: a transfer coding the server does not know gets 501 (waitress knows only chunked).
            assert any(name.lower() == b"transfer-encoding" for name, _ in headers), answer[:200]
        else:
            assert 100 <= int(match.group(1)) < 500, answer[:200]

    check()
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not problems, [r.getMessage() for r in problems[:3]]


def test_nasty_requests_against_serve_get_a_status_and_leave_no_traceback(start_serve: Any) -> None:
    serve = start_serve()
    for name, request in NASTY_REQUESTS.items():
        answer = raw_exchange(serve.port, request, timeout=10)
        match = STATUS_LINE.match(answer)
        assert match, f"{name}: {answer[:200]!r}"
        assert 100 <= int(match.group(1)) < 500, f"{name}: {answer[:200]!r}"
    # The two that once gave a 500 now give the document, uncompressed and unconditional.
    answer = raw_exchange(serve.port, NASTY_REQUESTS["bad qvalue"])
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Content-Encoding" not in answer
    assert raw_exchange(serve.port, NASTY_REQUESTS["year 10^20"]).startswith(b"HTTP/1.1 200 ")
    assert_no_traceback(serve.stop())


# --- start-up errors (issue 10 item 8) -----------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_taken_port_is_one_clear_error(ws: Workspace, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ws.write_config(http={"port": port})
        proc = run_cli(command, "--config", str(ws.config_path), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, proc.stderr
    assert f"127.0.0.1:{port}" in error[0] and "already in use" in error[0] and "http.port" in error[0]
    assert "config.yaml" in error[0]


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_host_that_is_not_a_host_name_is_a_config_error(ws: Workspace, command: str) -> None:
    ws.write_config(http={"host": "0.0.0.0.1", "port": free_port()})
    proc = run_cli(command, "--config", str(ws.config_path), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "http.host: expected an IP address or host name to listen on" in proc.stderr and "0.0.0.0.1" in proc.stderr


@pytest.mark.parametrize(("host", "says"), [("192.0.2.1", "not an address of this machine"),
                                            ("nosuchhost.invalid", "not an address or host name")])
@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_bad_host_is_one_clear_error(ws: Workspace, command: str, host: str, says: str) -> None:
    ws.write_config(http={"host": host, "port": free_port()})
    proc = run_cli(command, "--config", str(ws.config_path), timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: cannot listen on ") or "\nerror: cannot listen on " in proc.stderr
    assert host in proc.stderr and says in proc.stderr and "http.host" in proc.stderr
