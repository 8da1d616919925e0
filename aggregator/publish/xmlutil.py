"""Escaping for the XML and HTML we write. Every value from a feed goes
through one of these; characters XML cannot carry are dropped first."""

from __future__ import annotations

from aggregator.sanitize import strip_control

# str.replace chains, not str.translate: translate with a dict runs a Python
# lookup per character and was most of the publishing time.


def text(value: object) -> str:
    """Element content."""
    if value is None:
        return ""
    out = strip_control(str(value)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A parser reads a bare CR as a line feed (XML 1.0 2.11): escaped, an id with one survives as it was.
    return out.replace("\r", "&#13;") if "\r" in out else out


def attr(value: object) -> str:
    """Attribute value (double- or single-quoted)."""
    if value is None:
        return ""
    out = strip_control(str(value)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    out = out.replace('"', "&quot;").replace("'", "&#39;")
    if "\n" in out or "\r" in out or "\t" in out:
        out = out.replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
    return out
