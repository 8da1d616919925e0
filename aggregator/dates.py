"""Dates as feeds write them where feedparser cannot read them (DESIGN §3).

feedparser reads RFC 822 dates only with English day and month names, so
"Seg, 24 Set 2018 19:42:40 -0300" (Portuguese) or "Mi, 13 Dez 2023 10:00:00
+0100" (German) came back as no date at all and the entry fell back to the
time we fetched it: a 2018 story then tops the Latest feed. This module reads
RFC 822-like dates in the languages news feeds are written in, with a table
of month names (full, abbreviated, with or without a dot or accents), any day
name, an optional time (24-hour, "h" as separator, AM/PM) and a numeric or
named zone (no zone: UTC). It also reads "2020/1/10 14:33:00", which
feedparser misreads as 1 November.

A table, not a library: dateparser reads every language but costs ~50 MB of
memory and a second of import time for what twelve lines of names do here.

The one entry point, ``parse_feed_date``, is registered with feedparser as a
date handler (feedparser tries it before its own). It never raises, reads at
most ``MAX_DATE_LENGTH`` characters and runs one anchored regular expression,
so a hostile date costs nothing.
"""

from __future__ import annotations

import re
import time
import unicodedata
from datetime import UTC, datetime, timedelta

MAX_DATE_LENGTH = 100  # characters; a longer "date" is not one

# Month names by language: English, French, Spanish, Italian, Portuguese,
# German, Dutch, Danish/Norwegian/Swedish, Catalan, Romanian, Indonesian.
# Accents are ignored when matching; any unambiguous prefix of three letters
# or more of a full name works too ("janv.", "sept", "Dez", "févr.").
_MONTH_NAMES: dict[int, str] = {
    1: "january janvier enero gennaio janeiro januar janner januari gener ianuarie",
    2: "february fevrier febrero febbraio fevereiro februar feber februari febrer februarie",
    3: "march mars marzo marco marz maart marts marc martie maret",
    4: "april avril abril aprile aprilie",
    5: "may mai mayo maggio maio mei maj maig",
    6: "june juin junio giugno junho juni juny iunie",
    7: "july juillet julio luglio julho juli juliol iulie",
    8: "august aout agosto augustus augusti agost",
    9: "september septembre septiembre setiembre settembre setembro setembre septembrie",
    10: "october octobre octubre ottobre outubro oktober octubre octombrie",
    11: "november novembre noviembre novembro noiembrie nopember",
    12: "december decembre diciembre dicembre dezembro dezember desember desembre decembrie",
}
# Abbreviations that are not prefixes of a full name above.
_MONTH_ABBREVIATIONS = {"mrz": 3, "mrt": 3, "mei": 5, "agu": 8, "agt": 8, "des": 12, "sett": 9, "dic": 12}


def _plain(word: str) -> str:
    """Lower case, without accents and trailing dots: "Févr." -> "fevr"."""
    decomposed = unicodedata.normalize("NFKD", word.rstrip(".").lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _month_table() -> dict[str, int]:
    candidates: dict[str, set[int]] = {}
    for month, names in _MONTH_NAMES.items():
        for name in names.split():
            for end in range(3, len(name) + 1):
                candidates.setdefault(name[:end], set()).add(month)
    # "jui" could be juin or juillet: a prefix shared by two months names neither.
    table = {prefix: months.pop() for prefix, months in candidates.items() if len(months) == 1}
    table.update(_MONTH_ABBREVIATIONS)
    return table


MONTHS = _month_table()

# Zone names: feedparser's own (so an English date means the same whichever
# handler reads it) and the European and American ones feeds use besides.
# IST is India, Ireland or Israel: read as UTC, as feedparser does.
_ZONE_HOURS: dict[str, float] = {
    "ut": 0, "utc": 0, "gmt": 0, "z": 0, "wet": 0,
    "adt": -3, "ast": -4, "at": -4, "edt": -4, "est": -5, "et": -5,
    "cdt": -5, "cst": -6, "ct": -6, "mdt": -6, "mst": -7, "mt": -7,
    "pdt": -7, "pst": -8, "pt": -8, "akst": -9, "akdt": -8, "hst": -10,
    "a": -1, "n": 1, "m": -12, "y": 12,
    "met": 1, "mest": 2, "cet": 1, "cest": 2, "mez": 1, "mesz": 2, "bst": 1, "west": 1, "ist": 0,
    "eet": 2, "eest": 3, "msk": 3, "brt": -3, "brst": -2, "art": -3, "jst": 9, "kst": 9,
    "aest": 10, "aedt": 11, "nzst": 12, "nzdt": 13,
}  # fmt: skip

_WORD = r"[^\W\d_]+"  # letters of any script, no digits or underscore
_RFC822_LIKE = re.compile(
    rf"""
    (?:(?P<weekday>{_WORD})\.?\s*,?\s+)?                       # any day name: Mon, Seg, Mi., mer,
    (?:
        (?P<day>\d{{1,2}})\.?(?:\s+de)?\s+(?P<month>{_WORD})\.?(?:\s+de)?,?  # 24 Set / 13. Dez. / 5 de mayo de
      | (?P<month_first>{_WORD})\.?\s+(?P<day_after>\d{{1,2}})(?:st|nd|rd|th)?,?  # January 29, / Jan 29
    )
    \s+(?P<year>\d{{4}}|\d{{2}})
    (?:
        ,?(?:\s+{_WORD}){{0,2}}\s+                                # ", à", "um", "a las", "at"
        (?P<hour>\d{{1,2}})[:hH](?P<minute>\d{{2}})(?::(?P<second>\d{{2}}))?
        (?:\s*(?P<half>[AaPp])\.?[Mm]\.?)?
    )?
    (?:\s*(?P<zone>[+-]\d{{2}}:?\d{{2}}|[+-]\d{{2}}|[A-Za-z]{{1,5}}(?:[+-]\d{{1,2}}(?::?\d{{2}})?)?))?
    (?:\s*\([^()]*\))?                                          # "+0100 (CET)"
    """,
    re.VERBOSE,
)
_SLASHED = re.compile(r"(\d{4})/(\d{1,2})/(\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")


def parse_feed_date(text: str) -> time.struct_time | None:
    """A UTC time tuple (feedparser's date handler contract), or None when
    the text is not a date this module reads."""
    if not isinstance(text, str) or len(text) > MAX_DATE_LENGTH:
        return None
    text = text.strip()
    try:
        moment = _rfc822_like(text) or _slashed(text)
    except (ValueError, OverflowError):  # day 31 of a 30-day month, a year out of range
        return None
    return moment.utctimetuple() if moment is not None else None


def _rfc822_like(text: str) -> datetime | None:
    match = _RFC822_LIKE.fullmatch(text)
    if match is None:
        return None
    month = MONTHS.get(_plain(match["month"] or match["month_first"]))
    if month is None:
        return None
    year = int(match["year"])
    if len(match["year"]) == 2:  # as feedparser: 90-99 are 1990s, the rest 2000s
        year += 1900 if year >= 90 else 2000
    hour, minute, second = int(match["hour"] or 0), int(match["minute"] or 0), int(match["second"] or 0)
    if match["half"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match["half"].lower() == "p" else 0)
    offset = _zone_offset(match["zone"])
    if offset is None:
        return None
    day = int(match["day"] or match["day_after"])
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC) - offset


def _zone_offset(zone: str | None) -> timedelta | None:
    """The zone's offset from UTC, or None when it is out of range. No zone
    is UTC (DESIGN §3); so is a name not in the table, as feedparser takes it."""
    if not zone:
        return timedelta(0)
    name = zone.rstrip("+-0123456789:").lower()
    numeric = zone[len(name) :]
    offset = timedelta(hours=_ZONE_HOURS.get(name, 0))
    if numeric:
        sign = -1 if numeric[0] == "-" else 1
        digits = numeric[1:].replace(":", "")
        if not digits.isdigit():
            return None
        if len(digits) <= 2:
            offset += sign * timedelta(hours=int(digits))
        else:
            offset += sign * timedelta(hours=int(digits[:-2]), minutes=int(digits[-2:]))
    if abs(offset) > timedelta(hours=15):
        return None
    return offset


def _slashed(text: str) -> datetime | None:
    match = _SLASHED.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g or 0) for g in match.groups())
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
