"""Settings (config.yaml) and subscriptions (feeds/*.yaml, feeds/*.opml).

Both are validated with pydantic; every error is turned into one line that
names the file, the entry and the field, and says what was expected.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from aggregator import PROJECT_URL, __version__
from aggregator.model import Subscription
from aggregator.urls import canonical_url


class ConfigError(Exception):
    """A configuration problem a person must fix; the message says where and how."""


# --- value types --------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$", re.I)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.I)
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_duration(value: Any) -> float:
    """'90s', '15m', '2h', '1d' (or a bare number of seconds) -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 90s, 15m, 2h or 1d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"expected a duration like 90s, 15m, 2h or 1d, got {value!r}")
        unit = match.group(2).lower() if match.group(2) else None
        seconds = float(match.group(1)) * _DURATION_UNITS[unit]
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def parse_size(value: Any) -> int:
    """'512KB', '10MB' (or a bare number of bytes) -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like 512KB or 10MB")
    if isinstance(value, (int, float)):
        size = int(value)
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"expected a size like 512KB or 10MB, got {value!r}")
        unit = match.group(2).lower() if match.group(2) else None
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


def _tag(value: Any) -> str:
    """Tags become URL path segments (/tags/<tag>.atom): lower-case, no slashes."""
    text = re.sub(r"\s+", "-", str(value).strip().lower())
    if not text or "/" in text or text in (".", ".."):
        raise ValueError(f"expected a tag (a word, no '/'), got {value!r}")
    return text


Tag = Annotated[str, BeforeValidator(_tag)]


def _http_url(value: Any) -> str:
    text = str(value).strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return text


HttpUrl = Annotated[str, BeforeValidator(_http_url)]

# libyaml's loader where PyYAML was built with it: ten times faster on a big feeds/ file.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- config.yaml ----------------------------------------------------------------

DEFAULT_PRIVATE_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "::ffff:0:0/96",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    base_url: HttpUrl | None = None  # default: http://<host>:<port>/
    threads: int = Field(4, ge=1, le=64)
    # Hostile clients (README "Limits and safety"): see aggregator/web.py.
    max_connections: int = Field(1000, ge=16, le=100_000)
    request_timeout: Duration = Field(10.0, ge=1, le=300)  # request line + headers, from their first byte
    idle_timeout: Duration = Field(30.0, ge=1, le=3600)  # no byte either way on a connection

    @property
    def public_base_url(self) -> str:
        url = self.base_url or f"http://{self.host}:{self.port}/"
        return url if url.endswith("/") else url + "/"


class PollingSettings(_Section):
    interval: Duration = 30 * 60
    min_interval: Duration = 10 * 60
    max_interval: Duration = 24 * 3600
    jitter: float = Field(0.1, ge=0, le=0.5)  # fraction of the interval, +/-
    adaptive: bool = True
    workers: int = Field(8, ge=1, le=256)
    per_host: int = Field(2, ge=1, le=32)
    connect_timeout: Duration = 10
    timeout: Duration = 30  # read timeout: silence between bytes
    deadline: Duration = 60  # total time for one fetch, redirects included
    max_bytes: Size = 10 * 1000**2
    max_redirects: int = Field(5, ge=0, le=30)
    retry_after_max: Duration | None = None  # default: max_interval
    user_agent: str = f"aggregator/{__version__} (+{PROJECT_URL})"
    private_networks: list[str] = Field(default_factory=lambda: list(DEFAULT_PRIVATE_NETWORKS))
    parse_workers: int = Field(0, ge=0, le=64)  # 0 = one per CPU core
    parse_timeout: Duration = 30
    parse_recycle: int = Field(200, ge=1)  # documents a parse worker handles before it is replaced
    dispatch_every: Duration = 5
    shutdown_timeout: Duration = 20

    @field_validator("private_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"expected CIDR networks like 10.0.0.0/8, got {net!r}") from None
        return value

    @model_validator(mode="after")
    def _bounds(self) -> PollingSettings:
        if self.min_interval > self.max_interval:
            raise ValueError(
                f"min_interval ({self.min_interval:g}s) must not be longer than max_interval ({self.max_interval:g}s)"
            )
        return self


class OutputSettings(_Section):
    title: str = "Latest"
    subtitle: str = "The newest stories from all subscribed feeds, without duplicates."
    id: str | None = None  # permanent Atom feed id; default derived from base_url
    entries: int = Field(100, ge=1, le=10000)
    per_source: int = Field(10, ge=1, le=10000)
    dir: str = "public"
    debounce: Duration = 5  # wait this long after a change before republishing
    max_age: Duration = 300  # Cache-Control max-age for served outputs


class RetentionSettings(_Section):
    days: float = Field(90, gt=0)
    batch: int = Field(500, ge=1)


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class Settings(_Section):
    database: str = "aggregator.db"
    feeds_dir: str = "feeds"
    http: HttpSettings = HttpSettings()
    polling: PollingSettings = PollingSettings()
    output: OutputSettings = OutputSettings()
    retention: RetentionSettings = RetentionSettings()
    logging: LoggingSettings = LoggingSettings()


@dataclass(frozen=True)
class Config:
    """Settings plus where they came from (paths resolved against the file)."""

    settings: Settings
    path: Path | None
    root: Path

    @property
    def database_path(self) -> Path:
        return self.root / self.settings.database

    @property
    def feeds_dir(self) -> Path:
        return self.root / self.settings.feeds_dir

    @property
    def output_dir(self) -> Path:
        return self.root / self.settings.output.dir

    @property
    def feed_id_uri(self) -> str:
        """The Atom feed id: configured, else a tag: URI from base_url's host."""
        if self.settings.output.id:
            return self.settings.output.id
        return f"tag:{id_authority(self.settings.http.public_base_url)},2026:latest"


def id_authority(base_url: str) -> str:
    """A tag: URI authority (RFC 4151) from a URL: its host name, or
    'aggregator.invalid' for IP addresses, which are not valid authorities."""
    host = (urlsplit(base_url).hostname or "").lower()
    if not host or re.fullmatch(r"[\d.]+|\[?[0-9a-f:]+\]?", host):
        return "aggregator.invalid"
    return host


def _known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys valid next to the unknown one at loc (for the error hint)."""
    for part in loc[:-1]:
        field_info = model.model_fields.get(str(part))
        annotation = field_info.annotation if field_info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _format_errors(where: str, error: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            known = _known_keys(model, tuple(item["loc"]))
            msg = "unknown setting" + (f" (expected one of: {', '.join(known)})" if known else "")
        lines.append(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}")
    return "\n".join(lines)


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None


def load_config(path: str | Path | None = None) -> Config:
    """Load config.yaml. A missing file at the default location means all defaults."""
    explicit = path is not None
    config_path = Path(path) if path is not None else Path("config.yaml")
    if not config_path.exists():
        if explicit:
            raise ConfigError(f"{config_path}: no such file (pass --config PATH to an existing config.yaml)")
        return Config(Settings(), None, Path.cwd())
    data = _read_yaml(config_path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{config_path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(config_path), exc, Settings)) from None
    return Config(settings, config_path.resolve(), config_path.resolve().parent)


# --- subscriptions ----------------------------------------------------------------


class _FeedEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    title: str | None = None
    tags: list[Tag] = []
    interval: Duration | None = None

    @field_validator("tags", mode="before")
    @classmethod
    def _one_tag(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class _FeedsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[Tag] = []
    interval: Duration | None = None
    feeds: list[Any] = []

    @field_validator("tags", mode="before")
    @classmethod
    def _one_tag(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


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

    def by_url(self, url: str) -> Subscription | None:
        fid = feed_id_for(url)
        return next((s for s in self.feeds if s.feed_id == fid), None)


def _merge_tags(*groups: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in groups:
        for tag in group:
            seen.setdefault(tag, None)
    return tuple(seen)


def load_yaml_feeds(path: Path) -> Subscriptions:
    result = Subscriptions(files=[path])
    try:
        data = _read_yaml(path)
    except ConfigError as exc:
        result.errors.append(str(exc))
        return result
    if data is None:
        return result
    if isinstance(data, list):  # a bare list of feeds is accepted too
        data = {"feeds": data}
    if not isinstance(data, dict):
        result.errors.append(f"{path}: expected a mapping with a 'feeds:' list, got {type(data).__name__}")
        return result
    try:
        header = _FeedsFile.model_validate(data)
    except ValidationError as exc:
        result.errors.append(_format_errors(str(path), exc, _FeedsFile))
        return result
    for index, raw in enumerate(header.feeds):
        if isinstance(raw, str):
            raw = {"url": raw}
        label = f"{path}: feed #{index + 1}"
        if isinstance(raw, dict) and raw.get("url"):
            label += f" ({raw['url']})"
        if not isinstance(raw, dict):
            result.errors.append(f"{label}: expected a mapping with a 'url', got {type(raw).__name__}")
            continue
        try:
            entry = _FeedEntry.model_validate(raw)
        except ValidationError as exc:
            result.errors.append(_format_errors(label, exc, _FeedEntry))
            continue
        result.feeds.append(
            Subscription(
                feed_id=feed_id_for(entry.url),
                url=entry.url,
                title=entry.title,
                tags=_merge_tags(header.tags, entry.tags),
                interval=entry.interval if entry.interval is not None else header.interval,
                source=f"{path.name}#{index + 1}",
            )
        )
    return result


def load_opml_feeds(path: Path) -> Subscriptions:
    result = Subscriptions(files=[path])
    try:
        raw = path.read_bytes()
    except OSError as exc:
        result.errors.append(f"{path}: cannot read: {exc.strerror or exc}")
        return result
    import listparser  # only when there is an OPML file

    parsed = listparser.parse(raw)
    if not parsed.get("version") or (parsed.get("bozo") and not parsed.get("feeds")):
        problem = parsed.get("bozo_exception") or "no <opml> document found"
        result.errors.append(f"{path}: not a valid OPML file ({problem})")
        return result
    for index, item in enumerate(parsed.feeds):
        label = f"{path}: outline #{index + 1}"
        try:
            url = _http_url(item.url)
        except ValueError as exc:
            result.errors.append(f"{label}: xmlUrl: {exc}")
            continue
        tags: list[str] = []
        # Nested outlines become category paths ("News/World"); every level is a tag.
        for path_parts in item.get("categories", []):
            for part in path_parts:
                with contextlib.suppress(ValueError):
                    tags.append(_tag(part))
        for tag in item.get("tags", []):
            with contextlib.suppress(ValueError):
                tags.append(_tag(tag))
        title = item.get("title") or None
        result.feeds.append(
            Subscription(
                feed_id=feed_id_for(url),
                url=url,
                title=title if title and title != url else None,
                tags=_merge_tags(tags),
                source=f"{path.name}#{index + 1}",
            )
        )
    return result


def load_subscriptions(feeds_dir: Path) -> Subscriptions:
    """Every *.yaml, *.yml and *.opml file in feeds_dir, in name order.
    A bad entry or file is reported in ``errors``; everything else loads.
    A feed listed twice keeps its first entry, with the tags of both."""
    result = Subscriptions()
    if not feeds_dir.is_dir():
        result.errors.append(f"{feeds_dir}: no such directory (feeds_dir in config.yaml)")
        return result
    by_id: dict[str, Subscription] = {}
    for path in sorted(feeds_dir.iterdir()):
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            part = load_yaml_feeds(path)
        elif suffix in (".opml", ".xml"):
            part = load_opml_feeds(path)
        else:
            continue
        result.files.extend(part.files)
        result.errors.extend(part.errors)
        for sub in part.feeds:
            if sub.feed_id in by_id:
                first = by_id[sub.feed_id]
                by_id[sub.feed_id] = Subscription(
                    first.feed_id,
                    first.url,
                    first.title or sub.title,
                    _merge_tags(first.tags, sub.tags),
                    first.interval or sub.interval,
                    first.source,
                )
            else:
                by_id[sub.feed_id] = sub
    result.feeds = list(by_id.values())
    return result


# --- writing subscriptions (feeds add / import) -------------------------------------


def append_feed(path: Path, url: str, title: str | None, tags: list[str]) -> None:
    """Add one feed to a YAML subscription file, keeping what is there.

    The file is rewritten through YAML (comments in that one file are lost),
    atomically, so a crash never leaves half a file."""
    data: dict[str, Any] = {"feeds": []}
    if path.exists():
        loaded = _read_yaml(path)
        if isinstance(loaded, list):
            loaded = {"feeds": loaded}
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping with a 'feeds:' list; not changing it")
        data = loaded or {"feeds": []}
        data.setdefault("feeds", [])
    entry: dict[str, Any] = {"url": url}
    if title:
        entry["title"] = title
    if tags:
        entry["tags"] = [_tag(t) for t in tags]
    data["feeds"].append(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
