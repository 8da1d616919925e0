"""Every real-world feed in ../shared/corpus/realworld goes through the
whole pipeline (served over HTTP, fetched, parsed, identified, stored)."""

from __future__ import annotations

import csv
import gzip
import io
import json
from datetime import timezone

import feedparser
import pytest

from aggregator.model import Outcome
from tests.conftest import CORPUS, Workspace
from tests.fixture_server import FeedServer

pytestmark = pytest.mark.corpus
FILES = sorted(p for p in CORPUS.iterdir() if p.name not in ("MANIFEST.tsv", "README.md")) if CORPUS else []


def manifest() -> dict[str, dict[str, str]]:
    with (CORPUS / "MANIFEST.tsv").open(newline="") as handle:
        return {row["filename"]: row for row in csv.DictReader(handle, delimiter="\t")}


def source_entry_count(raw: bytes) -> int:
    """How many entries the document has, by feedparser (or the JSON itself)."""
    body = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    stripped = body.lstrip(b"\xef\xbb\xbf \r\n\t")
    if stripped.startswith(b"{"):
        data = json.loads(stripped.decode("utf-8"))
        return len(data.get("items", [])) if "jsonfeed.org" in str(data.get("version", "")) else 0
    return len(feedparser.parse(io.BytesIO(body)).entries)


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 140
    assert set(manifest()) == {p.name for p in FILES}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict, dict]:
    server = FeedServer()
    ws = Workspace(tmp_path_factory.mktemp("corpus"))
    urls = {}
    for path in FILES:
        raw = path.read_bytes()
        kwargs: dict = {"content_type": None}
        if raw[:2] == b"\x1f\x8b":
            kwargs["headers"] = {"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"}
        urls[path.name] = server.add("/" + path.name, raw, **kwargs)
    ws.feeds(list(urls.values()))
    reports = {r.url: r for r in ws.poll_all()}
    yield ws, urls, reports
    ws.close()
    server.close()


def test_every_file_ingests_without_an_exception(ingested: tuple[Workspace, dict, dict]) -> None:
    ws, urls, reports = ingested
    assert len(reports) == len(FILES)
    failed = {name: reports[url].error for name, url in urls.items() if reports[url].outcome is not Outcome.OK}
    # Only documents with nothing usable may fail, and they fail with a clear message.
    assert failed == {
        "notafeed.html": "not a feed: the server sent an HTML page (look for the feed's own URL on that page)",
        "scripting-news.json": "not a feed: JSON document without a jsonfeed.org version",
        # The server broke off while rendering (its last line is an exception comment): no entry at all.
        "reuters-mostread_invalid.xml": "not a feed: the XML breaks off before any complete entry "
                                        "(XML error at line 19, column 84: no element found)",
    }


@pytest.mark.parametrize("name", [p.name for p in FILES])
def test_every_entry_is_stored_or_folded_by_a_named_rule(ingested: tuple[Workspace, dict, dict], name: str) -> None:
    ws, urls, reports = ingested
    report = reports[urls[name]]
    feed = ws.feed(urls[name])
    stored = [a for a, _ in ws.store.articles(feed_id=feed.id)]
    expected = source_entry_count((CORPUS / name).read_bytes())
    folded = report.counts.folded
    # "empty-entry": what feedparser reports for markup it could not place (pcmag's illegally
    # nested items give ten phantom entries with no id, link, title, text, enclosure or date).
    assert set(folded) <= {"same-key-in-document", "same-canonical-url-in-feed", "empty-entry"}, folded
    assert len(stored) + sum(folded.values()) == expected, (len(stored), folded, expected)
    for article in stored:
        assert article.id and (article.id.startswith(("tag:", "urn:")) or ":" in article.id)
        assert article.title or article.url, article
        assert article.published_at is not None and article.published_at.tzinfo == timezone.utc
        assert article.first_seen_at.tzinfo == timezone.utc
    assert len({a.id for a in stored}) == len(stored)


def test_same_articles_as_atom_and_rss_are_one_story_each(ingested: tuple[Workspace, dict, dict]) -> None:
    ws, urls, _ = ingested
    atom = [a for a, _ in ws.store.articles(feed_id=ws.feed(urls["dustri_same-content.atom"]).id)]
    rss = [a for a, _ in ws.store.articles(feed_id=ws.feed(urls["dustri_same-content.rss"]).id)]
    assert len(atom) == len(rss) == 25
    # Whichever was polled first represents each story; the other is its duplicate.
    pairs = {a.canonical_url: a for a in atom}
    for article in rss:
        other = pairs[article.canonical_url]
        assert (article.duplicate_of == other.id) != (other.duplicate_of == article.id)


def test_only_phantom_entries_are_dropped_as_empty(ingested: tuple[Workspace, dict, dict]) -> None:
    ws, urls, reports = ingested
    dropped = {name: reports[url].counts.folded["empty-entry"] for name, url in urls.items()
               if "empty-entry" in reports[url].counts.folded}
    assert dropped == {"pcmag-dvorak_illegally-nested.xml": 10}


def test_repolling_the_corpus_creates_nothing(ingested: tuple[Workspace, dict, dict]) -> None:
    ws, urls, _ = ingested
    before = len(ws.store.articles())
    reports = ws.poll_all()
    assert sum(r.counts.new for r in reports) == 0
    assert len(ws.store.articles()) == before
    assert {r.outcome for r in reports} <= {Outcome.UNCHANGED, Outcome.PARSE_ERROR, Outcome.NOT_MODIFIED}


def test_relative_links_are_resolved(ingested: tuple[Workspace, dict, dict]) -> None:
    ws, urls, _ = ingested
    for name in ("tpm-news.atom", "intertwingly.atom", "qemu.atom", "neverwinter_relative-urls.xml", "gulp-releases_github.atom"):
        for article, _ in ws.store.articles(feed_id=ws.feed(urls[name]).id):
            assert article.url is None or article.url.startswith(("http://", "https://")), (name, article.url)
            for html in (article.summary, article.content):
                assert not html or ' src="/' not in html and ' href="/' not in html, name


def test_non_utf8_feeds_decode(ingested: tuple[Workspace, dict, dict]) -> None:
    ws, urls, _ = ingested
    titles = {name: [a.title for a, _ in ws.store.articles(feed_id=ws.feed(urls[name]).id)]
              for name in ("ibash-org-ru_windows-1251.rss", "liberal-gr_iso-8859-7.xml", "golem-de_iso-8859-1.rss")}
    assert any(any("\u0400" <= ch <= "\u04ff" for ch in t) for t in titles["ibash-org-ru_windows-1251.rss"])
    assert any(any("\u0370" <= ch <= "\u03ff" for ch in t) for t in titles["liberal-gr_iso-8859-7.xml"])
    assert all("\ufffd" not in t for t in titles["golem-de_iso-8859-1.rss"])


def test_slashed_dates_are_read_correctly(ingested: tuple[Workspace, dict, dict]) -> None:
    ws, urls, _ = ingested
    dates = [a.published_at for a, _ in ws.store.articles(feed_id=ws.feed(urls["kc0011_gb2312.rss"]).id)]
    assert any(d is not None and (d.year, d.month, d.day) == (2020, 1, 10) for d in dates)
