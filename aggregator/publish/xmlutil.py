"""Escaping for the XML and HTML we write. Every value from a feed goes
through one of these; characters XML cannot carry are dropped first."""

from __future__ import annotations

from aggregator.sanitize import strip_control

_TEXT = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})
_ATTR = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"})


def text(value: object) -> str:
    """Element content."""
    return strip_control(str(value)).translate(_TEXT) if value is not None else ""


def attr(value: object) -> str:
    """Attribute value (double- or single-quoted)."""
    return strip_control(str(value)).translate(_ATTR) if value is not None else ""
