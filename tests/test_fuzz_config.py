"""Property-based fuzzing of the config and subscription loaders (Hypothesis;
profiles in conftest.py), over near-valid documents: config.yaml and feeds/
files built from the real settings and entries with some values replaced by
junk (wrong types, huge numbers, NaN and infinities, odd strings, nested
junk, YAML tags and aliases), OPML files with odd outlines, and raw bytes.

What must hold: load_config gives a valid Config or a ConfigError whose every
line names the file and the setting that is wrong; the subscription loaders
never raise, every error line names the file (and the entry), and one bad
entry never loses the others: every good entry of a usable file loads."""

from __future__ import annotations

import copy
import math
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from aggregator.config import Config, load_config
from aggregator.model import Subscription
from aggregator.subscriptions import load_opml_feeds, load_subscriptions, load_yaml_feeds
from aggregator.validation import ConfigError

MAX_LINE = 1000  # characters: an error line quotes what it got, never a whole 100 KB value

# --- junk ---------------------------------------------------------------------------------

ODD_STRINGS = [
    "", " ", "\t", "15m", "0s", "-5m", "1e400s", "99999999999d", "0.0000001s", "10MB", "1e9GB", "-1KB", "NaN", ".inf",
    "http://example.com:abc/rss", "http://[::1/", "http://[::1]:99999/", "https://a.example/feed", "HTTP://A.EXAMPLE",
    "https://user:pa%ss@a.example/", "javascript:alert(1)", "//a.example/x", "http://", "http:// a.example/",
    "https://a.example/\r\nX-Injected: 1", "x" * 5000, "\x00", "\x7f", "\u202e", "\ufeff", "é" * 300, "re:(", "re:a{1000}{1000}",
    "re:.*", "tag:x,2026:y", "urn:x", "0.0.0.0.1", "::1", "999.1.1.1", "OR", '"', "-", "source:", "debug", "JSON",
    "true", "null", "a/b", "..", "../../etc/passwd", "/absolute/path", "10.0.0.0/33", "10.0.0.0/8", "title: sponsored",
]  # fmt: skip
NO_SURROGATES = st.characters(blacklist_categories=("Cs",))
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, -(10**30), 10**400]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    st.text(NO_SURROGATES, max_size=40),
    st.sampled_from(ODD_STRINGS),
    st.binary(max_size=20),  # YAML !!binary
    st.dates(),  # YAML timestamps
)
KEYS = st.one_of(st.text(NO_SURROGATES, max_size=12), st.integers(-3, 3), st.none(), st.booleans(), st.floats(0, 2))
JUNK = st.recursive(
    LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)

# YAML that a Python value cannot produce: tags, special floats, odd numbers,
# dates that do not exist, aliases (undefined, recursive). Placed into a
# dumped document in place of a marker string.
RAW_YAML = [
    ".nan", ".inf", "-.inf", "1e400", "-1e400", "0x" + "f" * 40, "0o777", "1_000", "0b101", "1:30", "!!binary aGVsbG8=",
    "!!binary '%%%'", "!!timestamp 2001-12-14t21:59:43.10-05:00", "2026-02-30", "2026-13-45 10:00:00", "!!set {a, b}",
    "!!omap [{a: 1}]", "!!pairs [{a: 1}]", "~", '"\\0\\x07\\u202e"', "!!float nan", "!!float x", "!!int 9" + "9" * 40,
    "!!int x", "*nowhere", "&r [*r]", "!!python/object/apply:os.system [echo]", "!unknown x", "!!str", "!!null ''",
    "{? [1, 2] : 3}", "{a: 1, a: 2}", "[&x a, *x, *x]", "!!bool maybe", "!!timestamp x", "!!int ''", "!!float ''", "'it''s'", '"\\uD800"',
]  # fmt: skip
RAW_MARK = "RAWYAML{}MARK"


class Doc:
    """A document being built: its data, the raw YAML to splice in, and
    whether anything in it was drawn from the junk."""

    def __init__(self) -> None:
        self.raw: list[str] = []
        self.junk_at: set[str] = set()  # where junk went: a top-level key, or "feed #N"

    def junk(self, draw: st.DrawFn, where: str) -> Any:
        self.junk_at.add(where)
        if draw(st.integers(0, 4)) == 0:
            self.raw.append(draw(st.sampled_from(RAW_YAML)))
            return RAW_MARK.format(len(self.raw) - 1)
        return draw(JUNK)

    def dump(self, draw: st.DrawFn, data: Any) -> str:
        flow = draw(st.sampled_from([False, None, True]))
        try:
            text = yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()), default_flow_style=flow)
        except yaml.YAMLError:  # a value YAML cannot write (e.g. a control character in a key): write it as text
            text = yaml.safe_dump(repr(data))
        for index, raw in enumerate(self.raw):
            text = text.replace(RAW_MARK.format(index), raw)
        return text


# --- config.yaml -----------------------------------------------------------------------------

D = ["90s", "15m", "2h", "1d", "1.5h"]
VALID: dict[str, dict[str, list[Any]]] = {
    "http": {
        "host": ["127.0.0.1", "0.0.0.0", "::1", "localhost", "news.example"], "port": [0, 8080, 65535],
        "base_url": ["http://127.0.0.1:8080/", "https://news.example/feeds"], "threads": [1, 4, 64],
        "max_connections": [16, 1000], "request_timeout": ["10s", "1m"], "idle_timeout": ["30s", "1h"],
    },
    "polling": {
        "interval": D, "min_interval": ["1s", "10m"], "max_interval": ["1d", "365d"], "jitter": [0, 0.1, 0.5],
        "adaptive": [True, False], "workers": [1, 8], "per_host": [1, 2], "connect_timeout": ["10s"],
        "timeout": ["30s", "1m"], "deadline": ["60s", "1h"], "max_bytes": ["10MB", 1000, "1GB"], "max_redirects": [0, 5],
        "retry_after_max": D, "user_agent": ["aggregator/1 (+https://x.example)"],
        "private_networks": [[], ["10.0.0.0/8", "::1/128"]], "parse_workers": [0, 2], "parse_timeout": ["30s"],
        "parse_recycle": [1, 200], "dispatch_every": ["5s", "50ms"], "shutdown_timeout": ["20s"],
    },
    "output": {
        "title": ["Latest", "Nouvelles — été"], "subtitle": ["x"], "id": ["tag:news.example,2026:latest"],
        "entries": [1, 100, 10000], "per_source": [10], "backfill": [0, 10], "dir": ["public", "/srv/www"],
        "debounce": ["0s", "5s"], "max_age": [0, "5m"],
    },
    "retention": {"days": [90, 0.5, 36500], "batch": [1, 500]},
    "logging": {"level": ["debug", "INFO"], "format": ["text", "json"]},
    "stories": {"enabled": [True, False], "window": ["48h", "2d"], "threshold": [0.22, 1]},
}  # fmt: skip
VALID_TOP: dict[str, list[Any]] = {
    "database": ["aggregator.db", "state/x.db"],
    "feeds_dir": ["feeds"],
    "filters": [{"block": [{"title": "sponsored"}], "keep": [{"text": "re:kurd(istan)?"}]}, {}, None],
    "tags": [{"world": {"filters": {"block": [{"category": ["sport", "football"]}]}}}, {}],
    "searches": [[{"name": "kurdistan", "query": "kurdistan OR erbil -football", "tags": ["world"]}], []],
}


@st.composite
def config_documents(draw: st.DrawFn) -> tuple[str, Doc]:
    doc = Doc()
    data: dict[Any, Any] = {}
    for top in draw(st.lists(st.sampled_from([*VALID, *VALID_TOP]), unique=True, max_size=8)):
        if top in VALID:
            section: dict[Any, Any] = {}
            for key in draw(st.lists(st.sampled_from(sorted(VALID[top])), unique=True, max_size=6)):
                section[key] = copy.deepcopy(draw(st.sampled_from(VALID[top][key])))
            data[top] = section
        else:
            data[top] = copy.deepcopy(draw(st.sampled_from(VALID_TOP[top])))  # mutated below
    for _ in range(draw(st.integers(0, 3))):  # junk: a value, a section, or an unknown key
        kind = draw(st.sampled_from(["value", "value", "section", "unknown", "nested"]))
        top = draw(st.sampled_from([*VALID, *VALID_TOP]))
        if kind == "value" and top in VALID:
            data.setdefault(top, {})
            if isinstance(data[top], dict):
                data[top][draw(st.sampled_from(sorted(VALID[top])))] = doc.junk(draw, top)
        elif kind == "unknown":
            where = draw(st.sampled_from([None, top]))
            key = draw(st.text("abcxyz_-", min_size=1, max_size=10))
            if where is None and key not in VALID and key not in VALID_TOP:
                data[key] = doc.junk(draw, key)
            elif where is not None and isinstance(data.get(where, {}), dict):
                data.setdefault(where, {})[key] = doc.junk(draw, where)
        elif kind == "nested" and top in ("tags", "searches", "filters"):
            template = {"tags": {"world": {"filters": doc.junk(draw, top)}},
                        "searches": [{"name": doc.junk(draw, top), "query": doc.junk(draw, top)}],
                        "filters": {"block": [doc.junk(draw, top)], "keep": doc.junk(draw, top)}}[top]
            data[top] = template
        else:
            data[top] = doc.junk(draw, top)
    if draw(st.integers(0, 9)) == 0:  # the document itself is junk: any key may be named
        return doc.dump(draw, doc.junk(draw, "*")), doc
    return doc.dump(draw, data), doc


WHOLE_FILE = ("invalid YAML", "expected a mapping of settings at the top level", "nested too deeply", "not UTF-8",
              "refused: its aliases")


def junk_in(*where: str) -> Doc:
    """A Doc for a hand-written example: junk at these places."""
    doc = Doc()
    doc.junk_at.update(where)
    return doc


def _check_config(path: Path, doc: Doc | None) -> None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert message, "an empty error"
        for line in message.splitlines():
            assert line.startswith(f"{path}:"), line  # names the file
            assert len(line) <= MAX_LINE, f"an error line of {len(line):,} characters: {line[:300]}…"
            if doc is None or "*" in doc.junk_at or any(phrase in line for phrase in WHOLE_FILE):
                continue
            # ...and the setting, which is one the junk went into
            where = line[len(f"{path}: ") :].split(":", 1)[0].split(".", 1)[0]
            assert where in doc.junk_at, (line, doc.junk_at)
        return
    assert isinstance(config, Config)
    settings = config.settings
    polling = settings.polling
    for value in (polling.interval, polling.min_interval, polling.max_interval, polling.jitter, polling.timeout,
                  polling.deadline, settings.retention.days, settings.output.debounce, settings.http.idle_timeout):
        assert math.isfinite(value) and value >= 0
    assert polling.min_interval <= polling.max_interval
    assert 0 <= settings.http.port <= 65535 and 1 <= settings.output.entries <= 10000


@given(config_documents())
@example(("polling:\n  interval: .nan\n", junk_in("polling")))
@example(("filters: {1: x, a: y}\n", junk_in("filters")))
@example(("output: {title: '" + "x" * 5000 + "'}\n", junk_in("output")))
@example(("http: {base_url: '" + "x" * 5000 + "'}\n", junk_in("http")))
def test_config_is_valid_or_a_clean_error_naming_file_and_setting(document: tuple[str, Doc]) -> None:
    text, doc = document
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(text, encoding="utf-8")
        if not doc.junk_at:
            load_config(path)  # only valid values: it loads
            return
        _check_config(path, doc)


# --- feeds/*.yaml ------------------------------------------------------------------------------


def _assert_one_line_titles(feeds: list[Subscription]) -> None:
    """Titles and tags reach log lines and terminals: one line each, no control characters."""
    for sub in feeds:
        for value in (sub.title or "", *sub.tags):
            assert len(value.splitlines()) <= 1 and not any(unicodedata.category(c) == "Cc" for c in value), repr(value)
        assert sub.title is None or len(sub.title) <= 300

ENTRY_FIELDS: dict[str, list[Any]] = {
    "title": ["A", "Nouvelles — été", 42], "tags": ["europe", ["a", "b c"], []], "interval": D,
    "enabled": [True, False], "cluster": [True], "full_text": [False, True], "backfill": [0, 10, None],
    "user_agent": ["reader/1.0"], "headers": [{"X-Api-Key": "abc"}, {}, None],
    "filters": [{"block": [{"title": "sponsored"}]}, None],
}  # fmt: skip


@st.composite
def feeds_files(draw: st.DrawFn) -> tuple[str, Doc, set[str], bool]:
    """(YAML text, its Doc, the URLs of its good entries, whether its header is junk)."""
    doc = Doc()
    good: set[str] = set()
    entries: list[Any] = []
    for index in range(draw(st.integers(0, 8))):
        url = f"https://good{index}.example/feed"
        if draw(st.booleans()):  # a good entry
            good.add(url)
            if draw(st.booleans()):
                entries.append(url)
            else:
                fields = draw(st.lists(st.sampled_from(sorted(ENTRY_FIELDS)), unique=True, max_size=4))
                values = {f: copy.deepcopy(draw(st.sampled_from(ENTRY_FIELDS[f]))) for f in fields}
                entries.append({"url": url, **values})
            continue
        where = f"feed #{index + 1}"
        kind = draw(st.sampled_from(["field", "url", "unknown", "whole"]))
        if kind == "field":
            entries.append({"url": url, draw(st.sampled_from(sorted(ENTRY_FIELDS))): doc.junk(draw, where)})
        elif kind == "url":
            entries.append({"url": doc.junk(draw, where), "title": "t"})
        elif kind == "unknown":
            entries.append({"url": url, draw(st.text(NO_SURROGATES, max_size=8)): doc.junk(draw, where)})
        else:
            entries.append(doc.junk(draw, where))
    header: dict[Any, Any] = {}
    header_junk = False
    if draw(st.booleans()):
        header["tags"] = draw(st.sampled_from([["world"], "world", []]))
    if draw(st.booleans()):
        header["interval"] = draw(st.sampled_from(D))
    if draw(st.integers(0, 4)) == 0:
        header_junk = True
        header[draw(st.sampled_from(["tags", "interval", "colour"]))] = doc.junk(draw, "header")
    header["feeds"] = entries
    if not header_junk and len(header) == 1 and draw(st.booleans()):
        return doc.dump(draw, entries), doc, good, header_junk  # a bare list is accepted too
    return doc.dump(draw, header), doc, good, header_junk


@given(feeds_files())
@example(('feeds:\n  - url: "http://[::1/x"\n  - https://good1.example/feed\n', junk_in("feed #1"),
          {"https://good1.example/feed"}, False))
@example(("feeds:\n  - {url: https://good0.example/feed, filters: {1: x, a: y}}\n  - https://good1.example/feed\n",
          junk_in("feed #1"), {"https://good1.example/feed"}, False))
def test_a_bad_entry_never_loses_the_others(document: tuple[str, Doc, set[str], bool]) -> None:
    text, doc, good, header_junk = document
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "world.yaml"
        path.write_text(text, encoding="utf-8")
        result = load_yaml_feeds(path)
    for error in result.errors:
        for line in error.splitlines():
            assert line.startswith(f"{path}"), line
            assert len(line) <= MAX_LINE, f"an error line of {len(line):,} characters: {line[:300]}…"
    if result.failed_files:
        # the file as a whole was unusable: only junk in its header, or raw YAML, may do that
        assert header_junk or doc.raw, result.errors
        assert result.feeds == [] and len(result.errors) == 1
        return
    loaded = {sub.url for sub in result.feeds}
    assert good <= loaded, (good - loaded, result.errors)
    _assert_one_line_titles(result.feeds)
    entry_errors = [e for e in result.errors if re.match(re.escape(f"{path}: feed #") + r"\d+", e)]
    assert len(entry_errors) == len(result.errors), result.errors  # every error names its entry
    for error in entry_errors:
        number = int(re.match(re.escape(f"{path}: feed #") + r"(\d+)", error).group(1))  # type: ignore[union-attr]
        assert f"feed #{number}" in doc.junk_at, (error, doc.junk_at)  # ...and it is an entry with junk in it


@given(st.binary(max_size=3000), st.sampled_from(["a.yaml", "a.opml"]))
def test_a_file_of_raw_bytes_is_loaded_or_reported_and_the_other_files_load(body: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        feeds = Path(tmp)
        (feeds / name).write_bytes(body)
        (feeds / "b.yaml").write_text("feeds:\n  - https://good.example/feed\n")
        (feeds / "c.opml").write_text(
            '<opml version="2.0"><body><outline type="rss" text="C" xmlUrl="https://c.example/rss"/></body></opml>'
        )
        result = load_subscriptions(feeds)
    assert {"https://good.example/feed", "https://c.example/rss"} <= {s.url for s in result.feeds}, result.errors
    for error in result.errors:
        assert error.startswith(f"{feeds}/{name}"), error
        assert all(len(line) <= MAX_LINE for line in error.splitlines())


# --- feeds/*.opml ------------------------------------------------------------------------------

XML_ODD = ["", " ", "&amp;", "&lt;b&gt;", "é", "\u202e", "&#0;", "&#xD800;", "&#65;", "&bogus;", "x" * 3000, "a/b",
           "News / World", "javascript:alert(1)", "http://[::1/", "http://example.com:abc/rss", "ftp://a.example/",
           "a&#10;2026-01-01 ERROR forged", "&#x1b;[31mred", "&#x2028;", "&#9;tab&#13;"]


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;") if "&" not in value[:1] else value


@st.composite
def opml_files(draw: st.DrawFn) -> tuple[bytes, set[str]]:
    """(an OPML document, the URLs of its good outlines)."""
    good: set[str] = set()
    counter = iter(range(10_000))

    def outline(depth: int) -> str:
        n = next(counter)
        kind = draw(st.sampled_from(["good", "good", "bad", "folder", "junk"] if depth < 4 else ["good", "bad"]))
        text = draw(st.sampled_from([*XML_ODD, f"Feed {n}"]))
        if kind == "good":
            url = f"https://good{n}.example/rss"
            good.add(url)
            extra = draw(st.sampled_from(["", ' type="rss"', f' title="{_attr(text)}"', ' category="/a/b,c"']))
            return f'<outline text="{_attr(text)}" xmlUrl="{url}"{extra}/>'
        if kind == "bad":
            return f'<outline text="t" xmlUrl="{_attr(draw(st.sampled_from(XML_ODD)))}"/>'
        if kind == "junk":
            return draw(st.sampled_from(["<outline/>", "<outline xmlUrl=''/>", "<!-- x -->", "<![CDATA[<outline>]]>",
                                         "<foo xmlUrl='https://x.example/'/>", "text", "&amp;"]))
        children = "".join(outline(depth + 1) for _ in range(draw(st.integers(0, 3))))
        return f'<outline text="{_attr(text)}">{children}</outline>'

    body = "".join(outline(0) for _ in range(draw(st.integers(0, 6))))
    head = draw(st.sampled_from(["", "<head><title>t</title></head>", "<head><title>&amp;</title></head>"]))
    document = f'<opml version="{draw(st.sampled_from(["1.0", "2.0", "", "x"]))}">{head}<body>{body}</body></opml>'
    declaration = draw(st.sampled_from(['<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-8"?>', "",
                                        '<?xml version="1.0" encoding="iso-8859-1"?>', "\ufeff"]))
    encoding = "iso-8859-1" if "iso-8859-1" in declaration else "utf-8"
    raw = (declaration + document).encode(encoding, "xmlcharrefreplace")
    if draw(st.integers(0, 5)) == 0:  # damage: a cut or a flipped byte
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :] if draw(st.booleans()) else raw[:at]
        good = set()  # nothing is promised of a damaged file, except that it does not raise
    return raw, good


@given(opml_files())
def test_opml_outlines_load_or_are_reported_one_by_one(document: tuple[bytes, set[str]]) -> None:
    raw, good = document
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "subs.opml"
        path.write_bytes(raw)
        result = load_opml_feeds(path)
    for error in result.errors:
        assert error.startswith(f"{path}: "), error
        assert len(error) <= MAX_LINE, error[:300]
        if not result.failed_files:
            assert re.match(re.escape(f"{path}: outline #") + r"\d+: xmlUrl: ", error), error
    if good and not result.failed_files:
        assert good <= {s.url for s in result.feeds}, (good, result.errors)
    _assert_one_line_titles(result.feeds)
