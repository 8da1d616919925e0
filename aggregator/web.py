"""The only module that talks HTTP to readers (DESIGN §7): a WSGI app over
an in-memory Snapshot, served by waitress.

A GET never touches the database: it looks the path up in the current
snapshot, which the publisher replaces when the store changed. Only GET and
HEAD of known paths are served; nothing is ever read from the filesystem.
Every header a client sends is parsed totally: a value we cannot read is
treated as absent, never as an error.

The server is waitress with its connection handling made to survive hostile
clients (see ``_Server``): a deadline for each request's headers, an idle
timeout, a connection limit that makes room by closing the slowest
connections instead of ceasing to accept, and response bodies that are
never copied (so slow readers cost no memory or disk).
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import io
import json
import logging
import re
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from urllib.parse import parse_qs

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer

from aggregator.config import HttpSettings
from aggregator.errors import UserError
from aggregator.httpdate import format_http_date, parse_http_date
from aggregator.publish import Document, Snapshot

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], object]
Environ = dict[str, object]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_ALIASES = {
    "": "",
    "index.html": "",
    "feeds": "feeds",
    "feeds/": "feeds",
    "feeds/index.html": "feeds",
    "opml": "opml",
    "subscriptions.opml": "opml",
    "archive": "archive",
    "archive/": "archive",
    "archive/index.html": "archive",
}
# The documents with file names: the feeds of Latest, tags and saved searches
# with their HTML pages, and the pages per source, per story and per archive day.
_SAFE_PATH = re.compile(
    r"^(?:(?:latest|tags/[^/]+|search/[^/]+)\.(?:atom|rss|json|html)"
    r"|sources/[0-9a-f]{12}\.html|stories/[0-9a-f]{16}\.html|archive/[0-9]{4}-[0-9]{2}-[0-9]{2}(?:-[0-9]+)?\.html)$"
)
MAX_QUERY_STRING = 2000  # bytes of a search box request's query string
NOT_FOUND = (
    b'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Not found</title></head>'
    b'<body><h1>Not found</h1><p>Nothing here. The feeds are at <a href="/latest.atom">/latest.atom</a>, '
    b'<a href="/latest.rss">/latest.rss</a> and <a href="/latest.json">/latest.json</a>.</p></body></html>\n'
)


class SnapshotHolder:
    """The current snapshot, swapped atomically by whoever publishes."""

    def __init__(self, snapshot: Snapshot | None = None):
        self._snapshot = snapshot or Snapshot()
        self._lock = threading.Lock()

    def get(self) -> Snapshot:
        return self._snapshot

    def set(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _not_modified_since(header: str, last_modified: datetime) -> bool:
    since = parse_http_date(header)
    return since is not None and last_modified.replace(microsecond=0) <= since


# RFC 9110 12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def _qvalue(params: list[str]) -> float | None:
    """The q parameter of one Accept-Encoding element: 1 when absent, None
    when it is not a valid qvalue (the element is then ignored)."""
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            value = value.strip()
            return float(value) if _QVALUE.fullmatch(value) else None
    return 1.0


def _accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (RFC 9110 12.5.3): named as gzip
    or x-gzip, else matched by ``*``, with a q above 0. Elements we cannot
    read are ignored, as the RFC allows for anything not understood."""
    named: float | None = None
    wildcard: float | None = None
    for element in header.split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        if coding not in ("gzip", "x-gzip", "*"):
            continue
        q = _qvalue(params)
        if q is None:
            continue
        if coding == "*":
            wildcard = q if wildcard is None else max(wildcard, q)
        else:
            named = q if named is None else max(named, q)
    chosen = named if named is not None else wildcard
    return chosen is not None and chosen > 0


class App:
    """The WSGI application."""

    def __init__(
        self,
        snapshots: SnapshotHolder,
        max_age: int = 300,
        extra: dict[str, Callable[[], tuple[int, str, bytes]]] | None = None,
        search: Callable[[str], tuple[int, bytes]] | None = None,
    ):
        self.snapshots = snapshots
        self.max_age = max_age
        # Dynamic endpoints (/healthz, /metrics): path -> () -> (status, content type, body)
        self.extra = extra or {}
        # The search box: query text -> (status, HTML page); the only request that reads the database,
        # bounded in time and size by whoever provides it.
        self.search = search

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "/"))
        if method not in ("GET", "HEAD"):
            return _respond(
                environ,
                start_response,
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                b"Only GET and HEAD are allowed.\n",
                [("Allow", "GET, HEAD")],
            )
        key = path[1:] if path.startswith("/") else path
        if key in self.extra:
            status, content_type, body = self.extra[key]()
            reason = {200: "OK", 503: "Service Unavailable"}.get(status, "OK")
            return _respond(
                environ, start_response, f"{status} {reason}", content_type, body, [("Cache-Control", "no-store")]
            )
        if key == "search" and self.search is not None:
            return self._search(environ, start_response)
        key = _ALIASES.get(key, key)
        document = self.snapshots.get().get(key) if key in _ALIASES.values() or _SAFE_PATH.match(key) else None
        if document is None:
            return _respond(environ, start_response, "404 Not Found", "text/html; charset=utf-8", NOT_FOUND)
        return self._document(environ, start_response, document)

    def _search(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        assert self.search is not None
        raw = str(environ.get("QUERY_STRING", ""))[:MAX_QUERY_STRING]
        query = " ".join(parse_qs(raw, max_num_fields=10).get("q", [""])[:1])
        status, body = self.search(query)
        reason = {200: "OK", 400: "Bad Request", 503: "Service Unavailable"}.get(status, "OK")
        return _respond(
            environ,
            start_response,
            f"{status} {reason}",
            "text/html; charset=utf-8",
            body,
            [("Cache-Control", "no-store")] + ([("Retry-After", "5")] if status == 503 else []),
        )

    def _document(self, environ: Environ, start_response: StartResponse, document: Document) -> Iterable[bytes]:
        headers = [
            ("ETag", document.etag),
            ("Vary", "Accept-Encoding"),
            ("Cache-Control", f"public, max-age={self.max_age}"),
        ]
        if document.last_modified is not None:
            headers.append(("Last-Modified", format_http_date(document.last_modified)))
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if_modified_since = environ.get("HTTP_IF_MODIFIED_SINCE")
        not_modified = (
            _etag_matches(str(if_none_match), document.etag)
            if if_none_match is not None
            else bool(
                if_modified_since
                and document.last_modified
                and _not_modified_since(str(if_modified_since), document.last_modified)
            )
        )
        if not_modified:
            start_response("304 Not Modified", headers)
            return [b""]
        body = document.body
        if _accepts_gzip(str(environ.get("HTTP_ACCEPT_ENCODING", ""))):
            body = document.gzipped()
            headers.append(("Content-Encoding", "gzip"))
        return _respond(environ, start_response, "200 OK", document.content_type, body, headers)


def _respond(
    environ: Environ,
    start_response: StartResponse,
    status: str,
    content_type: str,
    body: bytes,
    headers: list[tuple[str, str]] | None = None,
) -> Iterable[bytes]:
    all_headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("X-Content-Type-Options", "nosniff"),
    ]
    if content_type.startswith("text/html"):
        # Our pages need no script at all; say so, so nothing injected could run.
        all_headers.append(
            ("Content-Security-Policy", "default-src 'none'; img-src https: http:; style-src 'unsafe-inline'")
        )
    all_headers.extend(headers or [])
    start_response(status, all_headers)
    if environ.get("REQUEST_METHOD") == "HEAD" or not body:
        return [b""]
    file_wrapper = environ.get("wsgi.file_wrapper")
    if callable(file_wrapper):
        # Handed to the server as a file, the body is sent from the document's
        # own bytes as the client reads them (a BytesIO over bytes shares
        # them): no copy per request, nothing spilled to disk however slowly
        # the client reads, and the worker thread is free at once.
        wrapped: Iterable[bytes] = file_wrapper(io.BytesIO(body))
        return wrapped
    return [body]


def json_body(data: object) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")


# --- the server ------------------------------------------------------------------------------

# File descriptors left for the rest of the process (fetch sockets, SQLite
# files, parser pipes, logs) when the connection limit is fitted under
# RLIMIT_NOFILE.
FD_RESERVE = 256
# The smallest connection limit we fall back to when the descriptor limit is tiny.
MIN_CONNECTIONS = 16
# How often (seconds) connections are checked against the deadlines.
SWEEP_EVERY = 1
# Connections accepted per loop turn (waitress accepts one), at most an eighth
# of the limit: a burst larger than the limit would make room by closing
# connections that had no turn yet to be read.
ACCEPT_BATCH = 64
# What a request gets when its headers are not complete in time (sent if the
# client still reads, then the connection is closed).
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 37\r\n"
    b"Connection: close\r\n\r\nThe request took too long to arrive.\n"
)
# What a new connection gets when every open one is busy with a request.
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\n"
    b"Retry-After: 5\r\nConnection: close\r\n\r\nToo many connections; try again soon.\n"
)


class WebServerError(UserError):
    """The web server cannot start; the message names the address, the
    setting and what to do."""

    exit_code = 1


class _Throttled:
    """Log a recurring event at most once per interval, counting the rest."""

    def __init__(self, every: float = 60.0):
        self.every = every
        self.next_at = 0.0
        self.count = 0

    def __call__(self, now: float) -> int:
        """How many events the next log line covers, or 0 to stay quiet."""
        self.count += 1
        if now < self.next_at:
            return 0
        count, self.count, self.next_at = self.count, 0, now + self.every
        return count


class _ThrottledLog(logging.Filter):
    """Lets one record through per interval and counts the ones it held
    back: waitress logs "Task queue depth is N" for every request that has
    to wait for a thread, which a client could use to flood the log."""

    def __init__(self, every: float = 60.0):
        super().__init__()
        self._due = _Throttled(every)

    def filter(self, record: logging.LogRecord) -> bool:
        count = self._due(time.monotonic())
        if count > 1:
            record.msg = f"{record.getMessage()} ({count - 1} similar message(s) held back in the last minute)"
            record.args = None
        return count > 0


_QUEUE_LOG_THROTTLE = _ThrottledLog()


class _Channel(HTTPChannel):  # type: ignore[misc]  # waitress ships no type information
    """A waitress connection that knows when its current request began."""

    # time.time() of the first byte of the request being received, None
    # between requests (waitress' own clocks are time.time() too).
    request_started: float | None = None
    # The server's loop turn in which it was accepted: not closed to make
    # room in that turn, before it could even be read.
    accepted_turn = -1

    def received(self, data: bytes) -> bool:
        before = self.request
        result = bool(super().received(data))
        if self.request is not before:
            self.request_started = time.time() if self.request is not None else None
        return result

    def time_out_request(self) -> None:
        """Answer 408 and close once it is sent (or once idle_timeout passes
        if the client does not read it either). Called by the event loop's
        thread while no request is being served, as waitress' own
        send_continue does."""
        with self.outbuf_lock:
            self.outbufs[-1].append(REQUEST_TIMEOUT)
            self.current_outbuf_count += len(REQUEST_TIMEOUT)
            self.total_outbufs_len += len(REQUEST_TIMEOUT)
        self.request_started = None
        self.close_when_flushed = True

    @property
    def waiting_for_client(self) -> bool:
        """Reading a request: nothing queued or being served, nothing to send."""
        return not (self.requests or self.total_outbufs_len or self.will_close or self.close_when_flushed)


class _Server(TcpWSGIServer):  # type: ignore[misc]  # waitress ships no type information
    """waitress' TCP server with deadlines and a connection limit that never
    stops accepting.

    waitress closes only connections idle for ``channel_timeout``, and a
    client that sends one header byte every few seconds is never idle; at
    ``connection_limit`` it stops accepting, so new clients wait in the
    kernel's backlog. Here, on each sweep (every second) of the event loop:
    a request whose line and headers have not all arrived ``request_timeout``
    after its first byte gets a 408 and is closed, and a connection that
    moved no byte for ``idle_timeout`` is closed (a silent client, an idle
    keep-alive or a reader that stopped reading). At ``max_connections`` a
    new connection is still accepted and others are closed to make room: the
    oldest unfinished request first, then the longest idle, then the reader
    longest stalled; only when every connection is being served does the new
    one get a 503 at once.

    A connection is closed either in its own turn of the loop (``will_close``,
    as waitress does) or in the sweep, which runs from ``readable()`` before
    the loop polls: never while the loop dispatches events, where a closed
    descriptor could be reused by an accept and then get another's event.
    """

    channel_class = _Channel
    next_channel_cleanup = 0.0
    turn = 0
    stopping = False

    def __init__(
        self,
        application: WsgiApp,
        adj: Adjustments,
        max_connections: int,
        request_timeout: float,
        idle_timeout: float,
    ):
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.accept_paused_until = 0.0
        # Connections that may still be taken beyond the limit in this loop
        # turn, because as many are closing (see _make_room).
        self._room = 0
        self._room_turn = -1
        self._log_full = _Throttled()
        self._log_refused = _Throttled()
        self._log_descriptors = _Throttled()
        socket_map: dict[int, object] = {}
        try:
            super().__init__(application, map=socket_map, adj=adj, sockinfo=adj.listen[0])
        except BaseException:
            # The wake-up pipe and the socket are registered before bind() fails.
            for dispatcher in list(socket_map.values()):
                with contextlib.suppress(Exception):
                    dispatcher.close()  # type: ignore[attr-defined]
            raise

    def stop_soon(self) -> None:
        """From any thread: on its next turn the loop closes every connection
        and the listening socket itself, and returns. (Closing them from
        another thread races with the loop: an accept() on a closed socket.)"""
        self.stopping = True
        # The wake-up pipe is gone if the loop already closed the server; an
        # EPIPE here would end the process with status 1 (click's handling).
        with contextlib.suppress(OSError):
            self.pull_trigger()

    def _close_everything(self) -> None:
        for channel in list(self.active_channels.values()):
            channel.handle_close()  # wakes a worker thread waiting to write, too
        self.close()

    # waitress calls readable() on the server once per loop turn, before polling.
    def readable(self) -> bool:
        if self.stopping:
            self._close_everything()
            return False
        self.turn += 1
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            try:
                self.maintenance(now)
            except Exception:  # a bug of ours: raised here it would end the loop, and serving, for good
                log.exception("web: the connection sweep failed; serving goes on")
        return bool(self.accepting) and now >= self.accept_paused_until

    def handle_error(self) -> None:
        """An unexpected exception while accepting. waitress' default closes
        the listening socket, so the server would stop accepting for good
        while the process lives on: log it and keep listening."""
        log.exception("web: unexpected error while accepting a connection; still listening")

    def maintenance(self, now: float) -> None:
        request_cutoff = now - self.request_timeout
        idle_cutoff = now - self.idle_timeout
        for channel in list(self.active_channels.values()):
            if channel.will_close:
                # Marked to close (to make room) but stuck with output its
                # client does not take: it would wait for a POLLOUT that never
                # comes, so close it here.
                if channel.total_outbufs_len:
                    channel.handle_close()
                continue
            if channel.request_started is not None and not channel.waiting_for_client:
                # The clock runs only while we wait for the client: a request
                # pipelined behind a response being sent is not late.
                channel.request_started = now
            if channel.request_started is not None and channel.request_started < request_cutoff:
                channel.time_out_request()
            elif channel.last_activity < idle_cutoff and (not channel.requests or channel.total_outbufs_len):
                # No byte either way for idle_timeout: a silent client, an idle
                # keep-alive, or a reader that stopped reading (also one whose
                # worker thread waits for it to drain). A connection with
                # output pending is closed here and now, as above; waitress'
                # own will_close would wait for the socket to become writable.
                if channel.total_outbufs_len:
                    channel.handle_close()
                else:
                    channel.will_close = True

    def handle_accept(self) -> None:
        for _ in range(min(ACCEPT_BATCH, max(1, self.max_connections // 8))):
            try:
                conn, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_descriptors(exc)
                return
            if len(self.active_channels) >= self.max_connections and not self._make_room():
                self._refuse(conn)
                continue
            try:
                self.set_socket_options(conn)
                channel = self.channel_class(self, conn, addr, self.adj, map=self._map)
            except OSError:  # the client already went away
                conn.close()
                continue
            channel.accepted_turn = self.turn

    def _victims(self, count: int) -> list[_Channel]:
        """The ``count`` connections whose loss costs least: unfinished
        requests (oldest first), then idle ones, then slow readers (least
        recently active first). Connections with a request being served or
        queued are never chosen."""

        def rank(channel: _Channel) -> tuple[int, float]:
            if channel.request_started is not None and channel.waiting_for_client:
                return 0, channel.request_started
            if not channel.total_outbufs_len:
                return 1, channel.last_activity
            return 2, channel.last_activity

        candidates = [
            c
            for c in self.active_channels.values()
            if not c.requests and not c.will_close and c.accepted_turn != self.turn
        ]
        return heapq.nsmallest(count, candidates, key=rank)

    def _make_room(self) -> bool:
        """At the limit: whether a new connection may be taken. Connections
        already closing count as room; when there is none, a batch (a
        twentieth of the limit) is marked to close, so a flood of new
        connections costs one scan per loop turn, not one per connection.
        False when nothing can be closed: every connection is busy."""
        if self._room_turn != self.turn:
            self._room_turn = self.turn
            closing = sum(1 for c in self.active_channels.values() if c.will_close)
            self._room = self.max_connections - (len(self.active_channels) - closing)
        if self._room <= 0:
            victims = self._victims(max(1, self.max_connections // 20))
            for channel in victims:
                channel.will_close = True
            self._room += len(victims)
            if victims and (count := self._log_full(time.time())):
                log.warning(
                    "web: %d open connections, at http.max_connections (%d): closing the slowest and idlest "
                    "(%d time(s) since the last such message)",
                    len(self.active_channels),
                    self.max_connections,
                    count,
                )
        if self._room <= 0:
            return False
        self._room -= 1
        return True

    def _refuse(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.setblocking(False)
            conn.send(REFUSAL)
        conn.close()
        if count := self._log_refused(time.time()):
            log.warning(
                "web: all %d connections busy with requests: new connections get 503 (%d refused)",
                self.max_connections,
                count,
            )

    def _out_of_descriptors(self, exc: OSError) -> None:
        """accept() failed for want of descriptors: the listening socket stays
        readable, so pause accepting (no busy loop) while connections close."""
        victims = self._victims(max(1, self.max_connections // 20))
        for channel in victims:
            channel.will_close = True
        # With connections closing, retry on the next loop turn; else wait a little.
        self.accept_paused_until = time.time() + (0.05 if victims else 1.0)
        if count := self._log_descriptors(time.time()):
            log.warning(
                "web: cannot accept connections: %s (%d open; %d time(s) since the last such message); "
                "closing %d idle ones. Raise the open-file limit (LimitNOFILE in the systemd unit) "
                "or lower http.max_connections",
                exc.strerror or exc,
                len(self.active_channels),
                count,
                len(victims),
            )


def fit_connection_limit(wanted: int) -> int:
    """The connection limit that fits the open-file limit: raise the soft
    limit towards the hard one if needed, else lower the connection limit
    (with a warning), keeping FD_RESERVE descriptors for everything else."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        if target > soft:
            with contextlib.suppress(ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    fitted = max(MIN_CONNECTIONS, soft - FD_RESERVE) if soft - FD_RESERVE >= MIN_CONNECTIONS else max(1, soft // 2)
    log.warning(
        "web: http.max_connections lowered from %d to %d: the open-file limit is %d (hard %s) and %d are kept "
        "for the rest of the service. Raise LimitNOFILE (systemd) or `ulimit -n` to allow more",
        wanted,
        fitted,
        soft,
        "unlimited" if hard == resource.RLIM_INFINITY else hard,
        FD_RESERVE,
    )
    return fitted


def _listen_error(host: str, port: int, exc: BaseException) -> WebServerError:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    code = getattr(exc, "errno", None)
    if isinstance(exc, (ValueError, socket.gaierror)):
        return WebServerError(
            f"cannot listen on {address}: {host!r} is not an address or host name of this machine; "
            "set http.host in config.yaml to one (127.0.0.1 for this machine only, 0.0.0.0 for all IPv4 interfaces)"
        )
    if code == errno.EADDRINUSE:
        return WebServerError(
            f"cannot listen on {address}: the address is already in use (another program, perhaps another "
            "aggregator, is listening there); stop it, or set another http.port (or http.host) in config.yaml"
        )
    if code == errno.EACCES:
        return WebServerError(
            f"cannot listen on {address}: permission denied (ports below 1024 need privileges); "
            "set http.port in config.yaml to 1024 or above, or put a reverse proxy in front"
        )
    if code == errno.EADDRNOTAVAIL:
        return WebServerError(
            f"cannot listen on {address}: {host} is not an address of this machine; "
            "set http.host in config.yaml to one of its addresses (127.0.0.1, or 0.0.0.0 for all)"
        )
    reason = getattr(exc, "strerror", None) or str(exc)
    return WebServerError(f"cannot listen on {address}: {reason}; check http.host and http.port in config.yaml")


class WebServer:
    """waitress in a thread, stoppable, hardened against hostile clients."""

    def __init__(self, app: WsgiApp, http: HttpSettings):
        self.host = http.host
        logging.getLogger("waitress.queue").addFilter(_QUEUE_LOG_THROTTLE)  # idempotent
        self.max_connections = fit_connection_limit(http.max_connections)
        try:
            adj = Adjustments(
                host=http.host,
                port=http.port,
                threads=http.threads,
                ident="aggregator",
                max_request_header_size=16 * 1024,
                max_request_body_size=1024,
                # Our own sweep (_Server.maintenance) enforces the deadlines;
                # these keep waitress' settings consistent with them.
                channel_timeout=max(1, int(http.idle_timeout)),
                cleanup_interval=SWEEP_EVERY,
                connection_limit=self.max_connections,
                # poll(), not select(): select() cannot watch descriptors above 1023.
                asyncore_use_poll=True,
                expose_tracebacks=False,
                # A client resetting its connection is not our error: no traceback in the log.
                log_socket_errors=False,
                clear_untrusted_proxy_headers=True,
            )
            self.server = _Server(app, adj, self.max_connections, http.request_timeout, http.idle_timeout)
        except (OSError, ValueError) as exc:
            raise _listen_error(http.host, http.port, exc) from None
        self.port = int(self.server.effective_port)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self._thread.start()

    def run(self) -> None:
        self.server.run()

    def stop(self, timeout: float = 5) -> None:
        """Stop accepting, close open connections, let running requests end."""
        server = self.server
        if self._thread is not None and self._thread.is_alive():
            server.stop_soon()
            self._thread.join(timeout=timeout)
        if self._thread is None or self._thread.is_alive():  # no loop running (or stuck): close from here
            for dispatcher in list(server._map.values()):
                with contextlib.suppress(Exception):
                    dispatcher.close()
        server.task_dispatcher.shutdown(timeout=timeout)
