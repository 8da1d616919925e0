"""Helpers for tests/test_hostile.py: servers that misbehave on purpose,
hostile documents, a peak-memory sampler, and checks that no active content
reached any published output.

Every handler here stops on its own: when the client goes away (a write
fails), when a test releases it, or after a safety timeout, so no thread of
the fixture server keeps a core busy after its test.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

import feedparser
import html5lib
import psutil

from tests.conftest import Workspace, run_cli
from tests.daemon import STARTED, Daemon
from tests.fixture_server import FeedServer, Handler

KB = 1000
MB = 1000**2
GB = 1000**3

# --- responses -------------------------------------------------------------------------------


def send(h: Handler, status: int = 200, body: bytes = b"", content_type: str | None = "application/rss+xml",
         headers: dict[str, str] | None = None) -> None:
    """A complete, well-formed response with a Content-Length."""
    h.send_response(status)
    if content_type:
        h.send_header("Content-Type", content_type)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def serve_body(body: bytes | str, content_type: str | None = "application/rss+xml",
               headers: dict[str, str] | None = None, status: int = 200) -> Callable[[Handler], None]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return lambda h: send(h, status, data, content_type, headers)


class Switch:
    """A route handler whose behaviour the test changes between polls (a feed
    that was fine, then turns hostile)."""

    def __init__(self, behaviour: Callable[[Handler], None]):
        self.behaviour = behaviour
        self.requests = 0

    def set(self, behaviour: Callable[[Handler], None]) -> None:
        self.behaviour = behaviour

    def __call__(self, h: Handler) -> None:
        self.requests += 1
        self.behaviour(h)


@dataclass
class Sent:
    """What a streaming handler managed to write before the client left."""

    bytes: int = 0
    chunks: int = 0
    finished: threading.Event = field(default_factory=threading.Event)
    client_left: bool = False


_SAFETY = 60.0  # no handler streams for longer than this, whatever happens


def _write(h: Handler, data: bytes, sent: Sent) -> bool:
    try:
        h.wfile.write(data)
        h.wfile.flush()
    except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, OSError):
        sent.client_left = True
        return False
    sent.bytes += len(data)
    sent.chunks += 1
    return True


RSS_HEAD = (b'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Huge</title>'
            b"<link>http://huge.example/</link><description>d</description>\n")


def _item_block(n: int) -> bytes:
    one = ("<item><title>Filler {}</title><link>http://huge.example/{}</link><description>"
           + "x" * 400 + "</description></item>\n")
    return "".join(one.format(i, i) for i in range(n)).encode()


def huge_feed(total: int, sent: Sent, declare_length: bool) -> Callable[[Handler], None]:
    """A valid-looking RSS document of ``total`` bytes, generated while it is
    written (never held whole): 64 KB blocks of items."""
    block = _item_block(140)  # ~64 KB

    def handler(h: Handler) -> None:
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            if declare_length:
                h.send_header("Content-Length", str(total))
            else:
                h.send_header("Connection", "close")  # length unknown: only streaming can catch it
            h.end_headers()
            started = time.monotonic()
            if not _write(h, RSS_HEAD, sent):
                return
            while sent.bytes + len(block) <= total and time.monotonic() - started < _SAFETY:
                if not _write(h, block, sent):
                    return
            _write(h, b" " * (total - sent.bytes - len(b"</channel></rss>\n")) + b"</channel></rss>\n", sent)
        finally:
            sent.finished.set()

    return handler


def gzip_unit(zeros: int = 10 * MB) -> tuple[bytes, bytes, int]:
    """(gzip header + first unit, repeatable unit, decompressed bytes per unit):
    a gzip member that inflates to ``zeros`` zero bytes per ~10 KB unit. Each
    unit ends with a full flush, so the same bytes can be sent again and again."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = b"\0" * zeros
    first = compressor.compress(b"<rss>") + compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    unit = compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first, unit, zeros


_UNIT_CACHE: dict[int, tuple[bytes, bytes, int]] = {}


def gzip_bomb(decompressed: int, sent: Sent, declare_length: bool = False) -> Callable[[Handler], None]:
    """Content-Encoding: gzip; ``decompressed`` bytes of zeros (gigabytes)
    from a few hundred KB on the wire, streamed unit by unit."""
    if 10 * MB not in _UNIT_CACHE:
        _UNIT_CACHE[10 * MB] = gzip_unit(10 * MB)
    first, unit, per_unit = _UNIT_CACHE[10 * MB]
    units = max(1, decompressed // per_unit)

    def handler(h: Handler) -> None:
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Encoding", "gzip")
            if declare_length:
                h.send_header("Content-Length", str(len(first) + len(unit) * (units - 1)))
            else:
                h.send_header("Connection", "close")
            h.end_headers()
            started = time.monotonic()
            if not _write(h, first, sent):
                return
            for _ in range(units - 1):
                if time.monotonic() - started > _SAFETY or not _write(h, unit, sent):
                    return
        finally:
            sent.finished.set()

    return handler


def endless_chunked(sent: Sent, pause: float = 0.0, release: threading.Event | None = None) -> Callable[[Handler], None]:
    """Transfer-Encoding: chunked that never sends the last chunk."""
    item = _item_block(10)

    def handler(h: Handler) -> None:
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            started = time.monotonic()
            payload = RSS_HEAD
            while time.monotonic() - started < _SAFETY and not (release and release.is_set()):
                if not _write(h, b"%x\r\n%s\r\n" % (len(payload), payload), sent):
                    return
                payload = item
                if pause:
                    time.sleep(pause)
        finally:
            sent.finished.set()

    return handler


def silent(release: threading.Event) -> Callable[[Handler], None]:
    """Accepts the connection, reads the request, never answers."""
    return lambda h: release.wait(_SAFETY)


def trickle(release: threading.Event, every: float = 1.0, headers_too: bool = False) -> Callable[[Handler], None]:
    """One byte per ``every`` seconds: each read is quick, the whole never ends.
    ``headers_too``: even the status line and headers come a byte at a time."""

    def handler(h: Handler) -> None:
        started = time.monotonic()
        sent = Sent()
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\nContent-Length: 100000\r\n\r\n"
        if headers_too:
            data = head + b"<rss>"
        else:
            h.send_response(200)
            h.send_header("Content-Type", "application/rss+xml")
            h.send_header("Content-Length", "100000")
            h.end_headers()
            h.wfile.flush()
            data = b"<rss version='2.0'><channel>"
        i = 0
        while not release.is_set() and time.monotonic() - started < _SAFETY:
            byte = data[i:i + 1] or b" "
            if not _write(h, byte, sent):
                return
            i += 1
            release.wait(every)

    return handler


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_only_getaddrinfo(real: Callable[..., Any], names: dict[str, str | None]) -> Callable[..., Any]:
    """getaddrinfo that answers only for loopback addresses and for the names
    a test maps in ``names`` (to a loopback address, or to None: "no such
    host"), and fails `.invalid` like a resolver would (RFC 6761). No test
    ever asks a real DNS server."""

    def fake(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = (host.decode() if isinstance(host, bytes) else str(host or "")).rstrip(".").lower()
        if name in names:
            target = names[name]
            if target is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return real(target, *args, **kwargs)
        if name.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if name in ("localhost", "") or re.fullmatch(r"127\.\d+\.\d+\.\d+|::1|0\.0\.0\.0", name):
            return real(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known (tests never resolve {name!r})")

    return fake


# --- memory -----------------------------------------------------------------------------------


class PeakRSS:
    """Samples the RSS of a process (and, with ``tree``, all its descendants,
    summed) every ``every`` seconds while the block runs."""

    def __init__(self, pid: int | None = None, tree: bool = False, every: float = 0.02):
        self.process = psutil.Process(pid or os.getpid())
        self.tree = tree
        self.every = every
        self.base = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> int:
        total = 0
        procs = [self.process]
        if self.tree:
            try:
                procs += self.process.children(recursive=True)
            except psutil.Error:
                pass
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def __enter__(self) -> "PeakRSS":
        self.base = self.peak = self.sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.every)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, self.sample())

    @property
    def growth(self) -> int:
        return self.peak - self.base


# --- XML ---------------------------------------------------------------------------------------


def billion_laughs(levels: int = 9, one_line: bool = False, padding: int = 0) -> bytes:
    """Nested entities: 10**levels 'lol's if expanded. Two entries: one that
    uses the bomb, one plain entry that must still be stored. ``padding``
    bytes of harmless text make the document bigger, which raises what a
    ratio-based guard (expat's amplification limit) lets through."""
    decls = ['<!ENTITY lol "lol">'] + [
        f'<!ENTITY lol{i} "' + (f"&lol{i - 1};" if i > 1 else "&lol;") * 10 + '">' for i in range(1, levels + 1)]
    sep = "" if one_line else "\n"
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{sep}<!DOCTYPE rss [{sep}{sep.join(decls)}{sep}]>{sep}'
        f'<rss version="2.0"><channel><title>Laughs</title><link>http://laughs.example/</link>'
        f"<description>d{' ' * padding}</description>"
        f"<item><title>Bomb &lol{levels};</title><link>http://laughs.example/bomb</link>"
        f"<description>&lol{levels};</description></item>"
        "<item><title>Plain laughs entry</title><link>http://laughs.example/plain</link><description>fine</description></item>"
        "</channel></rss>"
    ).encode()


def quadratic_blowup(value_bytes: int, references: int, one_line: bool = False) -> bytes:
    """One flat entity (no '&' in its value, so no nesting) referenced many
    times: value_bytes x references if expanded (the "quadratic blowup").
    The value is 'Q's: count them in what was stored to see any expansion."""
    sep = "" if one_line else "\n"
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{sep}<!DOCTYPE rss [{sep}'
        f'<!ENTITY a "{"Q" * value_bytes}">{sep}]>{sep}'
        '<rss version="2.0"><channel><title>Blowup</title><link>http://blowup.example/</link><description>d</description>'
        f"<item><title>Blowup entry</title><link>http://blowup.example/1</link><description>{'&a;' * references}</description></item>"
        "<item><title>Plain blowup entry</title><link>http://blowup.example/2</link><description>fine</description></item>"
        "</channel></rss>"
    ).encode()


def external_entities(file_url: str, http_url: str, dtd_url: str, style_url: str) -> bytes:
    """External general entities (a local file and a URL), an external DTD
    and a stylesheet processing instruction: nothing may be fetched or read."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<?xml-stylesheet type="text/xsl" href="{style_url}"?>\n'
        f'<!DOCTYPE rss SYSTEM "{dtd_url}" [\n'
        f'<!ENTITY file SYSTEM "{file_url}">\n'
        f'<!ENTITY remote SYSTEM "{http_url}">\n'
        "]>\n"
        '<rss version="2.0"><channel><title>XXE &file;</title><link>http://xxe.example/</link><description>&remote;</description>'
        "<item><title>Leak &file;</title><link>http://xxe.example/1</link><description>before &file; middle &remote; after</description>"
        "<author>&file;</author><category>&remote;</category></item>"
        "<item><title>Innocent XXE entry</title><link>http://xxe.example/2</link><description>plain</description></item>"
        "</channel></rss>"
    ).encode()


def external_parameter_entity(dtd_url: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<!DOCTYPE rss [\n<!ENTITY % ext SYSTEM "{dtd_url}">\n%ext;\n]>\n'
        '<rss version="2.0"><channel><title>PE</title><link>http://pe.example/</link><description>d</description>'
        "<item><title>Parameter entity entry</title><link>http://pe.example/1</link><description>plain</description></item>"
        "</channel></rss>"
    ).encode()


# --- active content in outputs ----------------------------------------------------------------------

DANGEROUS_ELEMENTS = {"script", "iframe", "object", "embed", "applet", "frame", "frameset", "base", "form", "input",
                      "button", "textarea", "select", "svg", "math", "link", "meta", "style", "noscript", "template"}
URL_ATTRIBUTES = {"href", "src", "action", "formaction", "poster", "data", "background", "cite", "longdesc",
                  "usemap", "srcset", "xlink:href", "lowsrc", "dynsrc", "codebase", "manifest", "icon", "profile"}
BAD_SCHEMES = ("javascript:", "data:", "vbscript:", "livescript:", "mocha:")


def bad_url(value: str | None) -> bool:
    """A URL that runs code or embeds a document when followed."""
    if not value:
        return False
    compact = re.sub(r"[\x00-\x20\x7f]+", "", value).lower()
    compact = re.sub(r"&#(x0*(9|a|d)|0*(9|10|13));?", "", compact)
    candidates = [compact] + [part.strip().split(" ")[0] for part in compact.split(",")]  # srcset lists
    return any(c.startswith(BAD_SCHEMES) for c in candidates)


def _elements(fragment_or_doc: str, document: bool) -> list[Any]:
    parser = html5lib.HTMLParser(namespaceHTMLElements=False)
    tree = parser.parse(fragment_or_doc) if document else parser.parseFragment(fragment_or_doc)
    return list(tree.iter()) if document else [el for child in tree for el in child.iter()]


def html_problems(markup: str, where: str, document: bool = False, own_style: str | None = None) -> list[str]:
    """Active content in an HTML document or fragment, as a browser would
    parse it. ``own_style``: the page's own <style> text, the one allowed."""
    problems = []
    for el in _elements(markup, document):
        tag = el.tag if isinstance(el.tag, str) else ""
        tag = tag.split("}")[-1].lower()
        if not tag:
            continue
        if tag in DANGEROUS_ELEMENTS:
            allowed_page_parts = document and (
                (tag == "style" and own_style is not None and (el.text or "").strip() == own_style.strip())
                or (tag == "meta" and set(el.attrib) <= {"charset", "name", "content"}
                    and "http-equiv" not in el.attrib and "refresh" not in (el.get("content") or "").lower())
                or (tag == "link" and (el.get("rel") or "").lower() == "alternate" and not bad_url(el.get("href")))
                # The page's own search box: a plain GET form to our /search, one text field, one button.
                or (tag == "form" and el.get("class") == "search" and (el.get("method") or "").lower() == "get"
                    and (el.get("action") or "").endswith("/search") and not bad_url(el.get("action")))
                or (tag == "input" and el.get("type") == "search" and el.get("name") == "q"
                    and not any(k.lower().startswith(("on", "form")) for k in el.attrib))
                or (tag == "button" and not el.attrib))
            if not allowed_page_parts:
                problems.append(f"{where}: <{tag}> element {dict(el.attrib)!r}")
        for name, value in el.attrib.items():
            lname = name.split("}")[-1].lower()
            if lname.startswith("on"):
                problems.append(f"{where}: <{tag} {name}={value!r}> event handler attribute")
            if lname in URL_ATTRIBUTES and bad_url(value):
                problems.append(f"{where}: <{tag} {name}={value!r}> active URL")
            if lname == "style" and re.search(r"expression|javascript:|url\s*\(|behavior|-moz-binding", value, re.I):
                problems.append(f"{where}: <{tag} style={value!r}> active CSS")
            if lname == "http-equiv" and value.lower() == "refresh":
                problems.append(f"{where}: <meta http-equiv=refresh>")
    return problems


_TAG_LIKE = re.compile(r"<\s*/?\s*(script|iframe|object|embed|img|svg|style|a|b|i|div|span|p)\b|\bon\w+\s*=", re.I)


def text_problems(value: str | None, where: str) -> list[str]:
    """Titles and names are plain text: markup must have been reduced to text
    (DESIGN §6), not kept as tags that a reader rendering the field as HTML
    would run. Used where formats leave that open (RSS titles, names)."""
    if value and _TAG_LIKE.search(value):
        return [f"{where}: markup left in a plain-text field: {value[:160]!r}"]
    return []


def _xml_feed_problems(path: str, body: bytes) -> list[str]:
    problems: list[str] = []
    try:
        root = ET.fromstring(body)  # our output must be well-formed XML
    except ET.ParseError as exc:
        return [f"{path}: not well-formed XML: {exc}"]
    is_rss = root.tag == "rss"
    for el in root.iter():
        tag = el.tag.split("}")[-1]
        for name, value in el.attrib.items():
            if name in ("href", "url", "src", "uri") and bad_url(value):
                problems.append(f"{path}: <{tag} {name}={value!r}> active URL")
        if tag in ("link", "uri", "url", "comments", "docs", "id") and el.text and bad_url(el.text):
            problems.append(f"{path}: <{tag}>{el.text!r} active URL")
        if tag in ("description", "encoded") or (tag in ("content", "summary", "title", "subtitle", "rights")
                                                 and el.get("type") == "html"):
            problems += html_problems(el.text or "", f"{path} <{tag}>")
        if tag in ("content", "summary", "title") and el.get("type") == "xhtml":
            problems += html_problems(ET.tostring(el, encoding="unicode"), f"{path} <{tag} type=xhtml>")
        # RSS has no text/html distinction and many readers render <title> as
        # HTML: titles and names there must carry no markup at all. (Atom's
        # type="text" and JSON Feed's title are plain text by their specs.)
        if is_rss and tag in ("title", "source", "creator", "category", "author") and el.text:
            problems += text_problems(el.text, f"{path} <{tag}>")
    # And as a feed reader sees it: feedparser, without its own sanitiser.
    parsed = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False)
    for entry in parsed.entries:
        for detail in [*(entry.get("content") or []), entry.get("summary_detail"), entry.get("title_detail")]:
            if detail and detail.get("value") and detail.get("type") in ("text/html", "application/xhtml+xml"):
                problems += html_problems(detail["value"], f"{path} (as feedparser reads it)")
        for link in entry.get("links") or []:
            if bad_url(link.get("href")):
                problems.append(f"{path}: entry link {link.get('href')!r} (as feedparser reads it)")
    return problems


def _json_feed_problems(path: str, body: bytes) -> list[str]:
    problems: list[str] = []
    try:
        feed = json.loads(body)
    except ValueError as exc:
        return [f"{path}: not valid JSON: {exc}"]
    for key in ("home_page_url", "feed_url", "icon", "favicon"):
        if bad_url(feed.get(key)):
            problems.append(f"{path}: {key} {feed.get(key)!r}")
    for item in feed.get("items", []):
        where = f"{path} item {item.get('id')!r}"
        if item.get("content_html"):  # title, summary, names and tags are plain text in JSON Feed
            problems += html_problems(item["content_html"], f"{where} content_html")
        for key in ("url", "external_url", "image", "banner_image"):
            if bad_url(item.get(key)):
                problems.append(f"{where}: {key} {item.get(key)!r}")
        for author in item.get("authors") or []:
            if bad_url(author.get("url")):
                problems.append(f"{where}: author url {author.get('url')!r}")
        for attachment in item.get("attachments") or []:
            if bad_url(attachment.get("url")):
                problems.append(f"{where}: attachment url {attachment.get('url')!r}")
        source = item.get("_source") or {}
        for key in ("feed_url", "home_page_url"):
            if bad_url(source.get(key)):
                problems.append(f"{where}: _source.{key} {source.get(key)!r}")
        for other in source.get("also_reported_by") or []:
            if bad_url(other.get("url")) or bad_url(other.get("feed_url")):
                problems.append(f"{where}: _source.also_reported_by {other!r}")
    return problems


def _page_style() -> str:
    from aggregator.publish.html import STYLE

    return STYLE


def snapshot_problems(snapshot: Any) -> list[str]:
    """Every document of a publisher snapshot, checked for active content:
    elements and attributes as a browser parses the HTML pages and the HTML
    inside the feeds, URLs a reader would follow, and markup in RSS titles."""
    problems: list[str] = []
    for path, document in sorted(snapshot.documents.items()):
        body = document.body
        if path in ("", "feeds") or path.endswith(".html"):
            problems += html_problems(body.decode("utf-8"), f"/{path}", document=True, own_style=_page_style())
        elif path == "opml":
            try:
                root = ET.fromstring(body)
            except ET.ParseError as exc:
                problems.append(f"/opml: not well-formed XML: {exc}")
                continue
            for el in root.iter("outline"):
                for key in ("xmlUrl", "htmlUrl", "url"):
                    if bad_url(el.get(key)):
                        problems.append(f"/opml: outline {key}={el.get(key)!r}")
        elif path.endswith((".atom", ".rss")):
            problems += _xml_feed_problems("/" + path, body)
        elif path.endswith(".json"):
            problems += _json_feed_problems("/" + path, body)
    return problems


def all_output_text(snapshot: Any) -> str:
    return "\n".join(d.body.decode("utf-8", "replace") for d in snapshot.documents.values())


# --- the CLI --------------------------------------------------------------------------------------------


def feeds_list(ws: Workspace) -> dict[str, dict[str, Any]]:
    """`aggregator feeds list --json`, keyed by the feed's configured URL."""
    proc = run_cli("feeds", "list", "--json", "--config", str(ws.config_path))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return {row["configured_url"]: row for row in rows}


# --- a daemon whose files cannot grow (a full disk) ------------------------------------------------------


class LimitedDaemon(Daemon):
    """`aggregator run` with RLIMIT_FSIZE: no file the service writes can grow
    past ``max_file_bytes`` (its database, WAL, static outputs, its log).
    SIGXFSZ is ignored in the child, so a write past the limit fails with
    EFBIG instead of killing the process, as writes on a full disk fail."""

    def __init__(self, ws: Workspace, max_file_bytes: int, **polling: object):
        super().__init__(ws, **polling)
        self.max_file_bytes = max_file_bytes

    def start(self, wait: bool = True) -> "LimitedDaemon":
        limit = self.max_file_bytes

        def limit_files() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        STARTED.append(self)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aggregator", "run", "--config", str(self.ws.config_path)],
            stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=limit_files)
        log.close()
        if wait:
            self.wait_until(lambda: self.get("/healthz")[0] == 200, 30, "the daemon to become healthy")
        return self


# --- fixture servers that stop at once -------------------------------------------------------------------


def close_fast(srv: FeedServer) -> None:
    """FeedServer.close() waits up to serve_forever's 0.5 s poll interval; a
    connection wakes its select() at once. (About a minute over this file.)"""
    stopper = threading.Thread(target=srv._server.shutdown, daemon=True)
    stopper.start()
    while stopper.is_alive():
        try:
            with socket.create_connection((srv.host, srv.port), timeout=0.2):
                pass
        except OSError:
            pass
        stopper.join(0.02)
    srv._server.server_close()
