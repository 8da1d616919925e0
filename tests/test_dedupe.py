"""dedupe.plan and the edit-churn cap, decided without I/O: every rule of
DESIGN §4 (guid, link, hash fallback, an alias after a guid change, home
pages and shared links never identify, tombstones, taken ids, the undated
fallback dates, backfill, expired) on hand-built records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.dedupe import (
    FREE_REWRITES,
    HELD_BACKFILL,
    HELD_EXPIRED,
    MAX_REWRITES,
    REWRITE_GAP,
    RULE_CHANGED_GUID,
    RULE_TOMBSTONE,
    Existing,
    StoredRef,
    identifying_urls,
    minted_id,
    plan,
)
from aggregator.model import ParsedEntry
from aggregator.urls import canonical_url

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
FEED = "feed1"
AUTHORITY = "news.example"


def entry(key: str, *, rule: str = "guid", guid: str | None = None, url: str | None = None, content: str = "h1",
          published: datetime | None = None, updated: datetime | None = None, unchanged: bool = False) -> ParsedEntry:
    if rule == "guid" and guid is None:
        guid = key
    return ParsedEntry(entry_key=key, key_rule=rule, content_hash=content, guid=guid, url=url,
                       canonical_url=canonical_url(url) if url else None, title=key, published_at=published,
                       updated_at=updated, unchanged=unchanged)


def stored(rowid: int, output_id: str, *, feed: str = FEED, content: str = "h1", rewrites: int = 0,
           modified: datetime | None = None, updated: datetime | None = None, duplicate_of: str | None = None,
           story: str | None = None) -> StoredRef:
    return StoredRef(rowid=rowid, id=output_id, feed_id=feed, content_hash=content, updated_at=updated,
                     modified_at=modified, rewrites=rewrites, duplicate_of=duplicate_of, story_id=story)


def run(entries: list[ParsedEntry], existing: Existing | None = None, **options: object):  # type: ignore[no-untyped-def]
    return plan(FEED, entries, existing or Existing(), NOW, AUTHORITY, **options)  # type: ignore[arg-type]


# --- identity of a new entry --------------------------------------------------------------------

def test_a_new_entry_with_a_reusable_guid_keeps_it_as_its_output_id() -> None:
    result = run([entry("https://a.example/story/1", published=NOW)])
    [insert] = result.inserts
    assert insert.output_id == "https://a.example/story/1" and insert.duplicate_of is None and insert.held is None
    assert result.counts.new == 1 and not result.updates and not result.aliases


@pytest.mark.parametrize("guid", ["12345", "https://user:pw@a.example/1", "urn:uuid:not-a-uuid", "é:x"])
def test_a_guid_that_cannot_be_published_gets_a_minted_id(guid: str) -> None:
    [insert] = run([entry(guid)]).inserts
    assert insert.output_id == minted_id(AUTHORITY, FEED, guid, NOW)
    assert insert.output_id.startswith(f"tag:{AUTHORITY},2026-06-01:{FEED}/")


def test_minted_ids_depend_on_the_key_and_the_first_seen_day_only() -> None:
    first = minted_id(AUTHORITY, FEED, "k", NOW)
    assert minted_id(AUTHORITY, FEED, "k", NOW + timedelta(hours=11)) == first  # same day
    assert minted_id(AUTHORITY, FEED, "k2", NOW) != first
    assert minted_id(AUTHORITY, "feed2", "k", NOW) != first


def test_a_guid_another_article_uses_is_not_reused() -> None:
    existing = Existing(taken_ids={"https://a.example/1"})
    [insert] = run([entry("https://a.example/1")], existing).inserts
    assert insert.output_id == minted_id(AUTHORITY, FEED, "https://a.example/1", NOW)


@pytest.mark.parametrize("rule", ["link", "hash", "link:untrusted-guid"])
def test_only_a_guid_key_lends_its_guid_as_output_id(rule: str) -> None:
    # link: the entry had no guid; hash: neither guid nor link; untrusted: its guid named other links too
    e = entry("https://a.example/x", rule=rule, guid="https://a.example/guid" if rule.endswith("guid") else None)
    [insert] = run([e]).inserts
    assert insert.output_id == minted_id(AUTHORITY, FEED, "https://a.example/x", NOW)


def test_a_known_key_is_the_same_article_whatever_its_rule() -> None:
    for rule in ("guid", "link", "hash"):
        existing = Existing(by_key={"k": stored(1, "out-1")})
        result = run([entry("k", rule=rule, guid=None)], existing)
        assert not result.inserts and result.counts.unchanged == 1, rule


def test_an_entry_known_to_be_unchanged_but_no_longer_stored_is_not_inserted() -> None:
    # Parsing skipped its fields (its hash was known); the article was deleted meanwhile.
    result = run([entry("k", unchanged=True)])
    assert not result.inserts and result.counts.unchanged == 1 and result.counts.new == 0


# --- updates ---------------------------------------------------------------------------------------

def test_same_key_same_content_is_unchanged() -> None:
    result = run([entry("k", content="h1")], Existing(by_key={"k": stored(1, "out-1", content="h1")}))
    assert not result.updates and result.counts.unchanged == 1 and result.counts.updated == 0


def test_same_key_new_content_is_an_update_in_place_with_the_sources_newer_date() -> None:
    ref = stored(1, "out-1", content="h1", updated=NOW - timedelta(days=1))
    newer = entry("k", content="h2", updated=NOW - timedelta(hours=1))
    [update] = run([newer], Existing(by_key={"k": ref})).updates
    assert update.ref is ref and update.updated_at == NOW - timedelta(hours=1)


@pytest.mark.parametrize("source_date", [None, datetime(2026, 5, 1, tzinfo=UTC)])
def test_an_update_without_a_newer_source_date_is_dated_now(source_date: datetime | None) -> None:
    ref = stored(1, "out-1", content="h1", updated=datetime(2026, 5, 20, tzinfo=UTC))
    [update] = run([entry("k", content="h2", updated=source_date)], Existing(by_key={"k": ref})).updates
    assert update.updated_at == NOW


# --- layer 2: a new guid for a stored link ----------------------------------------------------------

def test_a_new_guid_for_a_stored_link_is_an_alias_of_that_article() -> None:
    ref = stored(1, "http://a.example/story/1")
    existing = Existing(by_canonical={canonical_url("https://a.example/story/1"): ref})  # type: ignore[dict-item]
    result = run([entry("https://a.example/story/1?v=2", url="https://a.example/story/1")], existing)
    assert not result.inserts and [(a.ref, a.entry_key) for a in result.aliases] == [
        (ref, "https://a.example/story/1?v=2")]
    assert result.counts.folded == {RULE_CHANGED_GUID: 1} and result.counts.unchanged == 0
    assert not result.updates  # same content


def test_an_alias_with_new_content_is_also_an_update() -> None:
    ref = stored(1, "out-1", content="h1")
    existing = Existing(by_canonical={canonical_url("https://a.example/s"): ref})  # type: ignore[dict-item]
    result = run([entry("new-guid", url="https://a.example/s", content="h2")], existing)
    assert len(result.aliases) == 1 and [u.ref for u in result.updates] == [ref]


@pytest.mark.parametrize("home", ["https://a.example/", "http://www.a.example", "https://a.example/?"])
def test_a_home_page_never_identifies(home: str) -> None:
    key = canonical_url(home)
    assert key is not None
    existing = Existing(by_canonical={key: stored(1, "out-1")}, elsewhere={key: stored(2, "out-2", feed="feed2")})
    result = run([entry("new-guid", url=home)], existing)
    [insert] = result.inserts
    assert not result.aliases and insert.duplicate_of is None and result.counts.duplicates == 0


def test_a_link_shared_by_several_entries_of_the_document_never_identifies() -> None:
    show = "https://podcast.example/show"
    key = canonical_url(show)
    assert key is not None and identifying_urls([entry("e1", url=show), entry("e2", url=show)]) == set()
    existing = Existing(by_canonical={key: stored(1, "out-1")}, elsewhere={key: stored(2, "out-2", feed="feed2")})
    result = run([entry("episode-1", url=show), entry("episode-2", url=show)], existing)
    assert len(result.inserts) == 2 and not result.aliases
    assert all(i.duplicate_of is None for i in result.inserts) and result.counts.duplicates == 0


# --- layer 4: across feeds ------------------------------------------------------------------------------

def test_the_same_link_from_another_feed_is_a_duplicate_of_the_first_seen_article() -> None:
    key = canonical_url("https://news.example/story")
    assert key is not None
    existing = Existing(elsewhere={key: stored(2, "out-2", feed="feed2", story="story-9")})
    [insert] = run([entry("mine", url="http://www.news.example/story?utm_source=x")], existing).inserts
    assert insert.duplicate_of == "out-2" and insert.duplicate_story == "story-9"


def test_a_duplicate_of_a_duplicate_points_at_the_first_seen_article() -> None:
    key = canonical_url("https://news.example/story")
    assert key is not None
    existing = Existing(elsewhere={key: stored(3, "out-3", feed="feed3", duplicate_of="out-first")})
    result = run([entry("mine", url="https://news.example/story")], existing)
    [insert] = result.inserts
    assert insert.duplicate_of == "out-first" and insert.duplicate_story == "out-first"
    assert result.counts.duplicates == 1 and result.counts.new == 1  # stored all the same


# --- tombstones ------------------------------------------------------------------------------------------

def test_an_entry_retention_deleted_is_not_added_again() -> None:
    result = run([entry("old", published=NOW - timedelta(days=400)), entry("fresh")], Existing(tombstones={"old"}))
    assert [i.entry.entry_key for i in result.inserts] == ["fresh"]
    assert result.tombstone_hits == ["old"] and result.counts.folded == {RULE_TOMBSTONE: 1}


# --- dates, backfill, expired ------------------------------------------------------------------------------

def test_undated_entries_keep_the_documents_order_one_second_apart() -> None:
    start = NOW - timedelta(minutes=5)
    dated = NOW - timedelta(days=2)
    entries = [entry("a"), entry("b", updated=dated), entry("c"), entry("d")]
    published = {i.entry.entry_key: i.published_at for i in run(entries, fallback_start=start).inserts}
    assert published == {"a": start, "b": dated, "c": start - timedelta(seconds=2), "d": start - timedelta(seconds=3)}
    assert run([entry("a"), entry("b")]).inserts[1].published_at == NOW - timedelta(seconds=1)  # default start: now


def test_a_first_poll_holds_all_but_the_newest_entries() -> None:
    entries = [entry(f"e{n}", published=NOW - timedelta(hours=n)) for n in (3, 0, 4, 1, 2)]
    result = run(entries, backfill=2)
    held = {i.entry.entry_key: i.held for i in result.inserts}
    assert held == {"e0": None, "e1": None, "e2": HELD_BACKFILL, "e3": HELD_BACKFILL, "e4": HELD_BACKFILL}
    assert result.counts.backfilled == 3 and result.counts.new == 5


def test_no_backfill_hold_unless_asked() -> None:
    entries = [entry(f"e{n}", published=NOW - timedelta(hours=n)) for n in range(5)]
    assert all(i.held is None for i in run(entries).inserts)
    assert all(i.held is None for i in run(entries, backfill=5).inserts)


def test_entries_already_past_retention_are_stored_but_held_as_expired() -> None:
    cutoff = NOW - timedelta(days=90)
    entries = [entry("new", published=NOW), entry("old", published=cutoff - timedelta(days=1)),
               entry("edge", published=cutoff)]
    result = run(entries, expired_before=cutoff, backfill=1)
    held = {i.entry.entry_key: i.held for i in result.inserts}
    assert held == {"new": None, "old": HELD_EXPIRED, "edge": HELD_BACKFILL}
    assert result.counts.backfilled == 1  # the expired one is not counted twice


# --- the edit-churn cap ----------------------------------------------------------------------------------

def _edit(rewrites: int, modified_ago: timedelta | None):  # type: ignore[no-untyped-def]
    ref = stored(1, "out-1", content="h1", rewrites=rewrites,
                 modified=None if modified_ago is None else NOW - modified_ago)
    return run([entry("k", content="h2")], Existing(by_key={"k": ref}))


def test_the_first_edits_are_free() -> None:
    for rewrites in (0, FREE_REWRITES - 1):
        result = _edit(rewrites, timedelta(seconds=1))
        assert len(result.updates) == 1 and result.counts.capped == 0 and not result.reparse_needed


def test_after_the_free_edits_at_most_one_per_gap() -> None:
    held = _edit(FREE_REWRITES, REWRITE_GAP - timedelta(seconds=1))
    assert not held.updates and held.counts.capped == 1 and held.counts.unchanged == 1
    assert held.reparse_needed  # the held edit is taken up later: the body is parsed again next poll
    for ago in (REWRITE_GAP, REWRITE_GAP + timedelta(minutes=1)):
        allowed = _edit(FREE_REWRITES, ago)
        assert len(allowed.updates) == 1 and allowed.counts.capped == 0
    assert len(_edit(FREE_REWRITES, None).updates) == 1  # never rewritten by us: no gap to keep


def test_no_edit_after_the_maximum() -> None:
    for rewrites in (MAX_REWRITES, MAX_REWRITES + 5):
        result = _edit(rewrites, timedelta(days=30))
        assert not result.updates and result.counts.capped == 1 and not result.reparse_needed
    assert len(_edit(MAX_REWRITES - 1, timedelta(days=30)).updates) == 1


def test_the_cap_constants_keep_their_order() -> None:
    assert 0 < FREE_REWRITES < MAX_REWRITES and REWRITE_GAP > timedelta(0)
