"""The only module that talks HTTP to readers (DESIGN §7): a WSGI app over
an in-memory Snapshot, served by waitress.

A GET never touches the database: it looks the path up in the current
snapshot, which the publisher replaces when the store changed. Only GET and
HEAD of known paths are served; nothing is ever read from the filesystem.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from aggregator.httpdate import format_http_date, parse_http_date
from aggregator.publish import Document, Snapshot

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], object]
Environ = dict[str, object]

_ALIASES = {
    "": "",
    "index.html": "",
    "feeds": "feeds",
    "feeds/": "feeds",
    "feeds/index.html": "feeds",
    "opml": "opml",
    "subscriptions.opml": "opml",
}
_SAFE_PATH = re.compile(r"^(?:latest|tags/[^/]+)\.(?:atom|rss|json)$")
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


def _accepts_gzip(header: str) -> bool:
    for part in header.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "x-gzip", "*"):
            q = re.search(r"q\s*=\s*([0-9.]+)", params)
            return not q or float(q.group(1)) > 0
    return False


class App:
    """The WSGI application."""

    def __init__(
        self,
        snapshots: SnapshotHolder,
        max_age: int = 300,
        extra: dict[str, Callable[[], tuple[int, str, bytes]]] | None = None,
    ):
        self.snapshots = snapshots
        self.max_age = max_age
        # Dynamic endpoints (/healthz, /metrics): path -> () -> (status, content type, body)
        self.extra = extra or {}

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        path = str(environ.get("PATH_INFO", "/"))
        if method not in ("GET", "HEAD"):
            return self._respond(
                start_response,
                "405 Method Not Allowed",
                "text/plain; charset=utf-8",
                b"Only GET and HEAD are allowed.\n",
                method,
                [("Allow", "GET, HEAD")],
            )
        key = path[1:] if path.startswith("/") else path
        if key in self.extra:
            status, content_type, body = self.extra[key]()
            reason = {200: "OK", 503: "Service Unavailable"}.get(status, "OK")
            return self._respond(
                start_response, f"{status} {reason}", content_type, body, method, [("Cache-Control", "no-store")]
            )
        key = _ALIASES.get(key, key)
        document = self.snapshots.get().get(key) if key in _ALIASES.values() or _SAFE_PATH.match(key) else None
        if document is None:
            return self._respond(start_response, "404 Not Found", "text/html; charset=utf-8", NOT_FOUND, method)
        return self._document(environ, start_response, document, method)

    def _document(
        self, environ: Environ, start_response: StartResponse, document: Document, method: str
    ) -> Iterable[bytes]:
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
        return self._respond(start_response, "200 OK", document.content_type, body, method, headers)

    @staticmethod
    def _respond(
        start_response: StartResponse,
        status: str,
        content_type: str,
        body: bytes,
        method: str,
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
        return [b""] if method == "HEAD" else [body]


def json_body(data: object) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")


class WebServer:
    """waitress in a thread, stoppable."""

    def __init__(self, app: App, host: str, port: int, threads: int = 4):
        from waitress.server import create_server

        self.server = create_server(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="aggregator",
            max_request_header_size=16 * 1024,
            max_request_body_size=1024,
            channel_timeout=30,
            connection_limit=200,
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
        )
        self.port = int(self.server.effective_port)
        self.host = host
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.server.run, name="web", daemon=True)
        self._thread.start()

    def run(self) -> None:
        self.server.run()

    def stop(self, timeout: float = 5) -> None:
        """Stop accepting, close open connections, let running requests end."""
        server = self.server
        server.close()
        for channel in list(server._map.values()):
            with contextlib.suppress(OSError):
                channel.close()
        server.task_dispatcher.shutdown(timeout=timeout)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
