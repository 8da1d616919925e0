"""`aggregator serve` as a real subprocess: HTTP caching, compression,
methods, unknown paths, and picking up new stories."""

from __future__ import annotations

import gzip
import http.client
import socket
import subprocess
import sys
import time
from typing import Iterator

import pytest

from tests.conftest import Workspace, free_port, run_cli
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer


class Served:
    def __init__(self, port: int, proc: subprocess.Popen[str]):
        self.port = port
        self.proc = proc

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def wait_for_port(port: int, proc: subprocess.Popen[str], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


@pytest.fixture
def served(ws: Workspace, server: FeedServer) -> Iterator[Served]:
    port = free_port()
    ws.write_config(http={"port": port, "base_url": f"http://127.0.0.1:{port}/"}, output={"max_age": "10m"})
    url = server.add("/a", rss([story(i) for i in range(3)], title="Source A"))
    ws.feeds([{"url": url, "tags": ["world"]}])
    run_cli("poll", "--config", str(ws.config_path), check=True)
    proc = subprocess.Popen([sys.executable, "-m", "aggregator", "serve", "--config", str(ws.config_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, proc)
        yield Served(port, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_200_then_304_with_each_validator(served: Served) -> None:
    status, headers, body = served.request("GET", "/latest.atom")
    assert status == 200
    assert headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert headers["cache-control"] == "public, max-age=600"
    assert headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(body) and body.startswith(b"<?xml")
    etag, modified = headers["etag"], headers["last-modified"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert served.request("GET", "/latest.atom", {"If-None-Match": etag})[0] == 304
    assert served.request("GET", "/latest.atom", {"If-None-Match": f'"other", {etag}'})[0] == 304
    assert served.request("GET", "/latest.atom", {"If-Modified-Since": modified})[0] == 304
    assert served.request("GET", "/latest.atom", {"If-None-Match": '"stale"'})[0] == 200
    assert served.request("GET", "/latest.atom", {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})[0] == 200
    status, headers304, body304 = served.request("GET", "/latest.atom", {"If-None-Match": etag})
    assert body304 == b"" and headers304["etag"] == etag


def test_gzip_and_identity_share_the_etag(served: Served) -> None:
    _, plain_headers, plain = served.request("GET", "/latest.rss")
    _, gz_headers, compressed = served.request("GET", "/latest.rss", {"Accept-Encoding": "gzip, deflate"})
    assert gz_headers["content-encoding"] == "gzip" and "content-encoding" not in plain_headers
    assert gzip.decompress(compressed) == plain
    assert gz_headers["etag"] == plain_headers["etag"]
    assert served.request("GET", "/latest.rss", {"Accept-Encoding": "gzip", "If-None-Match": plain_headers["etag"]})[0] == 304
    assert "content-encoding" not in served.request("GET", "/latest.rss", {"Accept-Encoding": "gzip;q=0"})[1]


def test_content_types_and_aliases(served: Served) -> None:
    expected = {"/latest.rss": "application/rss+xml; charset=utf-8", "/latest.json": "application/feed+json; charset=utf-8",
                "/": "text/html; charset=utf-8", "/index.html": "text/html; charset=utf-8",
                "/feeds": "text/html; charset=utf-8", "/opml": "text/x-opml; charset=utf-8",
                "/tags/world.atom": "application/atom+xml; charset=utf-8", "/tags/world.json": "application/feed+json; charset=utf-8"}
    for path, content_type in expected.items():
        status, headers, _ = served.request("GET", path)
        assert (status, headers["content-type"]) == (200, content_type), path


def test_head_has_headers_but_no_body(served: Served) -> None:
    _, get_headers, body = served.request("GET", "/latest.json")
    status, headers, head_body = served.request("HEAD", "/latest.json")
    assert status == 200 and head_body == b""
    assert headers["etag"] == get_headers["etag"] and headers["content-length"] == str(len(body))


def test_unknown_paths_tags_and_methods(served: Served) -> None:
    for path in ("/nope", "/tags/nosuchtag.atom", "/latest.xml", "/../../etc/passwd", "/tags/../config.yaml",
                 "/tags/world.atom/../../x", "/%2e%2e/%2e%2e/etc/passwd", "/metrics"):
        status, headers, body = served.request("GET", path)
        assert status == 404, path
        assert headers["content-type"] == "text/html; charset=utf-8" and b"Not found" in body
    status, headers, _ = served.request("POST", "/latest.atom")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert served.request("DELETE", "/")[0] == 405


def test_request_header_limit(served: Served) -> None:
    status, _, _ = served.request("GET", "/latest.atom", {"X-Big": "x" * 40_000})
    assert status == 431 or status == 400


def test_serve_picks_up_new_stories(served: Served, ws: Workspace, server: FeedServer) -> None:
    _, headers, _ = served.request("GET", "/latest.atom")
    server.update("/a", body=rss([story(i) for i in range(4)], title="Source A"))
    run_cli("poll", "--config", str(ws.config_path), check=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, new_headers, body = served.request("GET", "/latest.atom", {"If-None-Match": headers["etag"]})
        if status == 200:
            assert b"Story 3" in body and new_headers["etag"] != headers["etag"]
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the new story never appeared")


def test_sigterm_stops_serve_cleanly(served: Served) -> None:
    served.proc.terminate()
    assert served.proc.wait(timeout=10) == 0
