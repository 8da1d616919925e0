"""HTTP-dates (RFC 9110 5.6.7), for both sides of our HTTP: the fetcher
reads Retry-After, Expires and Date; the web layer reads If-Modified-Since."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime


def parse_http_date(value: str | None) -> datetime | None:
    """An aware UTC datetime, or None when the value is not a date."""
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year or offset of 20 digits
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_http_date(moment: datetime) -> str:
    return email.utils.format_datetime(moment.astimezone(UTC), usegmt=True)
