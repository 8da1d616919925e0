"""Is this entry new, changed, the same as one we have, or another feed's
story? (DESIGN §4). Pure decisions: the store loads what is known into an
``Existing`` and applies the returned ``Plan``; nothing here does I/O."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from aggregator.model import IngestCounts, ParsedEntry
from aggregator.urls import is_reusable_id, is_weak_identity

# Why a stored article is kept out of the outputs (besides filters).
HELD_BACKFILL = "backfill"  # beyond the newest N of a feed's first poll
HELD_EXPIRED = "expired"  # already older than retention when it arrived

# Fold rules, as counted in IngestCounts.folded and reported to users.
RULE_CHANGED_GUID = "same-canonical-url-in-feed"  # layer 2: a new guid for a stored link
RULE_TOMBSTONE = "deleted-by-retention"  # entry still in the feed after retention removed it

# Feeds that rotate tokens in their HTML must not make an article "updated"
# on every poll: after FREE_REWRITES edits an article is rewritten at most
# once per REWRITE_GAP, and never after MAX_REWRITES.
FREE_REWRITES = 10
REWRITE_GAP = timedelta(hours=1)
MAX_REWRITES = 100


@dataclass(frozen=True)
class StoredRef:
    """What the planner needs to know about a stored article."""

    rowid: int
    id: str
    feed_id: str
    content_hash: str
    updated_at: datetime | None
    modified_at: datetime | None  # when we last rewrote it
    rewrites: int
    duplicate_of: str | None
    story_id: str | None = None


@dataclass
class Existing:
    by_key: dict[str, StoredRef] = field(default_factory=dict)  # this feed: entry key (or alias) -> article
    by_canonical: dict[str, StoredRef] = field(default_factory=dict)  # this feed: canonical URL -> article
    elsewhere: dict[str, StoredRef] = field(default_factory=dict)  # other feeds: canonical URL -> first-seen article
    taken_ids: set[str] = field(default_factory=set)  # candidate output ids already used by some article
    tombstones: set[str] = field(default_factory=set)  # keys of articles retention deleted


@dataclass(frozen=True)
class Insert:
    entry: ParsedEntry
    output_id: str
    duplicate_of: str | None
    published_at: datetime  # the entry's date, or a fallback that keeps the document's order
    duplicate_story: str | None = None  # the story of the article it duplicates
    held: str | None = None  # kept out of the outputs: HELD_BACKFILL or HELD_EXPIRED
    hidden_by: str | None = None  # the filter rule that hides it


@dataclass(frozen=True)
class Update:
    ref: StoredRef
    entry: ParsedEntry
    updated_at: datetime
    hidden_by: str | None = None  # the filter rule that hides it (decided again on every edit)


@dataclass(frozen=True)
class Alias:
    """Layer 2: the entry's new key is another name for a stored article."""

    ref: StoredRef
    entry_key: str


@dataclass
class Plan:
    inserts: list[Insert] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    aliases: list[Alias] = field(default_factory=list)
    counts: IngestCounts = field(default_factory=IngestCounts)
    reparse_needed: bool = False  # an edit was held back: parse this body again next poll
    tombstone_hits: list[str] = field(default_factory=list)  # keys of deleted articles still in the feed


def minted_id(authority: str, feed_id: str, entry_key: str, first_seen: datetime) -> str:
    """A tag: URI (RFC 4151) for entries whose own id cannot serve."""
    digest = hashlib.sha256(entry_key.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    return f"tag:{authority},{first_seen:%Y-%m-%d}:{feed_id}/{digest}"


def identifying_urls(entries: list[ParsedEntry]) -> set[str]:
    """Canonical URLs that may identify an entry: not a home page, and used by
    exactly one entry of the document (podcast feeds often link every episode
    to the same show page; such a link says nothing about identity)."""
    counts = Counter(e.canonical_url for e in entries if e.canonical_url)
    return {url for url, n in counts.items() if n == 1 and not is_weak_identity(url)}


def plan(
    feed_id: str,
    entries: list[ParsedEntry],
    existing: Existing,
    now: datetime,
    id_authority: str,
    *,
    fallback_start: datetime | None = None,
    backfill: int | None = None,
    expired_before: datetime | None = None,
) -> Plan:
    """What to do with each entry of a document. ``fallback_start``: the
    date an undated first entry gets (each next one a second older, so the
    document's order is kept and no two share a date); ``backfill``: this is
    the feed's first poll, and only its newest N entries reach the outputs;
    ``expired_before``: entries dated before this are already past retention
    (stored, so they never come back as new, but never published)."""
    result = Plan()
    counts = result.counts
    usable_urls = identifying_urls(entries)
    taken = set(existing.taken_ids)
    start = fallback_start or now
    for position, entry in enumerate(entries):
        if entry.entry_key in existing.tombstones:
            counts.folded[RULE_TOMBSTONE] = counts.folded.get(RULE_TOMBSTONE, 0) + 1
            result.tombstone_hits.append(entry.entry_key)
            continue
        ref = existing.by_key.get(entry.entry_key)
        canonical = entry.canonical_url if entry.canonical_url in usable_urls else None
        if ref is None and canonical and canonical in existing.by_canonical:
            ref = existing.by_canonical[canonical]
            result.aliases.append(Alias(ref, entry.entry_key))
            counts.folded[RULE_CHANGED_GUID] = counts.folded.get(RULE_CHANGED_GUID, 0) + 1
            existing.by_key[entry.entry_key] = ref
            _maybe_update(result, ref, entry, now, count_unchanged=False)
            continue
        if ref is not None:
            _maybe_update(result, ref, entry, now, count_unchanged=True)
            continue
        if entry.unchanged:
            # Its hash was known when parsing began, but the article is gone
            # now (deleted meanwhile): nothing to store it from.
            counts.unchanged += 1
            continue
        output_id = _output_id(entry, taken, id_authority, feed_id, now)
        taken.add(output_id)
        duplicate_of = duplicate_story = None
        if canonical and canonical in existing.elsewhere:
            other = existing.elsewhere[canonical]
            duplicate_of = other.duplicate_of or other.id
            duplicate_story = other.story_id or duplicate_of
            counts.duplicates += 1
        published = entry.published_at or entry.updated_at or start - timedelta(seconds=position)
        held = HELD_EXPIRED if expired_before is not None and published < expired_before else None
        result.inserts.append(Insert(entry, output_id, duplicate_of, published, duplicate_story, held))
        counts.new += 1
    if backfill is not None:
        _hold_backfill(result, backfill)
    return result


def _hold_backfill(result: Plan, keep: int) -> None:
    """A feed's first poll: only its newest ``keep`` entries reach the outputs."""
    newest = sorted(range(len(result.inserts)), key=lambda i: result.inserts[i].published_at, reverse=True)
    for index in newest[keep:]:
        insert = result.inserts[index]
        if insert.held is None:
            result.inserts[index] = replace(insert, held=HELD_BACKFILL)
            result.counts.backfilled += 1


def _output_id(entry: ParsedEntry, taken: set[str], authority: str, feed_id: str, now: datetime) -> str:
    guid = entry.guid
    if entry.key_rule == "guid" and guid and is_reusable_id(guid) and guid not in taken:
        return guid
    return minted_id(authority, feed_id, entry.entry_key, now)


def _maybe_update(result: Plan, ref: StoredRef, entry: ParsedEntry, now: datetime, count_unchanged: bool) -> None:
    counts = result.counts
    if entry.unchanged or entry.content_hash == ref.content_hash:
        if count_unchanged:
            counts.unchanged += 1
        return
    if ref.rewrites >= MAX_REWRITES:
        counts.unchanged += 1
        counts.capped += 1
        return
    if ref.rewrites >= FREE_REWRITES and ref.modified_at is not None and now - ref.modified_at < REWRITE_GAP:
        counts.unchanged += 1
        counts.capped += 1
        result.reparse_needed = True
        return
    updated_at = (
        entry.updated_at if entry.updated_at and (ref.updated_at is None or entry.updated_at > ref.updated_at) else now
    )
    result.updates.append(Update(ref, entry, updated_at))
    counts.updated += 1
