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
) -> ParsedFeed:
    parsed = parse_document(body, url, headers, now, known, time_limit=time_limit, engine=engine)
    for entry in parsed.entries:
        if not entry.unchanged:
            entry.story_features = features(entry.title, entry.text, entry.language).to_json()
    return parsed
