"""What runs where a document is parsed (a fetch thread for the fast path, a
parse worker process for feedparser, or the calling thread): the parser, then the work each new entry
needs that depends on nothing but the entry itself: its story features
(cluster.features), so the write transaction only compares and stores.

Imported by the parse workers on start: it keeps to the parser, the cluster
module and the records."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from aggregator.cluster import features
from aggregator.model import ParsedFeed
from aggregator.parse import parse_document


def parse_for_ingest(
    body: bytes,
    url: str,
    headers: Mapping[str, str],
    now: datetime,
    known: Mapping[str, str],
    time_limit: float | None = None,
    engine: str | None = None,
    features_for: int | None = None,
) -> ParsedFeed:
    """``features_for``: a new feed's first poll publishes only its newest
    entries (the backfill), and only those are ever compared with other
    stories: features for the newest ``features_for`` dated entries and every
    undated one (the store computes any it then misses). None: every entry."""
    parsed = parse_document(body, url, headers, now, known, time_limit=time_limit, engine=engine)
    wanted = [e for e in parsed.entries if not e.unchanged]
    if features_for is not None:
        dated = [(when, index) for index, e in enumerate(wanted) if (when := e.published_at or e.updated_at)]
        newest = {index for _, index in sorted(dated, reverse=True)[:features_for]}
        wanted = [e for index, e in enumerate(wanted) if index in newest or not (e.published_at or e.updated_at)]
    for entry in wanted:
        entry.story_features = features(entry.title, entry.text, entry.language).to_json()
    return parsed
