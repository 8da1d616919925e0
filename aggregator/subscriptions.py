"""Subscriptions: feeds/*.yaml and feeds/*.opml, the source of truth for
what is polled (DESIGN §2). Loading never raises: a bad entry or file is
reported (file, entry, field, what was expected) and every other feed loads;
a file that cannot be used at all keeps its last good version."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainValidator, ValidationError, field_validator

from aggregator.config import PollingSettings
from aggregator.filters import RuleSet, compile_rules
from aggregator.model import FetchOptions, Subscription
from aggregator.urls import canonical_url
from aggregator.validation import (
    MAX_FILE_BYTES,
    ConfigError,
    Flag,
    HeaderName,
    HeaderValue,
    HttpUrl,
    Interval,
    Tag,
    as_tag,
    format_duration,
    format_errors,
    integer,
    one_line,
    read_yaml,
    redacted,
    title_text,
    without_userinfo,
)

# --- subscriptions ----------------------------------------------------------------

MAX_TAGS = 50
MAX_HEADERS = 20


def _tag_list(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) > MAX_TAGS:
        raise ValueError(f"expected at most {MAX_TAGS} tags, got {len(value)}")
    return value


def _feed_rules(value: Any) -> RuleSet:
    return value if isinstance(value, RuleSet) else compile_rules(value, "feed")


class _FeedEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    url: HttpUrl
    title: Annotated[str, BeforeValidator(title_text(300))] | None = None
    tags: Annotated[list[Tag], BeforeValidator(_tag_list)] = []
    interval: Interval | None = None
    enabled: Flag = True
    cluster: Flag = True
    full_text: Flag = False
    backfill: Annotated[int, BeforeValidator(integer(0, 10000))] | None = None
    user_agent: HeaderValue | None = None
    headers: dict[HeaderName, HeaderValue] = {}
    filters: Annotated[RuleSet, PlainValidator(_feed_rules)] = RuleSet("feed")

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, value: Any) -> Any:
        if isinstance(value, dict) and len(value) > MAX_HEADERS:
            raise ValueError(f"expected at most {MAX_HEADERS} headers, got {len(value)}")
        if value is not None and not isinstance(value, dict):
            raise ValueError("expected a mapping of header names to values, e.g. {X-Api-Key: abc}")
        return value or {}


class _FeedsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: Annotated[list[Tag], BeforeValidator(_tag_list)] = []
    interval: Interval | None = None
    feeds: list[Any] = []


def feed_id_for(url: str) -> str:
    """A stable feed id from the configured URL. Based on the canonical form so
    that editing http->https or adding www. keeps the feed's history."""
    # Never fails: a URL canonical_url cannot read (validation rejects those
    # before they get here) still gets an id of its own.
    key = canonical_url(url) or url.strip().lower()
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@dataclass
class Subscriptions:
    feeds: list[Subscription] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # one line per bad file or entry
    files: list[Path] = field(default_factory=list)
    # Files that could not be read as a whole, by name: their feeds keep their
    # last known settings rather than being unsubscribed (a typo must not drop them).
    failed_files: list[str] = field(default_factory=list)

    def by_url(self, url: str) -> Subscription | None:
        fid = feed_id_for(url)
        return next((s for s in self.feeds if s.feed_id == fid), None)


def _merge_tags(*groups: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for tag in group:
            seen.setdefault(tag, None)
    return tuple(seen)


def _subscription(entry: _FeedEntry, tags: Iterable[str], interval: float | None, source: str) -> Subscription:
    url, user, password = without_userinfo(entry.url)
    options = FetchOptions(
        username=user, password=password, headers=tuple(entry.headers.items()), user_agent=entry.user_agent
    )
    return Subscription(
        feed_id=feed_id_for(url),
        url=url,
        title=entry.title or None,
        tags=_merge_tags(tags),
        interval=interval,
        source=source,
        enabled=entry.enabled,
        cluster=entry.cluster,
        full_text=entry.full_text,
        backfill=entry.backfill,
        fetch=options,
        filters=replace(entry.filters, scope=f"feed:{url}") if entry.filters else None,
    )


def _entry_label(path: Path, index: int, raw: Any) -> str:
    label = f"{path}: feed #{index + 1}"
    if isinstance(raw, dict) and isinstance(raw.get("url"), str):
        url = raw["url"][:200]
        try:
            public = without_userinfo(url)[0]
        except ValueError:  # not even a URL (an unclosed [ of an IPv6 host, say): its own error says so
            public = redacted(url)
        label += f" ({public})" if public.isprintable() else f" ({public!r})"
    return label


class _FileUnusable(Exception):
    """The whole file could not be used (as opposed to one bad entry)."""


def load_yaml_feeds(path: Path) -> Subscriptions:
    result = Subscriptions(files=[path])
    try:
        data = read_yaml(path)
        if data is None:
            return result
        if isinstance(data, list):  # a bare list of feeds is accepted too
            data = {"feeds": data}
        if not isinstance(data, dict):
            raise _FileUnusable(f"{path}: expected a mapping with a 'feeds:' list, got {type(data).__name__}")
        try:
            header = _FeedsFile.model_validate(data)
        except ValidationError as exc:
            raise _FileUnusable(format_errors(str(path), exc, _FeedsFile)) from None
    except (ConfigError, _FileUnusable) as exc:
        result.errors.append(str(exc))
        result.failed_files.append(path.name)
        return result
    for index, raw in enumerate(header.feeds):
        if isinstance(raw, str):
            raw = {"url": raw}
        label = _entry_label(path, index, raw)
        if not isinstance(raw, dict):
            result.errors.append(f"{label}: expected a mapping with a 'url', got {type(raw).__name__}")
            continue
        try:
            entry = _FeedEntry.model_validate(raw)
        except ValidationError as exc:
            result.errors.append(format_errors(label, exc, _FeedEntry))
            continue
        interval = entry.interval if entry.interval is not None else header.interval
        result.feeds.append(_subscription(entry, [*header.tags, *entry.tags], interval, f"{path.name}#{index + 1}"))
    return result


_XML_ENCODING = re.compile(rb"""^<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._-]{1,40})["']""")


def decode_xml(raw: bytes) -> str:
    """XML bytes to text by the XML rules: a BOM, else the declared encoding,
    else UTF-8. Raises ValueError naming the encoding when the bytes do not fit."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if raw.startswith(bom):
            return raw[len(bom) :].decode(codec)
    match = _XML_ENCODING.match(raw.lstrip()[:300])
    codec = match.group(1).decode("ascii") if match else "utf-8"
    try:
        return raw.decode(codec)
    except LookupError:
        raise ValueError(f"unknown encoding {codec!r} in the XML declaration") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not {codec} text ({exc.reason} at byte {exc.start})") from None


def load_opml_feeds(path: Path) -> Subscriptions:
    result = Subscriptions(files=[path])

    def unusable(message: str) -> Subscriptions:
        result.errors.append(message)
        result.failed_files.append(path.name)
        return result

    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return unusable(f"{path}: cannot read: {exc.strerror or exc}")
    if len(raw) > MAX_FILE_BYTES:
        return unusable(f"{path}: larger than {MAX_FILE_BYTES // 1000**2} MB")
    try:
        document = decode_xml(raw)
    except ValueError as exc:
        return unusable(f"{path}: not a valid OPML file ({exc})")
    # The text is decoded already: the declaration must not make the parser decode it again.
    document = re.sub(r"^\s*<\?xml[^>]{0,300}\?>", '<?xml version="1.0"?>', document, count=1)
    import listparser  # only when there is an OPML file

    try:
        parsed = listparser.parse(document)
    except Exception as exc:  # a broken file must not stop the others (listparser is not ours)
        return unusable(f"{path}: not a valid OPML file ({type(exc).__name__}: {str(exc)[:200]})")
    if not parsed.get("version") or (parsed.get("bozo") and not parsed.get("feeds")):
        problem = parsed.get("bozo_exception") or "no <opml> document found"
        return unusable(f"{path}: not a valid OPML file ({problem})")
    for index, item in enumerate(parsed.feeds):
        label = f"{path}: outline #{index + 1}"
        raw_title = item.get("title") or None
        entry_data: dict[str, Any] = {"url": item.get("url")}
        tags: list[str] = []
        # Nested outlines become category paths ("News/World"); every level is a tag.
        for part in [p for path_parts in item.get("categories", []) for p in path_parts] + item.get("tags", []):
            with contextlib.suppress(ValueError):
                tags.append(as_tag(part))
        try:
            entry = _FeedEntry.model_validate(entry_data)
        except ValidationError as exc:
            result.errors.append(format_errors(label, exc, _FeedEntry).replace(f"{label}: url:", f"{label}: xmlUrl:"))
            continue
        # An outline's text is taken as it is (no error for a file another reader wrote), made one line.
        title = one_line(raw_title)[:300] or None if isinstance(raw_title, str) and raw_title != entry.url else None
        entry = entry.model_copy(update={"title": title})
        result.feeds.append(_subscription(entry, tags[:MAX_TAGS], None, f"{path.name}#{index + 1}"))
    return result


def load_subscriptions(feeds_dir: Path, previous: Subscriptions | None = None) -> Subscriptions:
    """Every *.yaml, *.yml and *.opml file in feeds_dir, in name order.

    A bad entry or file is reported in ``errors``; everything else loads. A
    feed listed twice keeps its first entry, with the tags of both. A file
    that cannot be used at all (a YAML syntax error, say) keeps its feeds from
    ``previous`` (the last good load, in a running service); without one, its
    name is in ``failed_files`` so that its feeds are left as they are."""
    result = Subscriptions()
    try:
        paths = sorted(feeds_dir.iterdir()) if feeds_dir.is_dir() else None
    except OSError as exc:
        paths = None
        result.errors.append(f"{feeds_dir}: cannot list the directory: {exc.strerror or exc}")
    if paths is None:
        if not result.errors:
            result.errors.append(f"{feeds_dir}: no such directory (feeds_dir in config.yaml)")
        result.failed_files.append("*")
        return result
    by_id: dict[str, Subscription] = {}
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            part = load_yaml_feeds(path)
        elif suffix in (".opml", ".xml"):
            part = load_opml_feeds(path)
        else:
            continue
        result.files.extend(part.files)
        result.errors.extend(part.errors)
        feeds = part.feeds
        if part.failed_files:
            kept = [s for s in previous.feeds if s.source_file == path.name] if previous is not None else []
            if kept:
                feeds = kept
                result.errors.append(f"{path}: keeping the last good version of this file ({len(kept)} feeds)")
            else:
                result.failed_files.append(path.name)
        for sub in feeds:
            first = by_id.get(sub.feed_id)
            if first is None:
                by_id[sub.feed_id] = sub
                continue
            by_id[sub.feed_id] = Subscription(
                feed_id=first.feed_id,
                url=first.url,
                title=first.title or sub.title,
                tags=_merge_tags(first.tags, sub.tags),
                interval=first.interval or sub.interval,
                source=first.source,
                enabled=first.enabled,
                cluster=first.cluster,
                full_text=first.full_text,
                backfill=first.backfill,
                fetch=first.fetch if not first.fetch.empty else sub.fetch,
                filters=first.filters or sub.filters,
            )
    result.feeds = list(by_id.values())
    return result


def interval_notes(subs: Sequence[Subscription], polling: PollingSettings) -> list[str]:
    """Feed intervals the floor or ceiling overrides, said once per feed."""
    notes = []
    for sub in subs:
        if sub.interval is None:
            continue
        if sub.interval < polling.min_interval:
            notes.append(
                f"{sub.source} ({sub.url}): interval {format_duration(sub.interval)} is shorter than "
                f"polling.min_interval ({format_duration(polling.min_interval)}); the feed is polled every "
                f"{format_duration(polling.min_interval)}"
            )
        elif sub.interval > polling.max_interval:
            notes.append(
                f"{sub.source} ({sub.url}): interval {format_duration(sub.interval)} is longer than "
                f"polling.max_interval ({format_duration(polling.max_interval)}); the feed is polled every "
                f"{format_duration(polling.max_interval)}"
            )
    return notes


# --- writing subscriptions (feeds add / import) -------------------------------------


@dataclass(frozen=True)
class NewFeed:
    url: str
    title: str | None = None
    tags: tuple[str, ...] = ()


def add_feeds(path: Path, feeds: Sequence[NewFeed], on_progress: Callable[[int], None] | None = None) -> None:
    """Add feeds to a YAML subscription file, keeping what is there: read
    once, write once, atomically (a temporary file renamed over the old one),
    so an import of 10,000 feeds takes seconds and a crash never leaves half a
    file. Comments in that one file are lost (it is rewritten through YAML)."""
    data: dict[str, Any] = {"feeds": []}
    if path.exists():
        loaded = read_yaml(path)
        if isinstance(loaded, list):
            loaded = {"feeds": loaded}
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping with a 'feeds:' list; not changing it")
        data = loaded or {"feeds": []}
        if not isinstance(data.setdefault("feeds", []), list):
            raise ConfigError(f"{path}: its 'feeds:' is not a list; not changing it")
    for done, feed in enumerate(feeds, 1):
        entry: dict[str, Any] = {"url": feed.url}
        if feed.title:
            entry["title"] = feed.title
        if feed.tags:
            entry["tags"] = [as_tag(t) for t in feed.tags]
        data["feeds"].append(entry)
        if on_progress is not None and done % 1000 == 0:
            on_progress(done)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    tmp.write_text(yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)


@dataclass
class ImportPlan:
    """What `feeds import` will do with an OPML file's feeds."""

    new: list[NewFeed] = field(default_factory=list)
    already: int = 0  # subscribed in feeds/ already: left as they are
    repeated: int = 0  # listed more than once in the file: one feed, tags combined

    def notes(self) -> str:
        parts = []
        if self.already:
            parts.append(f"{self.already} already subscribed, left as they are")
        if self.repeated:
            parts.append(f"{self.repeated} listed twice in the file, merged with their tags combined")
        return f" ({'; '.join(parts)})" if parts else ""


def configured_url(sub: Subscription) -> str:
    """The URL as a subscription file writes it: with its credentials, if any."""
    if not sub.fetch.username:
        return sub.url
    parts = urlsplit(sub.url)
    userinfo = quote(sub.fetch.username, safe="") + (
        f":{quote(sub.fetch.password, safe='')}" if sub.fetch.password else ""
    )
    return urlunsplit((parts.scheme, f"{userinfo}@{parts.netloc}", parts.path, parts.query, parts.fragment))


def plan_import(incoming: Sequence[Subscription], existing: Sequence[Subscription]) -> ImportPlan:
    """New feeds in file order, each once; nothing already subscribed."""
    known = {s.feed_id for s in existing}
    plan = ImportPlan()
    by_id: dict[str, int] = {}
    for sub in incoming:
        if sub.feed_id in known:
            plan.already += 1
        elif sub.feed_id in by_id:
            plan.repeated += 1
            index = by_id[sub.feed_id]
            first = plan.new[index]
            plan.new[index] = NewFeed(first.url, first.title or sub.title, _merge_tags(first.tags, sub.tags))
        else:
            by_id[sub.feed_id] = len(plan.new)
            plan.new.append(NewFeed(configured_url(sub), sub.title, sub.tags))
    return plan


def append_feed(path: Path, url: str, title: str | None, tags: list[str]) -> None:
    """Add one feed to a YAML subscription file (see add_feeds)."""
    add_feeds(path, [NewFeed(url, title, tuple(tags))])
