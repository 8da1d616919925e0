"""The value types of config.yaml and feeds/, and reading their YAML safely.

Every error is one line that says what was expected. Nothing in these files
may crash a command: numbers are finite and within a documented range,
strings that go into an HTTP header are valid header values, URLs have a
valid host and port, and YAML whose aliases would expand past a limit is
refused before it is built.
"""

from __future__ import annotations

import ipaddress
import math
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

from aggregator.errors import ConfigError as ConfigError

# --- value types --------------------------------------------------------------

_DURATION = re.compile(r"\s*(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)\s*", re.I)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE = re.compile(r"\s*(\d{1,15}(?:\.\d{1,9})?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*", re.I)
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}
DURATION_HINT = "a duration like 90s, 15m, 2h or 1d"


def format_duration(seconds: float) -> str:
    """The shortest exact way to write seconds as a setting: 90s, 15m, 2h, 1d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s" if seconds >= 1 else f"{seconds * 1000:g}ms"


def _finite(value: int | float) -> bool:
    """Whole numbers are finite however large; math.isfinite would raise
    OverflowError converting one of 400 digits to a float."""
    return isinstance(value, int) or math.isfinite(value)


def parse_duration(value: Any) -> float:
    """'90s', '15m', '2h', '1d' -> seconds. The unit is required: a bare
    ``30`` could mean seconds or minutes, so it is refused with a hint."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    if isinstance(value, int | float):
        example = f"{value:g}" if _finite(value) and abs(value) < 1e15 else "30"
        raise ValueError(f"expected {DURATION_HINT}, got {value!r} (add a unit: {example}s or {example}m?)")
    text = str(value)
    match = _DURATION.fullmatch(text) if len(text) < 40 else None
    if not match:
        raise ValueError(f"expected {DURATION_HINT}, got {value!r}")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a positive duration, got {value!r}")
    return seconds


def parse_size(value: Any) -> int:
    """'512KB', '10MB' (or a whole number of bytes) -> bytes."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"expected a size like 512KB or 10MB, got {value!r}")
    if isinstance(value, int | float):
        if not _finite(value) or value != int(value):
            raise ValueError(f"expected a size like 512KB or 10MB, got {value!r}")
        if value > 10**15:
            raise ValueError(f"expected a size like 512KB or 10MB, got {value!r} (too large)")
        size = int(value)
    else:
        text = str(value)
        match = _SIZE.fullmatch(text) if len(text) < 40 else None
        if not match:
            raise ValueError(f"expected a size like 512KB or 10MB, got {value!r}")
        unit = match.group(2).lower() if match.group(2) else None
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"expected a positive size, got {value!r}")
    return size


def _format_size(size: int) -> str:
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def duration(low: float, high: float, zero: bool = False) -> Callable[[Any], float]:
    """Validator: a duration setting within [low, high] seconds (``zero``: 0s also allowed)."""

    def check(value: Any) -> float:
        if zero and (value == 0 or (isinstance(value, str) and re.fullmatch(r"\s*0+(\.0*)?\s*[a-z]*\s*", value))):
            return 0.0
        seconds = parse_duration(value)
        if not low <= seconds <= high:
            raise ValueError(
                f"expected a duration from {format_duration(low)} to {format_duration(high)}, got {value!r}"
            )
        return seconds

    return check


def size(low: int, high: int) -> Callable[[Any], int]:
    """Validator: a size setting within [low, high] bytes."""

    def check(value: Any) -> int:
        result = parse_size(value)
        if not low <= result <= high:
            raise ValueError(f"expected a size from {_format_size(low)} to {_format_size(high)}, got {value!r}")
        return result

    return check


def integer(low: int, high: int) -> Callable[[Any], int]:
    """Validator: a whole number within [low, high]; true/false and 4.0 are not numbers here."""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"expected a whole number from {low} to {high}, got {value!r}")
        return value

    return check


def number(low: float, high: float, low_open: bool = False) -> Callable[[Any], float]:
    """Validator: a finite number within [low, high] (``low_open``: low itself excluded)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
            raise ValueError(f"expected a number from {low:g} to {high:g}, got {value!r}")
        if value > high or value < low or (low_open and value == low):
            bound = f"more than {low:g} and at most {high:g}" if low_open else f"from {low:g} to {high:g}"
            raise ValueError(f"expected a number {bound}, got {value!r}")
        return float(value)

    return check


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


Flag = Annotated[bool, BeforeValidator(flag)]

# RFC 9110 field-value: visible ASCII and spaces/tabs inside; no CR, LF or other controls.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# Headers the fetcher owns: a feed's settings may not replace them.
_RESERVED_HEADERS = {
    "host", "content-length", "transfer-encoding", "connection", "accept-encoding", "if-none-match",
    "if-modified-since", "te", "upgrade", "cookie", "user-agent",
}  # fmt: skip


def header_value(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 1024 or not _HEADER_VALUE.fullmatch(value):
        raise ValueError(
            "expected a header value: printable text on one line (no line breaks), at most 1024 characters"
        )
    return value


HeaderValue = Annotated[str, BeforeValidator(header_value)]


def header_name(value: Any) -> str:
    if not isinstance(value, str) or not _HEADER_NAME.fullmatch(value):
        raise ValueError(f"expected an HTTP header name (letters, digits, '-'), got {value!r}")
    if value.lower() in _RESERVED_HEADERS:
        raise ValueError(f"{value!r} is set by the fetcher and cannot be replaced")
    return value


HeaderName = Annotated[str, BeforeValidator(header_name)]
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def text(limit: int) -> Callable[[Any], str]:
    """Validator: a one-line human text (a title): at most ``limit`` characters, no control characters."""

    def check(value: Any) -> str:
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ValueError(f"expected text, got {type(value).__name__}")
        result = str(value).strip()
        if len(result) > limit:
            raise ValueError(f"expected at most {limit} characters, got {len(result)}")
        if _CONTROL.search(result):
            raise ValueError("expected text without control characters")
        return result

    return check


def one_line(value: str) -> str:
    """Text as a title shows it: every run of whitespace one space (line breaks
    too: \\n, \\x85, U+2028), control characters dropped. A title reaches log
    lines and terminals: it must not start a line of its own there."""
    return "".join(c for c in " ".join(value.split()) if unicodedata.category(c) != "Cc")


def title_text(limit: int) -> Callable[[Any], str]:
    """Validator: a title (one line, see one_line) of at most ``limit`` characters."""
    check_text = text(limit)

    def check(value: Any) -> str:
        result = " ".join(check_text(value).split())  # the type, the length and no C0 controls, as written
        if any(unicodedata.category(c) == "Cc" for c in result):
            raise ValueError("expected text without control characters")
        return result

    return check


def as_tag(value: Any) -> str:
    """Tags become URL path segments (/tags/<tag>.atom): lower-case, no slashes."""
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ValueError(f"expected a tag (a word, no '/'), got {value!r}")
    result = re.sub(r"\s+", "-", str(value).strip().lower())
    if not result or "/" in result or "\\" in result or result in (".", "..") or _CONTROL.search(result):
        raise ValueError(f"expected a tag (a word, no '/'), got {value!r}")
    if len(result) > 64:
        raise ValueError(f"expected a tag of at most 64 characters, got {len(result)}")
    return result


Tag = Annotated[str, BeforeValidator(as_tag)]
MAX_URL = 2000
_DNS_NAME = re.compile(r"(?=.{1,253}\.?\Z)(?:[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9_-]{1,63}\.?")


def valid_host(host: str) -> bool:
    """An IP address or a DNS name (not an all-numeric dotted string that is no IP, such as 0.0.0.0.1)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        pass
    return bool(_DNS_NAME.fullmatch(host)) and not re.fullmatch(r"[\d.]+", host)


def redacted(url: str) -> str:
    """A URL as an error message quotes it: without its user:password@."""
    return re.sub(r"//[^/?#]*@", "//", url)


def _http_url(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    result = value.strip()
    shown = redacted(value)
    try:
        parts = urlsplit(result)
        host = parts.hostname
    except ValueError:  # an unclosed [ of an IPv6 host, or a host that NFKC makes invalid
        raise ValueError(f"expected a valid URL in {shown!r}") from None
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        raise ValueError(f"expected a port number from 1 to 65535 in {shown!r}") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise ValueError(f"expected an http:// or https:// URL, got {shown!r}")
    if len(result) > MAX_URL:
        raise ValueError(f"expected a URL of at most {MAX_URL} characters, got {len(result)}")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in result):
        raise ValueError(f"expected a URL without spaces or control characters, got {shown!r}")
    if port == 0:
        raise ValueError(f"expected a port number from 1 to 65535 in {shown!r}")
    if not valid_host(host):
        raise ValueError(f"expected a valid host name in {shown!r}")
    return result


HttpUrl = Annotated[str, BeforeValidator(_http_url)]


def without_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """(URL without 'user:password@', user, password): credentials go to the
    fetcher only; the URL that is stored, logged and published has none."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    public = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return public, unquote(user) or None, unquote(password) if password else None


Interval = Annotated[float, BeforeValidator(duration(1, 365 * 86400))]  # a polling interval: 1s to 365d
Count = Annotated[int, BeforeValidator(integer(1, 10000))]

# libyaml's loader where PyYAML was built with it: ten times faster on a big feeds/ file.
_YAML_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_FILE_BYTES = 50 * 1000**2
# A YAML document is refused when building it would create more values than
# this (aliases may repeat a subtree many times: a 400-byte "billion laughs"
# file expands to billions). 100,000 feeds with a few fields each fit easily.
MAX_YAML_NODES = 2_000_000


def known_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys valid next to the unknown one at loc (for the error hint)."""
    for part in loc[:-1]:
        field_info = model.model_fields.get(str(part))
        annotation = field_info.annotation if field_info else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


MAX_MESSAGE = 300  # characters of one error's message: it quotes what it got, never a whole 100 KB value


def _loc_part(part: int | str) -> str:
    """A key as an error line names it: quoted when it is not plain text, so that
    a key holding a line break or a colon cannot forge a line of its own."""
    if isinstance(part, int) or (part and part.isprintable() and part.strip() == part and ":" not in part):
        return str(part)[:100]
    return repr(part[:100])


def format_errors(where: str, error: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for item in error.errors():
        loc = ".".join(_loc_part(p) for p in item["loc"])
        msg = item["msg"].removeprefix("Value error, ")
        if len(msg) > MAX_MESSAGE:
            msg = msg[: MAX_MESSAGE - 1] + "…"
        if not msg.isprintable():  # a key or value quoted as it was written: one line, always
            msg = "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
        if item["type"] == "extra_forbidden":
            known = known_keys(model, tuple(item["loc"]))
            msg = "unknown setting" + (f" (expected one of: {', '.join(known)})" if known else "")
        elif item["type"] in ("model_type", "model_attributes_type", "dict_type"):
            msg = "expected a mapping of settings"
        lines.append(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}")
    return "\n".join(lines)


def _expanded_size_exceeds(root: yaml.Node, limit: int) -> bool:
    """Would building this node graph create more than ``limit`` values?
    Aliases make one node appear in many places; the expanded size is
    counted once per distinct node (memoised, iteratively: no recursion
    limit), so the check is linear in the document, not in its expansion."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_path: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes and not children_done:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if not children_done:
            if key in on_path:
                return True  # a recursive structure expands without end
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        on_path.discard(key)
        total = 1 + sum(sizes.get(id(child), 0) for child in children)
        if total > limit:
            return True
        sizes[key] = total
    return False


def read_yaml(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES // 1000**2} MB; split it into several files")
    try:
        text_ = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    loader = _YAML_LOADER(text_)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size_exceeds(node, MAX_YAML_NODES):
            raise ConfigError(
                f"{path}: refused: its aliases (*name) would expand to more than {MAX_YAML_NODES:,} values"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date or number libyaml cannot build
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    except (LookupError, AttributeError) as exc:
        # PyYAML's constructors for explicit tags trust the text: `!!bool maybe`
        # raises KeyError, `!!int ''` IndexError, `!!timestamp x` AttributeError.
        raise ConfigError(f"{path}: invalid YAML: a value does not fit its !!tag ({type(exc).__name__})") from None
    finally:
        loader.dispose()
