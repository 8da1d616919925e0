"""The fetcher against a real HTTP server on 127.0.0.1, and conditional GET
round trips through the whole pipeline."""

from __future__ import annotations

from typing import Iterator

import gzip
import socket
import ssl
import time
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
import requests
import urllib3

from aggregator import __version__
from aggregator.fetch import Fetcher, FetchLimits, parse_max_age, parse_retry_after
from aggregator.model import Outcome
from tests.conftest import Workspace
from tests.feedgen import rss, story
from tests.fixture_server import FeedServer, Handler, http_date


def fetcher(**kw: object) -> Fetcher:
    base = dict(connect_timeout=2, read_timeout=2, deadline=5, max_bytes=100_000, max_redirects=3,
                user_agent=f"aggregator/{__version__} (+https://example.invalid)")
    base.update(kw)
    return Fetcher(FetchLimits(**base))  # type: ignore[arg-type]


def test_request_headers_identify_us(server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)]))
    result = fetcher().fetch(url)
    assert result.outcome is Outcome.OK
    sent = server.requests_for("/feed")[0].headers
    assert sent["user-agent"].startswith(f"aggregator/{__version__} (+")
    assert "application/atom+xml" in sent["accept"] and "application/rss+xml" in sent["accept"]
    assert "application/feed+json" in sent["accept"]
    assert "gzip" in sent["accept-encoding"]
    assert "cookie" not in sent


def test_cookies_are_never_sent_back(server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)]), headers={"Set-Cookie": "session=abc; Path=/"})
    f = fetcher()
    f.fetch(url)
    f.fetch(url)
    assert all("cookie" not in r.headers for r in server.requests_for("/feed"))


def test_gzip_body_is_decoded(server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)]), gzip=True)
    result = fetcher().fetch(url)
    assert result.outcome is Outcome.OK and result.body and result.body.startswith(b"<?xml")
    assert result.bytes_read < len(result.body)  # bytes on the wire were compressed


def test_size_limit_while_streaming(server: FeedServer) -> None:
    big = b"<rss>" + b"x" * 200_000 + b"</rss>"

    def no_length(h: Handler) -> None:  # no Content-Length: only streaming can catch it
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(big)

    server.add("/declared", big)
    server.add("/streamed", handler=no_length)
    f = fetcher()
    declared = f.fetch(server.url("/declared"))
    assert declared.outcome is Outcome.TOO_LARGE and "over the 100,000-byte limit" in (declared.error or "")
    streamed = f.fetch(server.url("/streamed"))
    assert streamed.outcome is Outcome.TOO_LARGE and "decompressed" in (streamed.error or "")


def test_decompressed_size_is_limited(server: FeedServer) -> None:
    bomb = gzip.compress(b"<rss>" + b" " * 5_000_000)  # ~5 KB on the wire

    def send_bomb(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(bomb)))
        h.end_headers()
        h.wfile.write(bomb)

    server.add("/bomb", handler=send_bomb)
    result = fetcher().fetch(server.url("/bomb"))
    assert result.outcome is Outcome.TOO_LARGE
    assert len(bomb) < 100_000


def test_redirect_limit_and_loop(server: FeedServer) -> None:
    for i in range(6):
        server.add(f"/r{i}", status=301, headers={"Location": f"/r{i + 1}"}, content_type=None)
    server.add("/r6", rss([story(1)]))
    server.add("/loop-a", status=302, headers={"Location": "/loop-b"}, content_type=None)
    server.add("/loop-b", status=302, headers={"Location": "/loop-a"}, content_type=None)
    f = fetcher()
    too_many = f.fetch(server.url("/r0"))
    assert too_many.outcome is Outcome.REDIRECT and "more than 3 redirects" in (too_many.error or "")
    loop = f.fetch(server.url("/loop-a"))
    assert loop.outcome is Outcome.REDIRECT and "redirect loop" in (loop.error or "")
    ok = f.fetch(server.url("/r4"))
    assert ok.outcome is Outcome.OK and ok.final_url == server.url("/r6")
    assert ok.permanent_redirect == server.url("/r6")


def test_temporary_redirect_is_not_permanent(server: FeedServer) -> None:
    server.add("/moved", status=301, headers={"Location": "/temp"}, content_type=None)
    server.add("/temp", status=302, headers={"Location": "/final"}, content_type=None)
    server.add("/final", rss([story(1)]))
    result = fetcher().fetch(server.url("/moved"))
    assert result.outcome is Outcome.OK
    assert result.permanent_redirect == server.url("/temp")  # only the leading 301 counts


def test_read_timeout_and_total_deadline(server: FeedServer) -> None:
    def silent(h: Handler) -> None:
        time.sleep(4)  # the server's own silence, not a test waiting for an event

    def trickle(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/rss+xml")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(0.3)  # the server's own slowness

    server.add("/silent", handler=silent)
    server.add("/trickle", handler=trickle)
    f = fetcher(read_timeout=1, deadline=2.5)
    started = time.monotonic()
    silent_result = f.fetch(server.url("/silent"))
    assert silent_result.outcome is Outcome.TIMEOUT and "read timeout" in (silent_result.error or "")
    assert time.monotonic() - started < 2.5
    started = time.monotonic()
    trickled = f.fetch(server.url("/trickle"))
    elapsed = time.monotonic() - started
    assert trickled.outcome is Outcome.TIMEOUT and "total deadline" in (trickled.error or "")
    assert 2.4 < elapsed < 4.0  # the deadline held although every read was quick


def test_connection_refused_and_dns_failure() -> None:
    f = fetcher()
    refused = f.fetch("http://127.0.0.1:9/feed")
    assert refused.outcome is Outcome.CONNECTION and "connection refused" in (refused.error or "")
    dns = f.fetch("http://no-such-host.invalid/feed")
    assert dns.outcome is Outcome.CONNECTION and "DNS" in (dns.error or "")


@pytest.mark.parametrize("status,outcome", [(500, Outcome.HTTP_ERROR), (404, Outcome.HTTP_ERROR),
                                            (410, Outcome.GONE), (429, Outcome.RATE_LIMITED), (503, Outcome.RATE_LIMITED)])
def test_http_errors(server: FeedServer, status: int, outcome: Outcome) -> None:
    url = server.add("/e", b"nope", status=status, headers={"Retry-After": "120"})
    result = fetcher().fetch(url)
    assert result.outcome is outcome and result.status == status
    if outcome is Outcome.RATE_LIMITED:
        assert result.retry_after == 120


def test_header_hints() -> None:
    now = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120") == 120
    assert parse_retry_after("Mon, 01 Jun 2026 12:05:00 GMT", now) == 300
    assert parse_retry_after("soon") is None
    assert parse_max_age({"cache-control": "public, max-age=600"}) == 600
    assert parse_max_age({"cache-control": "no-cache"}) == 0
    assert parse_max_age({"expires": "Mon, 01 Jun 2026 13:00:00 GMT", "date": "Mon, 01 Jun 2026 12:00:00 GMT"}) == 3600
    assert parse_max_age({"expires": "0"}) == 0
    assert parse_max_age({}) is None


# --- conditional GET through the pipeline ---------------------------------------------------


def _conditional_headers(server: FeedServer, path: str) -> list[tuple[str | None, str | None]]:
    return [(r.headers.get("if-none-match"), r.headers.get("if-modified-since")) for r in server.requests_for(path)]


def test_etag_only(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)]), etag='"v1"')
    ws.feeds([url])
    assert ws.poll_url(url).outcome is Outcome.OK
    assert ws.poll_url(url).outcome is Outcome.NOT_MODIFIED
    assert _conditional_headers(server, "/feed") == [(None, None), ('"v1"', None)]
    assert ws.feed(url).etag == '"v1"' and ws.feed(url).last_modified is None


def test_last_modified_only(ws: Workspace, server: FeedServer) -> None:
    stamp = "Mon, 01 Jun 2026 10:00:00 GMT"
    url = server.add("/feed", rss([story(1)]), last_modified=stamp)
    ws.feeds([url])
    ws.poll_url(url)
    assert ws.poll_url(url).outcome is Outcome.NOT_MODIFIED
    assert _conditional_headers(server, "/feed") == [(None, None), (None, stamp)]


def test_both_validators_sent_verbatim(ws: Workspace, server: FeedServer) -> None:
    stamp = "Mon, 01 Jun 2026 10:00:00 GMT"
    url = server.add("/feed", rss([story(1)]), etag='W/"weak-1"', last_modified=stamp)
    ws.feeds([url])
    ws.poll_url(url)
    assert ws.poll_url(url).outcome is Outcome.NOT_MODIFIED
    assert _conditional_headers(server, "/feed")[1] == ('W/"weak-1"', stamp)


def test_validators_change_while_body_stays_the_same(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)]), etag='"a"')
    ws.feeds([url])
    ws.poll_url(url)
    server.update("/feed", etag='"b"')  # e.g. a CDN recomputed it; bytes identical
    second = ws.poll_url(url)
    assert second.outcome is Outcome.UNCHANGED  # byte-identical body: not parsed again
    assert second.parse_seconds == 0
    assert ws.feed(url).etag == '"b"'  # but the new validator is stored
    assert ws.poll_url(url).outcome is Outcome.NOT_MODIFIED
    assert _conditional_headers(server, "/feed") == [(None, None), ('"a"', None), ('"b"', None)]


def test_304_with_new_validators_refreshes_them(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", rss([story(1)]), etag='"a"')
    ws.feeds([url])
    ws.poll_url(url)

    def not_modified_new_etag(h: Handler) -> None:
        h.send_response(304)
        h.send_header("ETag", '"a2"')
        h.send_header("Last-Modified", http_date(0))
        h.send_header("Content-Length", "0")
        h.end_headers()

    server.update("/feed", handler=not_modified_new_etag)
    assert ws.poll_url(url).outcome is Outcome.NOT_MODIFIED
    feed = ws.feed(url)
    assert feed.etag == '"a2"' and feed.last_modified == http_date(0)


def test_failure_is_recorded_and_others_continue(ws: Workspace, server: FeedServer) -> None:
    good = server.add("/good", rss([story(1)]))
    bad = server.add("/bad", b"oops", status=500)
    ws.feeds([good, bad])
    reports = {r.url: r for r in ws.poll_all()}
    assert reports[good].outcome is Outcome.OK and reports[good].counts.new == 1
    assert reports[bad].outcome is Outcome.HTTP_ERROR
    feed = ws.feed(bad)
    assert feed.error_count == 1 and feed.last_status == 500
    assert feed.last_error == "HTTP 500 Internal Server Error"
    ws.poll_all()
    assert ws.feed(bad).error_count == 2
    server.update("/bad", status=200, body=rss([story(2)]).encode())
    ws.poll_all()
    assert ws.feed(bad).error_count == 0 and ws.feed(bad).last_error is None


# --- public -> private redirects -----------------------------------------------------------
# 127.0.0.2 plays a public host: the test declares only 127.0.0.1 private
# (polling.private_networks), so a redirect from .2 to .1 is public -> private.


@pytest.fixture
def public_server() -> Iterator[FeedServer]:
    srv = FeedServer(host="127.0.0.2")
    yield srv
    srv.close()


def test_redirect_from_public_to_private_is_refused(server: FeedServer, public_server: FeedServer) -> None:
    internal = server.add("/internal", rss([story(1)]))
    public_server.add("/feed", status=301, headers={"Location": internal}, content_type=None)
    f = fetcher(private_networks=("127.0.0.1/32",))
    result = f.fetch(public_server.url("/feed"))
    assert result.outcome is Outcome.REDIRECT
    assert result.error == "refused redirect from a public address to a private one (127.0.0.1)"
    assert server.requests_for("/internal") == []  # not even one request reached it
    # private -> public is fine, and so is private -> private (a feed on your own LAN)
    public_server.add("/ok", rss([story(2)]))
    server.add("/out", status=302, headers={"Location": public_server.url("/ok")}, content_type=None)
    assert f.fetch(server.url("/out")).outcome is Outcome.OK
    assert f.fetch(internal).outcome is Outcome.OK


def test_keep_alive_connection_to_a_private_host_is_not_reused_for_a_public_redirect(
        server: FeedServer, public_server: FeedServer) -> None:
    internal = server.add("/internal", rss([story(1)]))
    f = fetcher(private_networks=("127.0.0.1/32",))
    assert f.fetch(internal).outcome is Outcome.OK  # opens a pooled connection to 127.0.0.1
    public_server.add("/feed", status=307, headers={"Location": internal}, content_type=None)
    assert f.fetch(public_server.url("/feed")).outcome is Outcome.REDIRECT
    assert len(server.requests_for("/internal")) == 1


def test_autodiscovery_applies_the_private_address_rule(server: FeedServer, public_server: FeedServer) -> None:
    from aggregator.discover import DiscoveryError, discover
    from aggregator.ingest import InlineParser

    internal = server.add("/feed.xml", rss([story(1)]))
    public_server.add("/", f'<html><head><link rel="alternate" type="application/rss+xml" href="{internal}"></head></html>',
                      content_type="text/html")
    with pytest.raises(DiscoveryError, match=r"refused a link on a public page that points to a private address \(127.0.0.1\)"):
        discover(fetcher(private_networks=("127.0.0.1/32",)), public_server.url("/"), InlineParser())
    assert server.requests_for("/feed.xml") == []


def test_a_broken_document_is_fetched_again_not_forgotten_behind_a_304(ws: Workspace, server: FeedServer) -> None:
    url = server.add("/feed", b"<html><body>maintenance</body></html>", etag='"broken"', content_type="text/html")
    ws.feeds([url])
    assert ws.poll_url(url).outcome is Outcome.PARSE_ERROR
    second = ws.poll_url(url)
    assert second.outcome is Outcome.PARSE_ERROR  # not a 304 that would look healthy
    assert not server.requests_for("/feed")[1].conditional
    assert ws.feed(url).error_count == 2
    server.update("/feed", body=rss([story(1)]), etag='"fixed"', content_type="application/rss+xml")
    assert ws.poll_url(url).outcome is Outcome.OK and ws.feed(url).error_count == 0


# --- network errors are told apart by type, whatever their message says ---------------------------

def _wrapped(reason: BaseException, outer: type[Exception] = requests.exceptions.ConnectionError) -> Exception:
    """As requests raises it: its error around urllib3's MaxRetryError around the cause."""
    return outer(urllib3.exceptions.MaxRetryError(None, "http://h.example/feed", reason=reason))  # type: ignore[arg-type]


def _refused() -> Exception:
    connect = urllib3.exceptions.NewConnectionError(None, "Verbindungsaufbau abgelehnt")  # type: ignore[arg-type]
    connect.__cause__ = ConnectionRefusedError(111, "Verbindungsaufbau abgelehnt")  # a German libc
    return _wrapped(connect)


@pytest.mark.parametrize("error,expected", [
    (lambda: _wrapped(urllib3.exceptions.NameResolutionError(
        "h.example", None, socket.gaierror(socket.EAI_NONAME, "Nom ou service inconnu"))),  # type: ignore[arg-type]
     (Outcome.CONNECTION, "DNS lookup failed: host not found")),
    (_refused, (Outcome.CONNECTION, "connection refused")),
    (lambda: _wrapped(urllib3.exceptions.ConnectTimeoutError(None, "délai dépassé"), requests.exceptions.ConnectTimeout),
     (Outcome.TIMEOUT, "connect timeout (2s)")),
    # a read timeout in the middle of the body: requests wraps urllib3's error in a ConnectionError
    (lambda: requests.exceptions.ConnectionError(urllib3.exceptions.ReadTimeoutError(
        None, "http://h.example/feed", "Zeitüberschreitung")),  # type: ignore[arg-type]
     (Outcome.TIMEOUT, "read timeout: no data for 2s")),
    (lambda: TimeoutError("whatever"), (Outcome.TIMEOUT, "read timeout: no data for 2s")),
    # says "Connection refused", is a TLS failure
    (lambda: requests.exceptions.SSLError(ssl.SSLError(1, "Connection refused by policy")),
     (Outcome.CONNECTION, "TLS error: Connection refused by policy")),
    # says "timed out" and "Name or service not known", is neither
    (lambda: OSError("timed out? Name or service not known?"),
     (Outcome.CONNECTION, "connection failed: timed out? Name or service not known?")),
])  # fmt: skip
def test_network_errors_are_classified_by_type_not_by_message(error: Callable[[], Exception],
                                                               expected: tuple[Outcome, str]) -> None:
    from aggregator.fetch import AddressPolicy, _FetchContext

    ctx = _FetchContext(deadline=time.monotonic() + 60, policy=AddressPolicy([]))
    assert fetcher()._classify(error(), ctx) == expected
