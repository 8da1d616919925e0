"""Settings (config.yaml), validated with pydantic: every error names the
file and the setting and says what was expected (aggregator.validation)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from aggregator import PROJECT_URL, __version__
from aggregator.filters import RuleSet, compile_rules
from aggregator.query import Query
from aggregator.query import parse as parse_query
from aggregator.validation import (
    ConfigError,
    Count,
    Flag,
    HeaderValue,
    HttpUrl,
    Interval,
    as_tag,
    duration,
    format_errors,
    integer,
    number,
    read_yaml,
    size,
    text,
    title_text,
    valid_host,
)

# --- config.yaml ----------------------------------------------------------------

DEFAULT_PRIVATE_NETWORKS = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7", "fe80::/10", "::ffff:0:0/96",
]  # fmt: skip
DAY = 86400.0


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, BeforeValidator(integer(0, 65535))] = 8080  # 0: any free port (tests)
    base_url: HttpUrl | None = None  # default: http://<host>:<port>/
    threads: Annotated[int, BeforeValidator(integer(1, 64))] = 4
    # Hostile clients (README "Limits and safety"): see aggregator/web.py.
    max_connections: Annotated[int, BeforeValidator(integer(16, 100_000))] = 1000
    # A request's line and headers must arrive within this of their first byte.
    request_timeout: Annotated[float, BeforeValidator(duration(1, 300))] = 10
    # No byte either way on a connection for this long closes it.
    idle_timeout: Annotated[float, BeforeValidator(duration(1, 3600))] = 30

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> str:
        if not isinstance(value, str) or not valid_host(value.strip()):
            raise ValueError(
                f"expected an IP address or host name to listen on (e.g. 127.0.0.1 or 0.0.0.0), got {value!r}"
            )
        return value.strip()

    @property
    def public_base_url(self) -> str:
        url = self.base_url or f"http://{self.host}:{self.port}/"
        return url if url.endswith("/") else url + "/"


class PollingSettings(_Section):
    interval: Interval = 30 * 60
    min_interval: Interval = 10 * 60
    max_interval: Interval = 24 * 3600
    jitter: Annotated[float, BeforeValidator(number(0, 0.5))] = 0.1  # fraction of the interval, +/-
    adaptive: Flag = True
    workers: Annotated[int, BeforeValidator(integer(1, 256))] = 8
    per_host: Annotated[int, BeforeValidator(integer(1, 32))] = 2
    connect_timeout: Annotated[float, BeforeValidator(duration(0.1, 600))] = 10
    timeout: Annotated[float, BeforeValidator(duration(0.1, 3600))] = 30  # read timeout: silence between bytes
    deadline: Annotated[float, BeforeValidator(duration(1, 3600))] = 60  # total time for one fetch, redirects included
    max_bytes: Annotated[int, BeforeValidator(size(1000, 1000**3))] = 10 * 1000**2
    max_redirects: Annotated[int, BeforeValidator(integer(0, 30))] = 5
    retry_after_max: Interval | None = None  # default: max_interval
    user_agent: HeaderValue = f"aggregator/{__version__} (+{PROJECT_URL})"
    private_networks: list[str] = Field(default_factory=lambda: list(DEFAULT_PRIVATE_NETWORKS))
    parse_workers: Annotated[int, BeforeValidator(integer(0, 64))] = 0  # 0 = one per CPU core
    parse_timeout: Annotated[float, BeforeValidator(duration(0.1, 3600))] = 30
    # Documents a parse worker handles before it is replaced.
    parse_recycle: Annotated[int, BeforeValidator(integer(1, 1_000_000))] = 200
    dispatch_every: Annotated[float, BeforeValidator(duration(0.05, 3600))] = 5
    # A poller's hold on a feed it polls, renewed while the poll runs; a poller that dies loses it after this.
    lease: Annotated[float, BeforeValidator(duration(10, 3600))] = 60
    shutdown_timeout: Annotated[float, BeforeValidator(duration(0.1, 3600))] = 20

    @field_validator("private_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise ValueError("expected a list of CIDR networks like 10.0.0.0/8")
        for net in value:
            try:
                ipaddress.ip_network(str(net), strict=False)
            except ValueError:
                raise ValueError(f"expected CIDR networks like 10.0.0.0/8, got {net!r}") from None
        return [str(net) for net in value]

    @model_validator(mode="after")
    def _bounds(self) -> PollingSettings:
        if self.min_interval > self.max_interval:
            raise ValueError(
                f"min_interval ({self.min_interval:g}s) must not be longer than max_interval ({self.max_interval:g}s)"
            )
        return self


def _atom_id(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]{1,500}", value):
        raise ValueError(f"expected an absolute URI such as tag:example.com,2026:latest, got {value!r}")
    return value


DEFAULT_SUBTITLE = "The newest stories from all subscribed feeds, without duplicates."


class OutputSettings(_Section):
    title: Annotated[str, BeforeValidator(title_text(200))] = "Latest"
    subtitle: Annotated[str, BeforeValidator(title_text(500))] = DEFAULT_SUBTITLE
    # The permanent Atom feed id; default: a tag: URI from base_url's host.
    id: Annotated[str, BeforeValidator(_atom_id)] | None = None
    entries: Count = 100
    per_source: Count = 10
    # A new feed's first poll: at most this many of its entries reach the outputs.
    backfill: Annotated[int, BeforeValidator(integer(0, 10000))] = 10
    dir: Annotated[str, BeforeValidator(text(1000))] = "public"
    # After a change, wait this long for more before republishing.
    debounce: Annotated[float, BeforeValidator(duration(0, 3600, zero=True))] = 5
    # Cache-Control max-age of the served outputs.
    max_age: Annotated[float, BeforeValidator(duration(0, DAY, zero=True))] = 300


class RetentionSettings(_Section):
    days: Annotated[float, BeforeValidator(number(0, 36500, low_open=True))] = 90
    batch: Annotated[int, BeforeValidator(integer(1, 100_000))] = 500


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class StoriesSettings(_Section):
    """Story clustering: articles of different outlets about one event become one story (DESIGN §4.6)."""

    enabled: Flag = True
    # An article may join a story with a member published this close to it.
    window: Annotated[float, BeforeValidator(duration(3600, 30 * DAY))] = 48 * 3600
    # How similar (0-1) an article must be to a story to join it; higher: fewer, surer merges.
    threshold: Annotated[float, BeforeValidator(number(0.05, 1))] = 0.22


def _rules(scope: str) -> Any:
    def check(value: Any) -> RuleSet:
        if isinstance(value, RuleSet):
            return value
        return compile_rules(value, scope)

    return PlainValidator(check)


def _query(value: Any) -> Query:
    if isinstance(value, Query):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a search query like 'Kurdistan OR Erbil -football', got {value!r}")
    return parse_query(value)


_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def _slug(value: Any) -> str:
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise ValueError(f"expected a name of lower-case letters, digits, - and _ (it becomes a URL), got {value!r}")
    return value


class TagSettings(_Section):
    """Settings of one tag of the subscriptions (`tags: {world: {filters: ...}}`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    filters: Annotated[RuleSet, _rules("tag")] = RuleSet("tag")


class SearchSettings(_Section):
    """A saved search, published as a feed of its own: /search/<name>.atom, .rss, .json, .html."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    name: Annotated[str, BeforeValidator(_slug)]
    query: Annotated[Query, PlainValidator(_query)]
    title: Annotated[str, BeforeValidator(title_text(200))] | None = None
    tags: list[Annotated[str, BeforeValidator(as_tag)]] = Field(default_factory=list)
    filters: Annotated[RuleSet, _rules("search")] = RuleSet("search")


class Settings(_Section):
    database: Annotated[str, BeforeValidator(text(2000))] = "aggregator.db"
    feeds_dir: Annotated[str, BeforeValidator(text(1000))] = "feeds"
    http: HttpSettings = HttpSettings()
    polling: PollingSettings = PollingSettings()
    output: OutputSettings = OutputSettings()
    retention: RetentionSettings = RetentionSettings()
    logging: LoggingSettings = LoggingSettings()
    stories: StoriesSettings = StoriesSettings()
    filters: Annotated[RuleSet, _rules("everything")] = RuleSet("everything")
    tags: dict[Annotated[str, BeforeValidator(as_tag)], TagSettings] = Field(default_factory=dict)
    searches: list[SearchSettings] = Field(default_factory=list)

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    @model_validator(mode="after")
    def _scopes(self) -> Settings:
        """Rule sets know their scope (for `hidden_by`); search names are unique."""
        names = [s.name for s in self.searches]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"searches: the name {duplicated[0]!r} is used twice")
        return self

    def tag_rules(self) -> dict[str, RuleSet]:
        return {tag: replace(s.filters, scope=f"tag:{tag}") for tag, s in self.tags.items() if s.filters}


@dataclass(frozen=True)
class Config:
    """Settings plus where they came from (paths resolved against the file)."""

    settings: Settings
    path: Path | None
    root: Path

    @property
    def is_postgres(self) -> bool:
        return self.settings.database.startswith(("postgresql://", "postgres://"))

    @property
    def database_path(self) -> Path:
        """The SQLite file (for a PostgreSQL URL: a path nothing uses)."""
        return self.root / self.settings.database

    @property
    def database_display(self) -> str:
        """The database as messages name it: never with a password."""
        if self.is_postgres:
            from aggregator.store.postgres import display_url

            return display_url(self.settings.database)
        return str(self.database_path)

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


def load_config(path: str | Path | None = None) -> Config:
    """Load config.yaml. A missing file at the default location means all defaults."""
    explicit = path is not None
    config_path = Path(path) if path is not None else Path("config.yaml")
    if not config_path.exists():
        if explicit:
            raise ConfigError(f"{config_path}: no such file (pass --config PATH to an existing config.yaml)")
        return Config(Settings(), None, Path.cwd())
    data = read_yaml(config_path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{config_path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(str(config_path), exc, Settings)) from None
    except RecursionError:
        raise ConfigError(f"{config_path}: nested too deeply") from None
    return Config(settings, config_path.resolve(), config_path.resolve().parent)
