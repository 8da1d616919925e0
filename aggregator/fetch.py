"""The only module that talks HTTP to publishers (DESIGN §5).

requests does the HTTP; we add what it lacks for a poller that reads
servers it does not control:

* a total deadline per fetch (requests only has per-socket timeouts, so a
  server trickling one byte a second would never time out): a watchdog
  thread shuts the socket down when the deadline passes;
* a body limit enforced while streaming, on the decompressed size (urllib3
  inflates at most what we ask for, so a gzip bomb is never inflated whole);
* redirects followed by hand: a limit, loop detection, the permanent
  (301/308) target remembered for the scheduler's adoption rule, and no
  redirect from a public address to a private one, checked on the address
  the socket actually connected to (so DNS tricks cannot get around it);
* at most ``per_host`` requests at once to one host.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.cookiejar import DefaultCookiePolicy
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from aggregator.hostslots import HostSlots, LocalHostSlots
from aggregator.httpdate import parse_http_date
from aggregator.model import NO_FETCH_OPTIONS, FetchOptions, FetchResult, Outcome

if TYPE_CHECKING:
    from aggregator.config import PollingSettings

log = logging.getLogger(__name__)

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/rdf+xml;q=0.9, "
    "application/json;q=0.8, application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)
ACCEPT_HTML = "text/html, application/xhtml+xml;q=0.9, application/atom+xml;q=0.8, application/rss+xml;q=0.8, */*;q=0.5"
ACCEPT_PAGE = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"  # an article's own page (full text)
REDIRECT_CODES = (301, 302, 303, 307, 308)
PERMANENT_CODES = (301, 308)
CHUNK = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    connect_timeout: float = 10
    read_timeout: float = 30
    deadline: float = 60
    max_bytes: int = 10 * 1000**2
    max_redirects: int = 5
    per_host: int = 2
    user_agent: str = "aggregator"
    private_networks: tuple[str, ...] = ()
    pool_size: int = 8

    @classmethod
    def from_settings(cls, p: PollingSettings) -> FetchLimits:
        return cls(
            connect_timeout=p.connect_timeout,
            read_timeout=p.timeout,
            deadline=p.deadline,
            max_bytes=p.max_bytes,
            max_redirects=p.max_redirects,
            per_host=p.per_host,
            user_agent=p.user_agent,
            private_networks=tuple(p.private_networks),
            pool_size=p.workers,
        )


class FetchFailed(Exception):
    def __init__(self, outcome: Outcome, message: str, status: int | None = None):
        super().__init__(message)
        self.outcome = outcome
        self.status = status


# --- addresses -------------------------------------------------------------------


class AddressPolicy:
    """Which peer addresses count as private (loopback, LAN, link-local...)."""

    def __init__(self, networks: Iterable[str]):
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def is_private(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return True  # unknown: be careful
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks if net.version == ip.version)

    def host_is_private(self, host: str) -> bool:
        """Resolve a host name (for autodiscovery checks before fetching)."""
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            return False  # unresolvable: the fetch itself will fail
        return any(self.is_private(str(info[4][0])) for info in infos)


# --- per-fetch context, shared with the connection classes through a thread-local ---


@dataclass
class _FetchContext:
    deadline: float
    policy: AddressPolicy
    origin_private: bool | None = None  # set by the first connection of this fetch
    hop: int = 0
    refusal: str = "refused redirect from a public address to a private one ({peer})"
    expired: bool = False
    sockets: list[socket.socket] = field(default_factory=list)


_context = threading.local()


def _current() -> _FetchContext | None:
    return getattr(_context, "value", None)


class _Watchdog:
    """Shuts down the sockets of fetches that passed their deadline."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _FetchContext]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._counter = 0
        self._thread: threading.Thread | None = None

    def watch(self, ctx: _FetchContext) -> None:
        with self._lock:
            self._counter += 1
            heapq.heappush(self._heap, (ctx.deadline, self._counter, ctx))
            earliest = self._heap[0][2] is ctx
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog", daemon=True)
                self._thread.start()
        if earliest:  # only then is the sleeping watchdog's wake-up time wrong
            self._wake.set()

    def abort_all(self) -> None:
        """Cut every fetch in flight short (service shutdown)."""
        with self._lock:
            for _, _, ctx in self._heap:
                ctx.expired = True
                for sock in list(ctx.sockets):
                    _shutdown(sock)

    def _run(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, _, ctx = heapq.heappop(self._heap)
                    if ctx.sockets is not None:
                        ctx.expired = True
                        for sock in list(ctx.sockets):
                            _shutdown(sock)
                wait = (self._heap[0][0] - now) if self._heap else 5.0
            self._wake.wait(timeout=max(0.05, min(wait, 1.0)))
            self._wake.clear()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


_watchdog = _Watchdog()


def _guard(sock: socket.socket | None) -> None:
    """Called with every socket a fetch is about to send a request on."""
    ctx = _current()
    if ctx is None or sock is None:
        return
    if ctx.expired:
        raise FetchFailed(Outcome.TIMEOUT, "total deadline exceeded")
    if sock not in ctx.sockets:
        ctx.sockets.append(sock)
    try:
        peer = sock.getpeername()[0]
    except OSError:
        return
    private = ctx.policy.is_private(peer)
    if ctx.hop == 0 and ctx.origin_private is None:
        ctx.origin_private = private
    elif private and ctx.origin_private is False:
        raise FetchFailed(
            Outcome.REDIRECT,
            ctx.refusal.format(peer=peer),
        )


class _GuardedHTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _guard(self.sock)

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.sock is not None:  # a reused keep-alive connection
            _guard(self.sock)
        return super().request(*args, **kwargs)


class _GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _guard(self.sock)

    def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.sock is not None:
            _guard(self.sock)
        return super().request(*args, **kwargs)


class _GuardedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}


# --- header values ----------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: '120' or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = parse_http_date(value)
    if when is None:
        return None
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def parse_max_age(headers: dict[str, str], now: datetime | None = None) -> float | None:
    """How long the response says it stays fresh: Cache-Control max-age (or
    s-maxage), else Expires relative to Date. no-cache / no-store mean 0."""
    cache_control = headers.get("cache-control", "").lower()
    if cache_control:
        if "no-store" in cache_control or "no-cache" in cache_control:
            return 0.0
        match = re.search(r"(?:^|[,\s])(?:s-)?max-age\s*=\s*\"?(\d+)", cache_control)
        if match:
            return float(match.group(1))
    expires = headers.get("expires")
    if expires:
        when = parse_http_date(expires)
        if when is None:
            return 0.0  # an invalid Expires means "already expired" (RFC 9111 5.3)
        base = parse_http_date(headers.get("date")) or now or datetime.now(UTC)
        return max(0.0, (when - base).total_seconds())
    return None


_KEPT_HEADERS = (
    "content-type",
    "content-location",
    "content-language",
    "etag",
    "last-modified",
    "cache-control",
    "expires",
    "date",
    "retry-after",
    "location",
)


# --- the fetcher -------------------------------------------------------------------


class Fetcher:
    """One requests session (keep-alive per host) shared by the fetch workers."""

    def __init__(self, limits: FetchLimits, slots: HostSlots | None = None):
        self.limits = limits
        self.policy = AddressPolicy(limits.private_networks)
        self.session = requests.Session()
        # The environment (proxy variables) is read once per host, not on every
        # request as requests does by default; and no ~/.netrc credentials are
        # ever sent to a feed's server.
        self.session.trust_env = False
        self._proxies: dict[str, dict[str, str]] = {}
        self.session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # no cookies, ever
        self.session.max_redirects = limits.max_redirects
        adapter = _GuardedAdapter(
            pool_connections=64, pool_maxsize=max(limits.per_host, limits.pool_size), max_retries=0
        )
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.clear()
        self.session.headers.update({"User-Agent": limits.user_agent, "Accept-Encoding": "gzip, deflate"})
        self.slots: HostSlots = slots or LocalHostSlots()
        self._aborted = threading.Event()

    def close(self) -> None:
        self.session.close()

    def abort_all(self) -> None:
        """Shutdown: fetches in flight end now, and none waits for a host any more."""
        self._aborted.set()
        _watchdog.abort_all()

    def _proxies_for(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        proxies = self._proxies.get(key)
        if proxies is None:
            proxies = self._proxies[key] = requests.utils.get_environ_proxies(url)
        return proxies

    def fetch(
        self,
        url: str,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = ACCEPT,
        origin_private: bool | None = None,
        options: FetchOptions = NO_FETCH_OPTIONS,
        max_bytes: int | None = None,
    ) -> FetchResult:
        """GET a feed. Never raises for anything the server or network does:
        the outcome says what happened. ``origin_private=False`` makes the
        first hop subject to the public-to-private rule too (autodiscovered
        links found on a public page). ``options``: credentials and headers
        for the feed's own origin (never sent to another one after a redirect).
        ``max_bytes``: a body limit of its own for this fetch, never above the
        fetcher's (article pages for full text are held to less than feeds).

        The wait for a free slot of the host (``per_host``, shared by every
        poller of the database) comes first and does not count against the
        fetch's deadline."""
        started = time.monotonic()
        result = FetchResult(url=url, outcome=Outcome.OK)
        try:
            host = (urlsplit(url).hostname or "").lower()
        except ValueError as exc:
            result.outcome, result.error = Outcome.CONNECTION, f"invalid URL: {_root_cause(exc)}"
            return result
        with self.slots.hold(host, self.limits.per_host, self._aborted) as held:
            if not held:
                result.outcome, result.error = Outcome.CONNECTION, "abandoned at shutdown"
                return result
            limit = self.limits.max_bytes if max_bytes is None else min(max_bytes, self.limits.max_bytes)
            self._fetch_now(url, etag, last_modified, accept, origin_private, options, host, result, limit)
        result.elapsed = time.monotonic() - started
        if result.outcome is not Outcome.OK:
            result.body = None
        return result

    def _fetch_now(
        self,
        url: str,
        etag: str | None,
        last_modified: str | None,
        accept: str,
        origin_private: bool | None,
        options: FetchOptions,
        host: str,
        result: FetchResult,
        max_bytes: int,
    ) -> None:
        ctx = _FetchContext(
            deadline=time.monotonic() + self.limits.deadline, policy=self.policy, origin_private=origin_private
        )
        if origin_private is not None:
            ctx.hop = 1  # treat the first request as a hop away from that origin
            ctx.refusal = "refused a link on a public page that points to a private address ({peer})"
        _context.value = ctx
        _watchdog.watch(ctx)
        try:
            self._fetch(url, etag, last_modified, accept, ctx, result, options, host, max_bytes)
        except FetchFailed as exc:
            result.outcome, result.error = exc.outcome, str(exc)
            result.status = exc.status or result.status
        except requests.exceptions.RequestException as exc:
            result.outcome, result.error = self._classify(exc, ctx)
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            result.outcome, result.error = self._classify(exc, ctx)
        except ValueError as exc:  # an unparseable URL, from the feed list or a Location header
            result.outcome, result.error = Outcome.CONNECTION, f"invalid URL: {_root_cause(exc)}"
        except Exception as exc:  # never let one server's answer break the poller
            log.debug("%s: unexpected fetch failure", url, exc_info=True)
            result.outcome, result.error = Outcome.CONNECTION, f"fetch failed: {type(exc).__name__}: {_root_cause(exc)}"
        finally:
            ctx.sockets = []  # the watchdog leaves finished fetches alone
            _context.value = None

    def _classify(self, exc: BaseException, ctx: _FetchContext) -> tuple[Outcome, str]:
        """What went wrong, from the types of the exception and of what caused
        it (requests wraps urllib3, which wraps the socket's OSError); the
        message text is only shown, never matched."""
        if ctx.expired:
            return Outcome.TIMEOUT, f"total deadline of {self.limits.deadline:g}s exceeded"
        chain = _causes(exc)

        def caused_by(*kinds: type[BaseException]) -> bool:
            return any(isinstance(e, kinds) for e in chain)

        if caused_by(socket.gaierror, urllib3.exceptions.NameResolutionError):
            return Outcome.CONNECTION, "DNS lookup failed: host not found"
        if caused_by(ConnectionRefusedError):
            return Outcome.CONNECTION, "connection refused"
        # urllib3's NewConnectionError (refused, unreachable...) subclasses its ConnectTimeoutError for
        # compatibility's sake: no timeout, whatever its class says.
        timeouts = [e for e in chain if not isinstance(e, urllib3.exceptions.NewConnectionError)]
        if any(
            isinstance(e, requests.exceptions.ConnectTimeout | urllib3.exceptions.ConnectTimeoutError) for e in timeouts
        ):
            return Outcome.TIMEOUT, f"connect timeout ({self.limits.connect_timeout:g}s)"
        if any(
            isinstance(e, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError | TimeoutError)
            for e in timeouts
        ):
            return Outcome.TIMEOUT, f"read timeout: no data for {self.limits.read_timeout:g}s"
        text = _root_cause(exc)
        if caused_by(
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            urllib3.exceptions.LocationParseError,
        ):
            return Outcome.CONNECTION, f"invalid URL: {text}"
        if caused_by(requests.exceptions.SSLError, ssl.SSLError):
            return Outcome.CONNECTION, f"TLS error: {text}"
        return Outcome.CONNECTION, f"connection failed: {text}"

    def _fetch(
        self,
        url: str,
        etag: str | None,
        last_modified: str | None,
        accept: str,
        ctx: _FetchContext,
        result: FetchResult,
        options: FetchOptions,
        host: str,
        max_bytes: int,
    ) -> None:
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        if options.user_agent:
            headers["User-Agent"] = options.user_agent
        origin = _origin(url)
        current = url
        visited = {url}
        permanent_so_far = True
        timeout = (self.limits.connect_timeout, self.limits.read_timeout)
        while True:
            # The first host's slot is held by fetch(); a redirect to another host takes one of its own.
            hop_host = (urlsplit(current).hostname or "").lower()
            slot = (
                contextlib.nullcontext(True)
                if hop_host == host
                else self.slots.hold(hop_host, self.limits.per_host, self._aborted)
            )
            with slot as held:
                if not held:
                    raise FetchFailed(Outcome.CONNECTION, "abandoned at shutdown")
                secrets = _secret_headers(options) if _origin(current) == origin else {}
                # Prepared by hand and sent through the session: the session's
                # per-request merging (cookies we refuse anyway, environment
                # settings we resolved once) was a fifth of a 304's cost.
                prepared = requests.Request(
                    "GET", current, headers={**self.session.headers, **headers, **secrets}
                ).prepare()
                response = self.session.send(
                    prepared,
                    stream=True,
                    timeout=timeout,
                    allow_redirects=False,
                    proxies=self._proxies_for(current),
                    verify=True,
                )
                try:
                    location = response.headers.get("location")
                    if response.status_code in REDIRECT_CODES and location:
                        target = urljoin(current, location.strip())
                        if urlsplit(target).scheme not in ("http", "https"):
                            raise FetchFailed(
                                Outcome.REDIRECT, f"redirect to a non-HTTP URL: {target[:200]}", response.status_code
                            )
                        if target in visited:
                            raise FetchFailed(
                                Outcome.REDIRECT, f"redirect loop at {target[:200]}", response.status_code
                            )
                        if len(visited) > self.limits.max_redirects:
                            raise FetchFailed(
                                Outcome.REDIRECT,
                                f"more than {self.limits.max_redirects} redirects",
                                response.status_code,
                            )
                        if permanent_so_far and response.status_code in PERMANENT_CODES:
                            result.permanent_redirect = target
                        else:
                            permanent_so_far = False
                        visited.add(target)
                        current = target
                        ctx.hop += 1
                        continue
                    self._read_response(response, current, result, max_bytes)
                    return
                finally:
                    _release(response)

    def _read_response(self, response: requests.Response, url: str, result: FetchResult, max_bytes: int) -> None:
        result.final_url = url
        result.status = response.status_code
        result.headers = {k: response.headers[k] for k in _KEPT_HEADERS if k in response.headers}
        result.etag = response.headers.get("etag")
        result.last_modified = response.headers.get("last-modified")
        result.max_age = parse_max_age(result.headers)
        status = response.status_code
        if status == 304:
            result.outcome = Outcome.NOT_MODIFIED
            return
        if status == 410:
            raise FetchFailed(Outcome.GONE, "HTTP 410 Gone: the publisher removed this feed", status)
        if status in (429, 503):
            result.retry_after = parse_retry_after(response.headers.get("retry-after"))
            wait = f", retry after {result.retry_after:.0f}s" if result.retry_after is not None else ""
            raise FetchFailed(Outcome.RATE_LIMITED, f"HTTP {status} {response.reason or ''}".strip() + wait, status)
        if status >= 400 or status < 200 or status in REDIRECT_CODES:
            raise FetchFailed(Outcome.HTTP_ERROR, f"HTTP {status} {response.reason or ''}".strip(), status)
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise FetchFailed(
                Outcome.TOO_LARGE,
                f"body of {int(declared):,} bytes is over the {max_bytes:,}-byte limit",
                status,
            )
        result.body = self._read_body(response, result, max_bytes)

    def _read_body(self, response: requests.Response, result: FetchResult, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        raw = response.raw
        inflater: zlib._Decompress | None = None
        first = True
        while True:
            chunk = raw.read(CHUNK, decode_content=True)
            if not chunk:
                break
            if first:
                first = False
                # A gzip file served without Content-Encoding (a .xml.gz, or a
                # server that compressed twice): inflated here, under the same limit.
                if chunk.startswith(GZIP_MAGIC):
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if inflater is not None:
                chunk = _inflate(inflater, chunk, limit - size, response.status_code)
            size += len(chunk)
            if size > limit:
                result.bytes_read = raw.tell()
                raise _too_large(limit, response.status_code)
            chunks.append(chunk)
        result.bytes_read = raw.tell()
        ctx = _current()
        if ctx is not None and ctx.expired:
            # The watchdog shut the socket: a body without Content-Length then
            # looks complete, but it is cut short.
            raise FetchFailed(
                Outcome.TIMEOUT, f"total deadline of {self.limits.deadline:g}s exceeded", response.status_code
            )
        return b"".join(chunks)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _secret_headers(options: FetchOptions) -> dict[str, str]:
    """The feed's credentials and own headers: for its own origin only."""
    headers = dict(options.headers)
    if options.username is not None:
        token = base64.b64encode(f"{options.username}:{options.password or ''}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    return headers


GZIP_MAGIC = b"\x1f\x8b"


def _too_large(limit: int, status: int) -> FetchFailed:
    return FetchFailed(
        Outcome.TOO_LARGE, f"body is over the {limit:,}-byte limit (decompressed); stopped reading", status
    )


def _inflate(inflater: zlib._Decompress, data: bytes, room: int, status: int) -> bytes:
    """Inflate one chunk, never producing more than ``room`` + 1 bytes, so a
    gzip bomb stops at the limit instead of filling memory. Data after the
    end of the gzip stream is ignored; a stream that breaks off ends the body
    where it breaks (the parser then sees a truncated document, as it would a
    truncated plain one)."""
    if inflater.eof:
        return b""
    try:
        # At most room + 1 bytes: the caller sees the limit passed and stops.
        # Below that, zlib has consumed the whole chunk.
        return inflater.decompress(data, room + 1)
    except zlib.error as exc:
        raise FetchFailed(
            Outcome.PARSE_ERROR, f"the body starts like gzip but does not decompress ({exc})", status
        ) from None


def _release(response: requests.Response) -> None:
    """Give the connection back to the pool for reuse (keep-alive) when what
    is left of the body is small: a 304, a redirect, an error page, or a body
    we read to the end. Otherwise close it (an oversized body we stopped
    reading must not be drained)."""
    raw = response.raw
    try:
        declared = response.headers.get("content-length", "")
        small = response.status_code in (204, 304) or (declared.isdigit() and int(declared) <= 65536)
        if small or raw.closed or getattr(raw, "_fp", None) is None:
            raw.drain_conn()
            raw.release_conn()
            return
    except Exception:  # draining a broken connection: just close it
        pass
    response.close()


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it, outermost first (a cycle ends the walk).
    urllib3 keeps what it wraps in ``reason`` (MaxRetryError), requests in the
    first argument: both are followed too."""
    chain: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if any(current is seen for seen in chain):
            continue
        chain.append(current)
        reason = getattr(current, "reason", None)
        wrapped = current.args[0] if current.args else None
        for nxt in (current.__cause__ or current.__context__, reason, wrapped):
            if isinstance(nxt, BaseException):
                pending.append(nxt)
    return chain


def _root_cause(exc: BaseException) -> str:
    """The innermost exception's message, cleaned up for a person to read."""
    seen = set()
    while exc.__cause__ is not None or exc.__context__ is not None:
        if id(exc) in seen:
            break
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    text = str(exc)
    if exc.args and isinstance(exc.args[0], str) and len(exc.args) == 1:
        text = exc.args[0]
    # urllib3 messages carry object reprs; keep the readable part. The text
    # may quote a server's Location or reason: cut first, and "[^<>]" keeps
    # the pattern linear on "<<<<…".
    text = re.sub(r"<[^<>]+>", "", text[:2000])
    text = re.sub(r"\s+", " ", text).strip(" :")
    return text[:300] or type(exc).__name__
