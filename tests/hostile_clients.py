"""Hostile and normal HTTP clients for the web-layer tests (tests/test_hostile_web.py)
and the attack script (bench/attack.py).

``Trickle`` holds many connections open that each send one more header line
every few seconds and never finish their request (slowloris), or stay silent;
``SlowReaders`` ask for a document and read nothing; ``timed_get`` is the
normal client whose latency matters. Every client here stops on its own when
told to, so no thread outlives its test.
"""

from __future__ import annotations

import contextlib
import http.client
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class _Conn:
    opened_at: float
    next_send: float
    lines: int = 0
    answer: bytes = b""


@dataclass
class TrickleStats:
    opened: int = 0
    connect_failures: int = 0
    closed_by_server: int = 0
    # Seconds from opening to the server closing it, for each connection it closed.
    lifetimes: list[float] = field(default_factory=list)
    # First line of whatever the server sent before closing (b"HTTP/1.1 408 ...").
    answers: list[bytes] = field(default_factory=list)


class Trickle:
    """``count`` connections to 127.0.0.1:``port``. Each sends a request line,
    then one header line every ``every`` seconds, forever (or nothing at all
    when ``silent``). A connection the server closes is reopened when
    ``reconnect``, so the pressure stays on. Runs in its own thread."""

    def __init__(self, port: int, count: int, every: float = 1.0, reconnect: bool = True, silent: bool = False,
                 path: str = "/latest.atom"):
        self.port = port
        self.count = count
        self.every = every
        self.reconnect = reconnect
        self.silent = silent
        self.first_line = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        self.stats = TrickleStats()
        self._open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trickle", daemon=True)

    def __enter__(self) -> Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def open_now(self) -> int:
        with self._lock:
            return self._open

    def wait_open(self, count: int | None = None, timeout: float = 30.0) -> bool:
        """Wait until ``count`` (default: all) connections have been opened once."""
        target = self.count if count is None else count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats.opened >= target:
                return True
            time.sleep(0.05)
        return False

    def wait_closed(self, count: int, timeout: float) -> bool:
        """Wait until the server has closed ``count`` connections."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats.closed_by_server >= count:
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _connect(self, selector: selectors.BaseSelector, conns: dict[socket.socket, _Conn]) -> bool:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            self.stats.connect_failures += 1
            return False
        sock.setblocking(False)
        now = time.monotonic()
        conn = _Conn(opened_at=now, next_send=now + self.every)
        if not self.silent:
            with contextlib.suppress(OSError):
                sock.send(self.first_line)
        conns[sock] = conn
        selector.register(sock, selectors.EVENT_READ)
        self.stats.opened += 1
        return True

    def _closed(self, selector: selectors.BaseSelector, conns: dict[socket.socket, _Conn], sock: socket.socket) -> None:
        conn = conns.pop(sock)
        selector.unregister(sock)
        sock.close()
        self.stats.closed_by_server += 1
        self.stats.lifetimes.append(time.monotonic() - conn.opened_at)
        if conn.answer:
            self.stats.answers.append(conn.answer.split(b"\r\n", 1)[0])

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        conns: dict[socket.socket, _Conn] = {}
        try:
            while not self._stop.is_set():
                while len(conns) < self.count and (self.reconnect or self.stats.opened < self.count):
                    if self._stop.is_set() or not self._connect(selector, conns):
                        break
                    with self._lock:
                        self._open = len(conns)
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if data:
                        conns[sock].answer += data
                    else:
                        self._closed(selector, conns, sock)
                now = time.monotonic()
                for sock, conn in list(conns.items()):
                    if self.silent or now < conn.next_send:
                        continue
                    conn.next_send = now + self.every
                    conn.lines += 1
                    try:
                        sock.send(b"X-Trickle-%d: a\r\n" % conn.lines)
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._closed(selector, conns, sock)
                with self._lock:
                    self._open = len(conns)
        finally:
            for sock in conns:
                sock.close()
            selector.close()


class SlowReaders:
    """``count`` connections that each ask for ``path`` and then read
    nothing (a tiny receive buffer), until stopped."""

    def __init__(self, port: int, count: int, path: str = "/latest.atom"):
        self.socks: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            self.socks.append(sock)

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks = []


def timed_get(port: int, path: str, timeout: float = 5.0,
              headers: dict[str, str] | None = None) -> tuple[float, int | None, bytes]:
    """A normal client's GET on a new connection: (seconds, status or None on failure, body)."""
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path, headers=headers or {})
            response = conn.getresponse()
            body = response.read()
            return time.perf_counter() - started, response.status, body
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return time.perf_counter() - started, None, b""


def raw_exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, half-close, and return everything the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer and close before reading it all
            pass
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        return b"".join(chunks)


# Requests that once broke a server, or might: each must get a 1xx-4xx status and leave no traceback.
NASTY_REQUESTS = {
    "bad qvalue": b"GET /latest.atom HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip;q=1.2.3\r\n\r\n",
    "year 10^20": b"GET /latest.atom HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Mon, 01 Jan 99999999999999999999 "
                  b"00:00:00 GMT\r\n\r\n",
    "offset 10^14": b"GET /latest.atom HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Mon, 01 Jan 2001 00:00:00 "
                    b"+99999999999999\r\n\r\n",
    "two If-Modified-Since": b"GET /latest.atom HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Mon, 01 Jan 2001 00:00:00 "
                             b"GMT\r\nIf-Modified-Since: x\r\n\r\n",
    "binary If-None-Match": b"GET /latest.atom HTTP/1.1\r\nHost: x\r\nIf-None-Match: \xff\xfe\"\x00\r\n\r\n",
    "absolute-form": b"GET http://elsewhere.example/latest.atom HTTP/1.1\r\nHost: x\r\n\r\n",
    "absolute-form, no path": b"GET http://elsewhere.example HTTP/1.1\r\nHost: x\r\n\r\n",
    "asterisk": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded NUL": b"GET /latest.atom%00.html HTTP/1.1\r\nHost: x\r\n\r\n",
    "raw NUL": b"GET /lat\x00est.atom HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded slashes": b"GET /tags%2f..%2f..%2fconfig.yaml HTTP/1.1\r\nHost: x\r\n\r\n",
    "dot segments": b"GET /tags/../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "very long path": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "HTTP/0.9": b"GET /\r\n\r\n",
    "lower-case method": b"get /latest.atom HTTP/1.1\r\nHost: x\r\n\r\n",
    "TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    "header without colon": b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
    "two Content-Lengths": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "bad chunk": b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "huge Content-Length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "huge Range": b"GET /latest.atom HTTP/1.1\r\nHost: x\r\nRange: bytes=99999999999999999999-\r\n\r\n",
    "HEAD with Range": b"HEAD /latest.atom HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n",
    "UTF-8 path": "GET /tags/\u00e9t\u00e9.atom HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "bad escapes": b"GET /%zz%%%2 HTTP/1.1\r\nHost: x\r\n\r\n",
    "1500 headers": b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(1500)) + b"\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
    "proxy headers": b"GET /latest.atom HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: \x01\r\nForwarded: for=\"\r\n\r\n",
    "expect 100": b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
}
