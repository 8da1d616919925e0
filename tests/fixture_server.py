"""A real HTTP server on 127.0.0.1 for the tests: serves feed documents,
answers conditional requests, misbehaves on demand, and logs every request
so tests can assert what the aggregator asked for and when."""

from __future__ import annotations

import email.utils
import gzip as gzip_module
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str | None = "application/rss+xml; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    etag: str | None = None  # answer If-None-Match with 304 when it matches
    last_modified: str | None = None  # answer If-Modified-Since with 304 when it matches
    gzip: bool = False
    handler: Callable[["Handler"], None] | None = None  # full control over the response


@dataclass(frozen=True)
class Logged:
    method: str
    path: str
    headers: dict[str, str]
    at: float  # time.monotonic()
    status: int

    @property
    def conditional(self) -> bool:
        return "if-none-match" in self.headers or "if-modified-since" in self.headers


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def _serve(self) -> None:
        owner = self.server.owner
        route = owner.routes.get(self.path.split("?")[0]) or owner.routes.get(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        if route is None:
            self._log(headers, 404)
            self.send_plain(404, b"not found")
            return
        if route.handler is not None:
            self._log(headers, route.status)
            route.handler(self)
            return
        if route.status == 200 and (
            (route.etag and headers.get("if-none-match") == route.etag)
            or (route.last_modified and headers.get("if-modified-since") == route.last_modified and not (
                route.etag and "if-none-match" in headers))
        ):
            self._log(headers, 304)
            self.send_response(304)
            if route.etag:
                self.send_header("ETag", route.etag)
            if route.last_modified:
                self.send_header("Last-Modified", route.last_modified)
            for k, v in route.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._log(headers, route.status)
        body = route.body
        self.send_response(route.status)
        if route.content_type:
            self.send_header("Content-Type", route.content_type)
        if route.etag:
            self.send_header("ETag", route.etag)
        if route.last_modified:
            self.send_header("Last-Modified", route.last_modified)
        if route.gzip and "gzip" in headers.get("accept-encoding", ""):
            body = gzip_module.compress(body)
            self.send_header("Content-Encoding", "gzip")
        for k, v in route.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _log(self, headers: dict[str, str], status: int) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.log.append(Logged(self.command, self.path, headers, time.monotonic(), status))

    def send_plain(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "FeedServer"


class FeedServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.routes: dict[str, Route] = {}
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        self._server = _Server((host, port), Handler)
        self._server.owner = self
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, body: bytes | str = b"", **kwargs: object) -> str:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.routes[path] = Route(body=body, **kwargs)  # type: ignore[arg-type]
        return self.url(path)

    def update(self, path: str, **kwargs: object) -> None:
        route = self.routes[path]
        for key, value in kwargs.items():
            if key == "body" and isinstance(value, str):
                value = value.encode("utf-8")
            setattr(route, key, value)

    def requests_for(self, path: str) -> list[Logged]:
        with self.lock:
            return [r for r in self.log if r.path.split("?")[0] == path]

    def clear_log(self) -> None:
        with self.lock:
            self.log.clear()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def http_date(ts: float | None = None) -> str:
    return email.utils.formatdate(ts if ts is not None else time.time(), usegmt=True)
