"""Dates as real feeds write them: localised RFC 822 (day and month names in
the feed's language), full month names, abbreviations with and without dots,
AM/PM, zone names. Golden values, then the real-world corpus."""

from __future__ import annotations

import functools
import gzip
import io
import time
from datetime import UTC, datetime

import feedparser
import feedparser.datetimes
import pytest

from aggregator.dates import MONTHS, parse_feed_date
from aggregator.parse import parse_document
from tests.conftest import CORPUS

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def utc(text: str) -> str | None:
    parsed = parse_feed_date(text)
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", parsed) if parsed else None


GOLDEN = [
    # Portuguese (uol-noticias_br in the corpus), Brazilian zone
    ("Seg, 24 Set 2018 19:42:40 -0300", "2018-09-24T22:42:40Z"),
    ("Qua, 13 Dez 2023 10:00:00 -0300", "2023-12-13T13:00:00Z"),
    ("sáb, 02 fev 2019 08:05:00 +0000", "2019-02-02T08:05:00Z"),
    ("Ter, 15 Out 2019 07:30:00 GMT", "2019-10-15T07:30:00Z"),
    ("Sex, 10 Mai 2024 23:59:59 -0300", "2024-05-11T02:59:59Z"),
    # German
    ("Mi, 13 Dez 2023 10:00:00 +0100", "2023-12-13T09:00:00Z"),
    ("Do., 07. März 2024 09:15:00 +0100", "2024-03-07T08:15:00Z"),
    ("Mo, 04 Mrz 2024 12:00:00 MEZ", "2024-03-04T11:00:00Z"),
    ("Di, 1 Okt 2024 18:00:00 MESZ", "2024-10-01T16:00:00Z"),
    ("Fr, 3 Jänner 2025 06:00:00 +0100", "2025-01-03T05:00:00Z"),
    # French
    ("mer, 16 nov 2022 00:38:15 +0100", "2022-11-15T23:38:15Z"),
    ("lun., 4 déc. 2023 08:00:00 GMT", "2023-12-04T08:00:00Z"),
    ("jeu., 1 févr. 2024 14:30:00 +0100", "2024-02-01T13:30:00Z"),
    ("ven, 12 juil 2024 10:00:00 +0200", "2024-07-12T08:00:00Z"),
    ("Mar, 20 août 2024 10:00:00 +0200", "2024-08-20T08:00:00Z"),
    ("13 décembre 2023 à 10h30", "2023-12-13T10:30:00Z"),
    ("sam. 1 juin 2024 09:00:00 CEST", "2024-06-01T07:00:00Z"),
    # Spanish
    ("Jue, 14 Dic 2023 12:00:00 -0500", "2023-12-14T17:00:00Z"),
    ("mié., 3 ene. 2024 10:00:00 +0100", "2024-01-03T09:00:00Z"),
    ("Lun, 5 Ago 2024 16:45:00 -0300", "2024-08-05T19:45:00Z"),
    ("5 de mayo de 2021 12:00", "2021-05-05T12:00:00Z"),
    ("Vie, 20 Septiembre 2024 08:00:00 +0200", "2024-09-20T06:00:00Z"),
    # Italian
    ("gio, 9 mag 2024 11:00:00 +0200", "2024-05-09T09:00:00Z"),
    ("Ven, 21 Giu 2024 07:00:00 +0200", "2024-06-21T05:00:00Z"),
    ("lun, 1 lug 2024 12:00:00 +0200", "2024-07-01T10:00:00Z"),
    ("mar, 15 ott 2024 09:00:00 +0200", "2024-10-15T07:00:00Z"),
    ("Mer, 4 Gennaio 2023 09:00:00 +0100", "2023-01-04T08:00:00Z"),
    # Dutch
    ("do, 7 mrt 2024 09:15:00 +0100", "2024-03-07T08:15:00Z"),
    ("di, 14 mei 2024 20:00:00 +0200", "2024-05-14T18:00:00Z"),
    ("za, 12 okt 2024 10:00:00 +0200", "2024-10-12T08:00:00Z"),
    ("wo, 6 maart 2024 10:00:00 +0100", "2024-03-06T09:00:00Z"),
    # Scandinavian
    ("tor, 5 des 2024 10:00:00 +0100", "2024-12-05T09:00:00Z"),
    ("fre, 3 maj 2024 10:00:00 +0200", "2024-05-03T08:00:00Z"),
    # English forms feedparser misreads or cannot read
    ("January, 29 Jan 2021 17:56:15 +0530", "2021-01-29T12:26:15Z"),
    ("Friday, January 29, 2021 04:42 PM", "2021-01-29T16:42:00Z"),
    ("Sat, Dec 16 2023 02:02:33 PM", "2023-12-16T14:02:33Z"),
    ("Fri, 17 May 2019 23:21:44 BST", "2019-05-17T22:21:44Z"),
    ("Sat, 13 Jun 2026 10:00:00", "2026-06-13T10:00:00Z"),  # no zone: UTC
    ("2020/1/10 14:33:00", "2020-01-10T14:33:00Z"),
    ("Monday, September 2nd, 2024 10:00 AM +0000", "2024-09-02T10:00:00Z"),
    ("Tue, 10 Jun 2003 04:00:00 +01:00", "2003-06-10T03:00:00Z"),
    ("Thu, 01 Jan 2015 00:00:00 GMT+0100", "2014-12-31T23:00:00Z"),
    ("Wed, 02 Oct 2002 13:00:00 +0200 (CEST)", "2002-10-02T11:00:00Z"),
    # English RFC 822 exactly as feedparser reads it
    ("Wed, 29 May 2019 10:16:00 GMT", "2019-05-29T10:16:00Z"),
    ("Tue, 10 Jun 2003 04:00:00 EST", "2003-06-10T09:00:00Z"),
    ("10 Jun 03 04:00 PDT", "2003-06-10T11:00:00Z"),
]


@pytest.mark.parametrize(("text", "expected"), GOLDEN)
def test_golden_dates(text: str, expected: str) -> None:
    assert utc(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soon",
        "Mon, 31 Feb 2020 00:00:00 GMT",  # no such day
        "Seg, 24 Xyz 2018 19:42:40 -0300",  # no such month
        "Seg, 24 Set 2018 25:00:00 -0300",  # no such hour
        "Mon, 01 Jan 2024 13:00 PM",  # 13 PM
        "Mon, 01 Jan 2024 10:00:00 +9900",  # a zone beyond ±15 h
        "2023-12-13T10:00:00Z",  # ISO 8601: feedparser's own handler reads it
        "1" * 5000,
        "Seg, " * 1000 + "24 Set 2018",
    ],
)
def test_what_is_not_a_date_here(text: str) -> None:
    assert parse_feed_date(text) is None


def test_iso_dates_are_still_read_by_feedparser() -> None:
    assert feedparser.datetimes._parse_date("2023-12-13T10:00:00Z")[:6] == (2023, 12, 13, 10, 0, 0)


def test_month_table_has_no_ambiguous_prefix() -> None:
    # "jui" is juin (6) or juillet (7): neither, so it cannot be misread.
    assert "jui" not in MONTHS and MONTHS["juin"] == 6 and MONTHS["juil"] == 7
    assert {MONTHS[m] for m in ("set", "sept", "sep", "settembre", "setembro")} == {9}
    assert {MONTHS[m] for m in ("dic", "dez", "dec", "des", "dezember", "diciembre")} == {12}
    assert {MONTHS[m] for m in ("mar", "mars", "marz", "mrz", "mrt", "maart", "marco")} == {3}


def test_a_localised_date_reaches_the_entry() -> None:
    doc = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
        "<item><title>Antiga</title><link>http://e.com/1</link><pubDate>Seg, 24 Set 2018 19:42:40 -0300</pubDate></item>"
        "<item><title>Alt</title><link>http://e.com/2</link><pubDate>Mi, 13 Dez 2023 10:00:00 +0100</pubDate></item>"
        "</channel></rss>"
    ).encode()
    parsed = parse_document(doc, "http://e.com/feed", now=NOW)
    assert [e.published_at for e in parsed.entries] == [
        datetime(2018, 9, 24, 22, 42, 40, tzinfo=UTC),
        datetime(2023, 12, 13, 9, 0, 0, tzinfo=UTC),
    ]


def test_a_json_feed_date_goes_through_the_same_handler() -> None:
    doc = (
        b'{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": ['
        b'{"id": "1", "url": "http://e.com/1", "content_text": "x", "date_published": "Qua, 13 Dez 2023 10:00:00 -0300"}]}'
    )
    parsed = parse_document(doc, "http://e.com/feed.json", now=NOW)
    assert parsed.entries[0].published_at == datetime(2023, 12, 13, 13, 0, tzinfo=UTC)


# --- the real-world corpus --------------------------------------------------------------------------


@functools.cache
def _corpus_dates() -> dict[str, set[str]]:
    """Every date string in the corpus, by file, as feedparser hands it to its handlers."""
    found: dict[str, set[str]] = {}
    for path in sorted(CORPUS.iterdir()):
        if path.name in ("MANIFEST.tsv", "README.md"):
            continue
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        parsed = feedparser.parse(io.BytesIO(data))
        for record in [parsed.feed, *parsed.entries]:
            for key in ("published", "updated", "created"):
                value = dict.get(record, key)
                if isinstance(value, str):
                    found.setdefault(path.name, set()).add(value)
    return found


@pytest.mark.corpus
def test_every_localised_date_in_the_corpus_is_read() -> None:
    dates = _corpus_dates()
    assert {d for d in dates["uol-noticias_br.rss"] if parse_feed_date(d) is None} == set()
    assert utc("Seg, 24 Set 2018 19:42:40 -0300") == "2018-09-24T22:42:40Z"
    assert dates["ilmessaggero_trimmed.xml"] >= {"mer, 16 nov 2022 00:38:15 +0100"}
    unread = {
        (name, d)
        for name, values in dates.items()
        for d in values
        if feedparser.datetimes._parse_date(d) is None
    }
    assert unread == set()  # with our handler registered, feedparser reads every date of the corpus


@pytest.mark.corpus
def test_english_dates_read_as_feedparser_reads_them() -> None:
    """Our handler runs before feedparser's: on every corpus date both read,
    the result is feedparser's, except where feedparser is wrong (AM/PM
    dropped, BST taken as GMT, "2020/1/10" taken as 1 December)."""
    ours_first = parse_feed_date
    theirs = [h for h in feedparser.datetimes._date_handlers if h is not ours_first]

    def feedparser_alone(text: str) -> tuple[int, ...] | None:
        for handler in theirs:
            try:
                value = handler(text)
            except (KeyError, OverflowError, ValueError, AttributeError):
                continue
            if value and len(value) == 9:
                return tuple(value)[:6]
        return None

    compared = differ = 0
    for values in _corpus_dates().values():
        for text in values:
            ours, reference = parse_feed_date(text), feedparser_alone(text)
            if ours is None or reference is None:
                continue
            compared += 1
            if tuple(ours)[:6] != reference:
                differ += 1
                assert " PM" in text or "BST" in text or "/" in text, text
    assert compared > 2000 and differ < 20


@pytest.mark.corpus
def test_uol_entries_keep_their_2018_dates() -> None:
    body = (CORPUS / "uol-noticias_br.rss").read_bytes()
    parsed = parse_document(body, "http://rss.uol.com.br/feed/noticias.xml", now=NOW)
    years = {e.published_at.year for e in parsed.entries if e.published_at}
    assert len(parsed.entries) == 15 and years == {2018}
