"""A farm of synthetic news feeds, served over HTTP from loopback addresses.

Why it exists: a poller's speed depends on the web it polls (many hosts,
keep-alive, conditional requests, gzip, feeds of realistic size and shape).
This farm gives every benchmark run the same such web, deterministically
from a seed, and fast enough that the server is never what is measured.

What it serves
    N feeds of M entries each; every fifth feed is Atom 1.0, the rest RSS 2.0.
    Entries have a title, link (some with utm_* tracking parameters), guid
    (permalink or opaque), date, author, 1-3 categories, an HTML description
    of ~1-2 KB (paragraphs, inline links, some relative, and an <img>), and
    on some feeds an enclosure. Feed i lives on 127.0.0.(1 + i % hosts), so
    a poller with a per-host limit sees `hosts` different servers (all of
    127/8 is loopback on Linux). Responses are HTTP/1.1 with Content-Length
    (keep-alive), gzip when asked for (a weak ETag then, as nginx does), an
    ETag and Last-Modified, and 304 on a matching If-None-Match or a not
    older If-Modified-Since.

Control (on any of the addresses; documented on the first)
    POST /_bump         every feed gains 2 new entries at the top and drops
                        its 2 oldest (new ETag and Last-Modified)
    POST /_bump?count=K the next K feeds (round robin) gain 2 entries each:
                        some feeds change while the others answer 304
    POST /_reset        back to the initial entries; request counters zeroed
    GET  /_stats        request counters as JSON (POST /_stats/reset zeroes
                        them), with the peak of concurrent requests per host
    GET  /_requests     with --log-requests: every feed request as
                        [feed index, start, end] (unix seconds), to find two
                        polls of one feed that overlapped; reset with the stats
    Signals: SIGUSR1 bumps, SIGUSR2 resets, SIGTERM/SIGINT stop.

Usage
    python -m bench.feedfarm serve --feeds 200 --entries 50 --out /tmp/farm
        writes /tmp/farm/feeds.yaml (aggregator's `feeds:` format),
        /tmp/farm/urls.txt (one URL a line) and /tmp/farm/farm.json, then
        prints "READY <control url>" and serves until stopped.
    python -m bench.feedfarm bump --control http://127.0.0.1:PORT
    python -m bench.feedfarm stats --control http://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import email.utils
import errno
import gzip
import itertools
import json
import os
import random
import signal
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

NEW_PER_BUMP = 2

# --- vocabulary --------------------------------------------------------------------
# Plain news-like words, so that text-processing costs (sanitising, hashing,
# full-text indexing) resemble real feeds more than random letters would.

WORDS = ["the", "of", "and", "to", "in", "a", "is", "that", "for", "on", "with", "as", "was", "at", "by", "from", "it", "be", "are", "have", "has", "said", "will", "not", "but", "an", "they", "this", "after", "more", "than", "about", "over", "new", "their", "who", "been", "its", "into", "year", "two", "first", "last", "would", "government", "people", "could", "also", "up", "out", "which", "one", "what", "there", "million", "percent", "when", "minister", "city", "state", "report", "country", "police", "week", "court", "health", "says", "market", "company", "told", "time", "officials", "may", "years", "world", "according", "national", "since", "public", "plan", "during", "before", "three", "election", "many", "while", "most", "against", "under", "some", "between", "other", "former", "economy", "bank", "prices", "energy", "water", "school", "children", "workers", "union", "talks", "deal", "security", "council", "president", "leaders", "military", "forces", "border", "attack", "peace", "vote", "party", "campaign", "support", "tax", "budget", "spending", "rates", "inflation", "growth", "trade", "exports", "industry", "jobs", "climate", "weather", "storm", "flood", "fire", "heat", "season", "record", "team", "match", "league", "final", "coach", "players", "goal", "win", "loss", "fans", "stadium", "film", "music", "festival", "artist", "museum", "book", "series", "science", "study", "researchers", "data", "space", "mission", "launch", "technology", "software", "users", "phone", "internet", "privacy", "rules", "law", "judge", "trial", "case", "investigation", "evidence", "hospital", "patients", "doctors", "vaccine", "disease", "outbreak", "treatment", "drug", "research", "university", "students", "teachers", "housing", "rent", "homes", "construction", "transport", "rail", "airport", "flights", "road", "traffic", "electric", "cars", "battery", "power", "grid", "solar", "wind", "oil", "gas", "coal", "emissions", "target", "agreement", "summit", "meeting", "statement", "spokesperson", "announced", "expected", "reported", "confirmed", "denied", "warned", "called", "urged", "promised", "agreed", "rejected", "approved", "delayed", "cancelled", "opened", "closed", "reached", "raised", "cut", "local", "regional", "federal", "european", "global", "major", "small", "early", "late", "high", "low", "strong", "weak", "long", "short", "key", "main", "final", "official", "public", "private", "local", "foreign"]
SECTIONS = ["world", "politics", "business", "technology", "science", "health", "sport", "culture", "climate", "local"]
CATEGORIES = ["World", "Politics", "Business", "Economy", "Technology", "Science", "Health", "Sport", "Culture",
              "Climate", "Europe", "Asia", "Americas", "Africa", "Opinion", "Analysis", "Markets", "Elections"]
FIRST_NAMES = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "James", "Kemi", "Lena",
               "Marco", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tomas", "Uma", "Victor", "Wen", "Yara"]
LAST_NAMES = ["Adams", "Baker", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jensen", "Khan",
              "Lopez", "Moreau", "Nowak", "Okafor", "Patel", "Rossi", "Silva", "Tanaka", "Usman", "Weber", "Zhang"]


def _words(rng: random.Random, low: int, high: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(low, high))]


class Vocabulary:
    """The words of entries' titles and text. size 0: the ~230 common words
    above, drawn uniformly (every feed talks of everything: the worst case
    for story clustering, whose index keys are then all common). size N:
    those words followed by made-up ones up to N, drawn by Zipf's law as
    real news text is (a few words everywhere, most words rare)."""

    def __init__(self, size: int = 0):
        self.size = size
        syllables = ("ka", "lo", "mi", "su", "te", "ra", "no", "vi", "de", "pa", "gu", "ze", "bo", "ti", "ha")
        endings = ("n", "r", "s", "l", "m", "x", "t", "v")
        made_up = (a + b + c + d for a in syllables for b in syllables for c in syllables for d in endings)
        self.words = [*WORDS, *itertools.islice(made_up, max(0, size - len(WORDS)))][:size] if size else WORDS
        self.cum = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(self.words))))

    def draw(self, rng: random.Random, low: int, high: int) -> list[str]:
        if not self.size:
            return _words(rng, low, high)
        return rng.choices(self.words, cum_weights=self.cum, k=rng.randint(low, high))


def _sentence(rng: random.Random, vocabulary: Vocabulary | None = None) -> str:
    words = vocabulary.draw(rng, 8, 22) if vocabulary else _words(rng, 8, 22)
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".....?!")


# --- the feeds -----------------------------------------------------------------------


@dataclass(frozen=True)
class FarmSpec:
    feeds: int = 200
    entries: int = 50
    seed: int = 1
    hosts: int = 20
    atom_every: int = 5  # every atom_every-th feed is Atom, the rest RSS 2.0
    epoch: int = 0  # unix time the initial top entries lead up to (0: now, rounded)
    vocabulary: int = 0  # words of entries' text (Vocabulary): 0 the common words only, N a Zipf long tail

    def host(self, index: int) -> str:
        return f"127.0.0.{1 + index % self.hosts}"

    def is_atom(self, index: int) -> bool:
        return index % self.atom_every == self.atom_every - 1

    def path(self, index: int) -> str:
        return f"/feeds/{index}.{'atom' if self.is_atom(index) else 'rss'}"

    def url(self, index: int, port: int) -> str:
        return f"http://{self.host(index)}:{port}{self.path(index)}"


@dataclass(frozen=True)
class Rendered:
    """One feed document at one generation, ready to send."""

    body: bytes
    gzipped: bytes
    etag: str  # strong, for the identity body; gzip responses send W/<etag>
    last_modified: str  # HTTP-date
    last_modified_ts: int
    content_type: str


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class FeedModel:
    """One synthetic feed. Entry `seq` is the same text whenever it is
    rendered; generation g shows entries 2g .. 2g+M-1, newest first, so each
    generation adds two at the top and drops two at the bottom, as a real
    feed with a fixed window does."""

    def __init__(self, spec: FarmSpec, index: int, port: int, epoch: int):
        self.spec = spec
        self.index = index
        self.atom = spec.is_atom(index)
        self.url = spec.url(index, port)
        self.epoch = epoch
        rng = random.Random(f"{spec.seed}:feed:{index}")
        self.site = f"https://www.site{index}.example"
        self.title = f"Site {index} " + " ".join(_words(rng, 1, 3)).title()
        self.description = _sentence(rng)
        self.step = rng.randint(10, 180) * 60  # seconds between entries: publishing rate varies per feed
        self.permalink_guids = rng.random() < 0.5
        self.tracking = rng.random() < 0.3
        self.enclosures = rng.random() < 0.3
        self.dc_creator = rng.random() < 0.5
        self.relative_links = rng.random() < 0.3
        self._items: dict[int, str] = {}
        self._lock = threading.Lock()
        self.vocabulary = Vocabulary(spec.vocabulary)

    def entry_time(self, seq: int) -> int:
        jitter = random.Random(f"{self.spec.seed}:time:{self.index}:{seq}").randint(0, self.step // 2)
        return self.epoch + (seq - self.spec.entries) * self.step + jitter

    def _item(self, seq: int) -> str:
        with self._lock:
            item = self._items.get(seq)
            if item is None:
                item = self._items[seq] = self._render_item(seq)
            return item

    def _render_item(self, seq: int) -> str:
        rng = random.Random(f"{self.spec.seed}:entry:{self.index}:{seq}")
        ts = self.entry_time(seq)
        title_words = self.vocabulary.draw(rng, 6, 12)
        title = " ".join(title_words).capitalize()
        if rng.random() < 0.1:
            title += " & " + rng.choice(WORDS)  # an entity to decode
        slug = "-".join(title_words[:6])
        section = rng.choice(SECTIONS)
        day = datetime.fromtimestamp(ts, UTC)
        link = f"{self.site}/{section}/{day:%Y/%m}/{slug}-{seq}.html"
        if self.tracking:
            link += "?utm_source=rss&utm_medium=feed&utm_campaign=" + section
        author = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        categories = rng.sample(CATEGORIES, rng.randint(1, 3))
        html = self._description(rng, seq)
        enclosure = None
        if self.enclosures and seq % 3 == 0:
            if rng.random() < 0.5:
                enclosure = (f"https://media.site{self.index}.example/audio/{seq}.mp3", "audio/mpeg",
                             rng.randint(2_000_000, 60_000_000))
            else:
                enclosure = (f"https://media.site{self.index}.example/img/{seq}.jpg", "image/jpeg", rng.randint(40_000, 400_000))
        if self.atom:
            return self._atom_item(seq, ts, title, link, author, categories, html, enclosure)
        return self._rss_item(seq, ts, title, link, author, categories, html, enclosure)

    def _description(self, rng: random.Random, seq: int) -> str:
        target = rng.randint(1000, 2000)
        image = f"https://cdn.site{self.index}.example/img/{seq}-{rng.getrandbits(32):08x}.jpg"
        parts = [f'<p><img src="{image}" alt="{" ".join(_words(rng, 3, 6))}" width="640" height="360"></p>']
        size = len(parts[0])
        while size < target:
            sentences = [_sentence(rng, self.vocabulary) for _ in range(rng.randint(2, 4))]
            if rng.random() < 0.6:
                anchor = " ".join(_words(rng, 2, 4))
                if self.relative_links and rng.random() < 0.5:
                    href = f"/{rng.choice(SECTIONS)}/{'-'.join(_words(rng, 2, 4))}"
                else:
                    site = rng.randrange(max(1, self.spec.feeds))
                    href = f"https://www.site{site}.example/{rng.choice(SECTIONS)}/{rng.getrandbits(24)}"
                sentences.insert(rng.randrange(len(sentences) + 1), f'See <a href="{href}">{anchor}</a>.')
            if rng.random() < 0.2:
                sentences[0] = f"<strong>{sentences[0]}</strong>"
            paragraph = "<p>" + " ".join(sentences) + "</p>"
            parts.append(paragraph)
            size += len(paragraph)
        return "\n".join(parts)

    def _rss_item(self, seq: int, ts: int, title: str, link: str, author: str, categories: list[str], html: str,
                  enclosure: tuple[str, str, int] | None) -> str:
        x = [f"<item><title>{escape(title)}</title><link>{escape(link)}</link>"]
        if self.permalink_guids:
            x.append(f"<guid>{escape(link)}</guid>")
        else:
            x.append(f'<guid isPermaLink="false">site{self.index}-{seq}</guid>')
        x.append(f"<pubDate>{_http_date(ts).replace('GMT', '+0000')}</pubDate>")
        if self.dc_creator:
            x.append(f"<dc:creator>{escape(author)}</dc:creator>")
        else:
            x.append(f"<author>{escape(author.lower().replace(' ', '.'))}@site{self.index}.example ({escape(author)})</author>")
        x.extend(f"<category>{escape(c)}</category>" for c in categories)
        if enclosure:
            x.append(f'<enclosure url={quoteattr(enclosure[0])} type="{enclosure[1]}" length="{enclosure[2]}"/>')
        x.append(f"<description>{escape(html)}</description></item>")
        return "".join(x)

    def _atom_item(self, seq: int, ts: int, title: str, link: str, author: str, categories: list[str], html: str,
                   enclosure: tuple[str, str, int] | None) -> str:
        x = [f"<entry><title>{escape(title)}</title><link rel=\"alternate\" href={quoteattr(link)}/>",
             f"<id>tag:site{self.index}.example,2024:{seq}</id>",
             f"<published>{_iso(ts)}</published><updated>{_iso(ts)}</updated>",
             f"<author><name>{escape(author)}</name></author>"]
        x.extend(f"<category term={quoteattr(c)}/>" for c in categories)
        if enclosure:
            x.append(f'<link rel="enclosure" href={quoteattr(enclosure[0])} type="{enclosure[1]}" length="{enclosure[2]}"/>')
        x.append(f'<content type="html">{escape(html)}</content></entry>')
        return "".join(x)

    def render(self, generation: int) -> Rendered:
        top = self.spec.entries + NEW_PER_BUMP * generation - 1
        seqs = range(top, top - self.spec.entries, -1)
        items = "\n".join(self._item(s) for s in seqs)
        newest = self.entry_time(top)
        if self.atom:
            head = (
                '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">\n'
                f"<title>{escape(self.title)}</title><subtitle>{escape(self.description)}</subtitle>"
                f"<id>tag:site{self.index}.example,2024:feed</id>"
                f'<link rel="alternate" type="text/html" href="{self.site}/"/>'
                f'<link rel="self" type="application/atom+xml" href={quoteattr(self.url)}/>'
                f"<updated>{_iso(newest)}</updated><generator>feedfarm</generator>\n"
            )
            tail = "\n</feed>\n"
            content_type = "application/atom+xml; charset=utf-8"
        else:
            head = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" '
                'xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>'
                f"<title>{escape(self.title)}</title><link>{self.site}/</link>"
                f"<description>{escape(self.description)}</description><language>en-us</language>"
                f"<lastBuildDate>{_http_date(newest)}</lastBuildDate><generator>feedfarm</generator>"
                f'<atom:link href={quoteattr(self.url)} rel="self" type="application/rss+xml"/>\n'
            )
            tail = "\n</channel>\n</rss>\n"
            content_type = "application/rss+xml; charset=utf-8"
        body = (head + items + tail).encode("utf-8")
        return Rendered(
            body=body,
            gzipped=gzip.compress(body, compresslevel=6, mtime=0),
            etag=f'"{self.index:x}-{generation}-{zlib.crc32(body):08x}"',
            last_modified=_http_date(newest),
            last_modified_ts=newest,
            content_type=content_type,
        )


# --- the farm: state shared by all servers --------------------------------------------


@dataclass
class Stats:
    requests: int = 0
    connections: int = 0
    conditional: int = 0
    gzip: int = 0
    body_bytes: int = 0
    status: Counter[int] = field(default_factory=Counter)
    # Most feed requests one address was handling at the same moment: a
    # poller's per-host limit seen from the server (a lower bound of what the
    # poller holds: its slot covers connect to last byte read).
    host_peak: Counter[str] = field(default_factory=Counter)
    log: list[tuple[int, float, float]] = field(default_factory=list)  # (feed index, start, end), if logging

    def as_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "connections": self.connections, "conditional": self.conditional,
                "gzip": self.gzip, "body_bytes": self.body_bytes,
                "status": {str(k): v for k, v in sorted(self.status.items())},
                "host_peak": dict(sorted(self.host_peak.items()))}


class Farm:
    """All feeds at the current generation. Documents are rendered once per
    generation and kept, so /_reset and a repeated /_bump are instant and the
    request path does nothing but look up bytes."""

    def __init__(self, spec: FarmSpec, port: int, log_requests: bool = False):
        self.spec = spec
        self.port = port
        self.log_requests = log_requests
        self._active: Counter[str] = Counter()  # feed requests being handled now, per address
        self._feed_generation: list[int] | None = None  # per feed, once some feeds were bumped alone
        self._cursor = 0  # the next feed a partial bump changes
        epoch = spec.epoch or (int(time.time()) // 3600 * 3600 - 6 * 3600)
        self.models = [FeedModel(spec, i, port, epoch) for i in range(spec.feeds)]
        self.paths = {spec.path(i): i for i in range(spec.feeds)}
        self._generations: dict[int, list[Rendered]] = {}
        self._lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.stats = Stats()
        self.generation = 0
        self.current = self._rendered(0)

    def _rendered(self, generation: int) -> list[Rendered]:
        docs = self._generations.get(generation)
        if docs is None:
            docs = self._generations[generation] = [m.render(generation) for m in self.models]
        return docs

    def bump(self) -> int:
        with self._lock:
            self.current = self._rendered(self.generation + 1)
            self.generation += 1
            self._feed_generation = None
            return self.generation

    def bump_some(self, count: int) -> int:
        """The next ``count`` feeds (round robin) gain 2 entries each; the
        others stay as they are. Renders only those feeds (a few ms each)."""
        with self._lock:
            if self._feed_generation is None:
                self._feed_generation = [self.generation] * self.spec.feeds
                self.current = list(self.current)  # the cached generation's list stays as it was
            docs, generations = self.current, self._feed_generation
            for _ in range(min(count, self.spec.feeds)):
                index = self._cursor
                self._cursor = (self._cursor + 1) % self.spec.feeds
                generations[index] += 1
                docs[index] = self.models[index].render(generations[index])
            return min(count, self.spec.feeds)

    def reset(self) -> None:
        with self._lock:
            self.current = self._rendered(0)
            self.generation = 0
            self._feed_generation = None
            self._cursor = 0
        self.reset_stats()

    def reset_stats(self) -> None:
        with self._stats_lock:
            self.stats = Stats()

    def count(self, status: int, body_bytes: int, conditional: bool, gzipped: bool) -> None:
        with self._stats_lock:
            s = self.stats
            s.requests += 1
            s.status[status] += 1
            s.body_bytes += body_bytes
            s.conditional += conditional
            s.gzip += gzipped

    def count_connection(self) -> None:
        with self._stats_lock:
            self.stats.connections += 1

    def enter(self, address: str) -> float:
        with self._stats_lock:
            self._active[address] += 1
            peak = self.stats.host_peak
            peak[address] = max(peak[address], self._active[address])
        return time.time()

    def leave(self, address: str, index: int, started: float) -> None:
        ended = time.time()
        with self._stats_lock:
            self._active[address] -= 1
            if self.log_requests:
                self.stats.log.append((index, started, ended))

    def urls(self) -> list[str]:
        return [m.url for m in self.models]

    def describe(self) -> dict[str, Any]:
        docs = self.current
        return {"feeds": self.spec.feeds, "entries": self.spec.entries, "seed": self.spec.seed, "hosts": self.spec.hosts,
                "port": self.port, "generation": self.generation,
                "bytes": sum(len(d.body) for d in docs), "gzip_bytes": sum(len(d.gzipped) for d in docs),
                "atom_feeds": sum(m.atom for m in self.models)}


def _strip_weak(tag: str) -> str:
    return tag.strip().removeprefix("W/")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive by default; every response has a length
    disable_nagle_algorithm = True  # head and body are separate writes: no Nagle/delayed-ACK stalls
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.farm.count_connection()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        lines = [f"HTTP/1.1 {status} {reason}", "Server: feedfarm", f"Date: {_http_date(time.time())}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if status != 304:
            lines.append(f"Content-Length: {len(body)}")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, "OK", [("Content-Type", "application/json")], json.dumps(data).encode())

    def do_GET(self) -> None:
        farm = self.server.farm
        path = self.path.split("?", 1)[0]
        index = farm.paths.get(path)
        if index is None or farm.spec.host(index) != self.server.address:
            if path == "/_stats":
                return self._json({**farm.stats.as_json(), **farm.describe()})
            if path == "/_requests":
                return self._json({"requests": farm.stats.log})
            farm.count(404, 9, False, False)
            return self._send(404, "Not Found", [("Content-Type", "text/plain")], b"not found")
        started = farm.enter(self.server.address)
        try:
            self._feed(farm, index)
        finally:
            farm.leave(self.server.address, index, started)

    def _feed(self, farm: Farm, index: int) -> None:
        doc = farm.current[index]
        gzipped = "gzip" in (self.headers.get("Accept-Encoding") or "")
        etag = f"W/{doc.etag}" if gzipped else doc.etag
        headers = [("ETag", etag), ("Last-Modified", doc.last_modified), ("Vary", "Accept-Encoding")]
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        if inm is not None:  # RFC 9110 13.1.2: weak comparison; If-Modified-Since is then ignored
            fresh = any(t.strip() == "*" or _strip_weak(t) == doc.etag for t in inm.split(","))
        elif ims is not None:
            try:
                fresh = email.utils.parsedate_to_datetime(ims).timestamp() >= doc.last_modified_ts
            except (TypeError, ValueError, IndexError):
                fresh = False
        else:
            fresh = False
        conditional = inm is not None or ims is not None
        if fresh:
            farm.count(304, 0, conditional, False)
            return self._send(304, "Not Modified", headers)
        body = doc.gzipped if gzipped else doc.body
        headers.append(("Content-Type", doc.content_type))
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        farm.count(200, len(body), conditional, gzipped)
        self._send(200, "OK", headers, body)

    do_HEAD = do_GET

    def do_POST(self) -> None:
        farm = self.server.farm
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # keep the connection usable
        if self.path == "/_bump":
            return self._json({"generation": farm.bump()})
        if self.path.startswith("/_bump?count="):
            return self._json({"bumped": farm.bump_some(int(self.path.split("=", 1)[1]))})
        if self.path == "/_reset":
            farm.reset()
            return self._json({"generation": 0})
        if self.path == "/_stats/reset":
            farm.reset_stats()
            return self._json({})
        self._send(404, "Not Found", [("Content-Type", "text/plain")], b"not found")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog of 5 drops bursts of new connections

    def __init__(self, address: str, port: int, farm: Farm | None):
        self.address = address
        super().__init__((address, port), _Handler)
        self.farm: Farm = farm  # type: ignore[assignment]  # set before serving

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the address's FQDN (a reverse DNS
        # lookup per address); we know our name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.address, self.server_address[1]


def _bind_all(hosts: list[str], port: int) -> list[_Server]:
    """One listening socket per address, all on the same port. With port 0
    the first bind picks a free port; retry if another address has it taken."""
    for _attempt in range(20):
        servers: list[_Server] = []
        try:
            first = _Server(hosts[0], port, None)
            servers.append(first)
            chosen = first.server_address[1]
            for host in hosts[1:]:
                servers.append(_Server(host, chosen, None))
            return servers
        except OSError as exc:
            for s in servers:
                s.server_close()
            if exc.errno != errno.EADDRINUSE or port:
                raise
    raise RuntimeError("could not find a port free on every farm address")


def serve(spec: FarmSpec, port: int, out: Path | None, log_requests: bool = False) -> None:
    hosts = [f"127.0.0.{1 + i}" for i in range(min(spec.hosts, max(1, spec.feeds)))]
    servers = _bind_all(hosts, port)
    port = servers[0].server_address[1]
    started = time.monotonic()
    farm = Farm(spec, port, log_requests)
    for s in servers:
        s.farm = farm
    control = f"http://{hosts[0]}:{port}"
    if out is not None:
        write_feed_lists(out, farm.urls(), {**farm.describe(), "control": control, "pid": os.getpid()})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: farm.bump())
    signal.signal(signal.SIGUSR2, lambda *_: farm.reset())
    threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True) for s in servers]
    for t in threads:
        t.start()
    info = farm.describe()
    print(f"feedfarm: {spec.feeds} feeds x {spec.entries} entries on {len(hosts)} addresses, port {port}; "
          f"{info['bytes'] / 1e6:.1f} MB ({info['gzip_bytes'] / 1e6:.1f} MB gzipped); rendered in "
          f"{time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    print(f"READY {control}", flush=True)
    while not stop.wait(1.0):
        pass
    # shutdown() waits up to one poll interval per server: do them all at once.
    stoppers = [threading.Thread(target=s.shutdown) for s in servers]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join(timeout=5)
    for s in servers:
        s.server_close()


def write_feed_lists(out: Path, urls: list[str], info: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "urls.txt").write_text("".join(u + "\n" for u in urls))
    (out / "feeds.yaml").write_text("feeds:\n" + "".join(f"  - url: {u}\n" for u in urls))
    (out / "farm.json").write_text(json.dumps(info, indent=2) + "\n")


# --- client side, for the runner ------------------------------------------------------------

# Never send farm traffic through a proxy from the environment.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FarmClient:
    def __init__(self, control: str):
        self.control = control.rstrip("/")

    def _call(self, method: str, path: str) -> dict[str, Any]:
        request = urllib.request.Request(self.control + path, method=method, data=b"" if method == "POST" else None)
        with _opener.open(request, timeout=120) as response:
            data: dict[str, Any] = json.loads(response.read())
            return data

    def bump(self) -> int:
        return int(self._call("POST", "/_bump")["generation"])

    def bump_some(self, count: int) -> int:
        return int(self._call("POST", f"/_bump?count={count}")["bumped"])

    def requests(self) -> list[tuple[int, float, float]]:
        """The farm's request log (started with log_requests): (feed index, start, end)."""
        return [(int(i), float(s), float(e)) for i, s, e in self._call("GET", "/_requests")["requests"]]

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats")

    def reset_stats(self) -> None:
        self._call("POST", "/_stats/reset")


class FarmProcess:
    """The farm in a child process (so its CPU is not the measured tool's),
    started and stopped by the runner."""

    def __init__(self, spec: FarmSpec, out: Path, python: str = sys.executable, port: int = 0,
                 log_requests: bool = False):
        self.spec = spec
        self.out = out
        cmd = [python, "-m", "bench.feedfarm", "serve", "--feeds", str(spec.feeds), "--entries", str(spec.entries),
               "--seed", str(spec.seed), "--hosts", str(spec.hosts), "--port", str(port), "--out", str(out)]
        if log_requests:
            cmd.append("--log-requests")
        if spec.epoch:
            cmd += ["--epoch", str(spec.epoch)]
        if spec.vocabulary:
            cmd += ["--vocabulary", str(spec.vocabulary)]
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=root)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.process.kill()
            raise RuntimeError(f"feedfarm did not start (said {line!r}, exit {self.process.wait()})")
        self.client = FarmClient(line.split(None, 1)[1].strip())

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def urls_file(self) -> Path:
        return self.out / "urls.txt"

    @property
    def feeds_yaml(self) -> Path:
        return self.out / "feeds.yaml"

    def urls(self) -> list[str]:
        return self.urls_file.read_text().split()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> FarmProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def iter_sizes(text: str) -> Iterator[tuple[int, int]]:
    """'200x50,1000x20' -> (200, 50), (1000, 20)."""
    for part in text.split(","):
        n, _, m = part.strip().lower().partition("x")
        yield int(n), int(m)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.feedfarm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="generate the feeds and serve them until stopped")
    s.add_argument("--feeds", type=int, default=200, help="number of feeds (N)")
    s.add_argument("--entries", type=int, default=50, help="entries per feed (M)")
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--hosts", type=int, default=20, help="loopback addresses 127.0.0.1 .. 127.0.0.<hosts>")
    s.add_argument("--port", type=int, default=0, help="port on every address (0: pick a free one)")
    s.add_argument("--epoch", type=int, default=0, help="unix time of the newest initial entries (0: now - 6h)")
    s.add_argument("--vocabulary", type=int, default=0,
                   help="words of the entries' text: 0 the ~230 common ones, N a Zipf long tail of N (real news)")
    s.add_argument("--out", type=Path, help="write feeds.yaml, urls.txt and farm.json here")
    s.add_argument("--log-requests", action="store_true", help="keep every feed request's times (GET /_requests)")
    for name in ("bump", "reset", "stats"):
        c = sub.add_parser(name, help=f"{name} a running farm")
        c.add_argument("--control", required=True, help="the URL printed after READY")
    args = parser.parse_args(argv)
    if args.command == "serve":
        spec = FarmSpec(feeds=args.feeds, entries=args.entries, seed=args.seed, hosts=args.hosts, epoch=args.epoch,
                        vocabulary=args.vocabulary)
        serve(spec, args.port, args.out, args.log_requests)
        return
    client = FarmClient(args.control)
    if args.command == "bump":
        print(f"generation {client.bump()}")
    elif args.command == "reset":
        client.reset()
        print("reset")
    else:
        print(json.dumps(client.stats(), indent=2))


if __name__ == "__main__":
    main()
