"""HTML from feeds, made safe (DESIGN §6).

nh3 (ammonia) does the sanitising: an allow-list of tags and attributes, no
script/style content, no event handlers, no style attributes (so no CSS
expressions), only safe URL schemes (no javascript: or data:), relative URLs
resolved against the entry's base. We add two things ammonia does not do:
tracking pixels are removed, and titles are reduced to plain text.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

import nh3

_URL_SCHEMES = {"http", "https", "mailto"}
_CLEAN_CONTENT_TAGS = {
    "script",
    "style",
    "iframe",
    "object",
    "embed",
    "noscript",
    "template",
    "svg",
    "math",
    "title",
    "textarea",
    "select",
}
_TAGS = set(nh3.ALLOWED_TAGS) - {"map", "area"}
_ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
_ATTRIBUTES.setdefault("abbr", set()).add("title")
_ATTRIBUTES.setdefault("time", set()).add("datetime")

# 1x1 images and known beacon hosts: they only tell a tracker that someone read the entry.
# Every pattern here is linear: a tag ends at the next '<' or '>' at the latest
# (ammonia's output escapes both inside attribute values), and no quantified
# part is followed by another that can match the same characters.
_IMG = re.compile(r"<img\b[^<>]*>", re.I)
_TINY = re.compile(r'\b(?:width|height)="(?:0|1)(?:px)?"', re.I)
_SRC = re.compile(r'src="([^"]*)"', re.I)
_BEACON_PARTS = (
    "feeds.feedburner.com/~r/",
    "feedsportal.com",
    "pixel.wp.com",
    "/~/i/",
    "doubleclick.net",
    "stats.wordpress.com",
    "pixel.quantserve.com",
    "www.google-analytics.com",
    "/pixel.gif",
    "/beacon",
)
_WORDPRESS_FEED = "feeds.wordpress.com/"


@lru_cache(maxsize=256)
def _cleaner(base: str | None) -> nh3.Cleaner:
    # One cleaner per base URL: building one is the expensive part, and feeds
    # use a handful of bases (usually just the feed's own URL).
    try:
        return _new_cleaner(base)
    except ValueError:  # a base ammonia cannot resolve against ("//host/x", a lone surrogate): no relative links
        return _new_cleaner(None)


def _new_cleaner(base: str | None) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=_TAGS,
        clean_content_tags=_CLEAN_CONTENT_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer",
        url_relative=("rewrite_with_base", base) if base else "deny",
    )


def _is_tracking_pixel(tag: str) -> bool:
    if len(_TINY.findall(tag)) >= 2:
        return True
    return any(_is_beacon(src.lower()) for src in _SRC.findall(tag))


def _is_beacon(src: str) -> bool:
    """A known tracker's image URL. Substring tests, not one regular
    expression: "feeds.wordpress.com/…/go" written as a pattern nests two
    unbounded runs, which is quadratic on a long src."""
    if any(part in src for part in _BEACON_PARTS):
        return True
    start = src.find(_WORDPRESS_FEED)
    if start < 0:
        return False
    rest = src[start + len(_WORDPRESS_FEED) :]
    return "/go" in rest or "/comments" in rest


# Pixels sized by CSS: ammonia drops the style attribute, and the size with
# it, so they are recognised before cleaning. Tags are matched up to the next
# '<' at most, so the scan stays linear whatever the input.
_RAW_IMG = re.compile(r"<img\b[^<>]*>?", re.I)
_CSS_WIDTH = re.compile(r"\bwidth\s*:\s*[01](?:px)?\s*(?:;|[\"']|$)", re.I)
_CSS_HEIGHT = re.compile(r"\bheight\s*:\s*[01](?:px)?\s*(?:;|[\"']|$)", re.I)


def _is_css_pixel(tag: str) -> bool:
    return "style" in tag.lower() and bool(_CSS_WIDTH.search(tag)) and bool(_CSS_HEIGHT.search(tag))


MAX_HTML = 1_000_000  # characters of one summary or content; ammonia closes what the cut leaves open


def sanitize_html(fragment: str | None, base: str | None) -> str | None:
    """Safe HTML with absolute URLs, or None when nothing visible is left."""
    if not fragment:
        return None
    fragment = fragment[:MAX_HTML]
    if "style" in fragment and "<img" in fragment:
        fragment = _RAW_IMG.sub(lambda m: "" if _is_css_pixel(m.group(0)) else m.group(0), fragment)
    clean = _cleaner(base).clean(strip_control(fragment))
    if "<img" in clean:
        clean = _IMG.sub(lambda m: "" if _is_tracking_pixel(m.group(0)) else m.group(0), clean)
    clean = clean.strip()
    return clean or None


_TEXT_CLEANER = nh3.Cleaner(tags=set(), clean_content_tags=_CLEAN_CONTENT_TAGS, attributes={})
_WS = re.compile(r"\s+")
# A tag ends at the next '<' or '>': "[^>]*>" would rescan the rest of the text
# from every "<br" of a title made of "<br<br<br…" (quadratic).
_BLOCK_END = re.compile(r"<(?:br|hr|/p|/div|/li|/h[1-6]|/tr|/td|/blockquote)\b[^<>]*>", re.I)


def to_text(value: str | None, is_html: bool = True) -> str:
    """Plain text for titles and names: markup dropped, entities decoded,
    whitespace collapsed."""
    if not value:
        return ""
    if is_html and ("<" in value or "&" in value):
        value = html.unescape(_TEXT_CLEANER.clean(_BLOCK_END.sub(" ", value)))
    return strip_control(_WS.sub(" ", value)).strip()


# Characters XML 1.0 forbids, and C1 controls: they break every output format.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ufffe\uffff\ud800-\udfff]")


def strip_control(value: str) -> str:
    return _CONTROL.sub("", value)
