"""JSON Feed 1.1 (https://jsonfeed.org/version/1.1), with a `_source` extension."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aggregator.model import Story
from aggregator.publish.common import FeedMeta, body_html, entry_published, entry_updated, rfc3339
from aggregator.sanitize import strip_control, to_text


def render_json(stories: Sequence[Story], meta: FeedMeta) -> bytes:
    feed: dict[str, Any] = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": meta.title,
        "home_page_url": meta.home_url,
        "feed_url": meta.url(".json"),
        "description": meta.subtitle,
    }
    if meta.language:
        feed["language"] = meta.language
    feed["items"] = [_item(story) for story in stories]
    # No indent: with indent, json uses its pure-Python encoder (several times slower).
    document = json.dumps(feed, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        return document.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate in a stored field has no UTF-8 form: dropped, as the
        # XML outputs drop it (JSON escapes every other control character).
        return strip_control(document).encode("utf-8")


def _item(story: Story) -> dict[str, Any]:
    a = story.article
    item: dict[str, Any] = {"id": strip_control(a.id)}  # the id Atom and RSS carry
    if a.url:
        item["url"] = a.url
    item["title"] = strip_control(a.title)
    # JSON Feed requires content_html or content_text on every item.
    item["content_html"] = strip_control(body_html(story))
    if a.summary:
        item["summary"] = to_text(a.summary)[:500]
    if a.image:
        item["image"] = a.image
    item["date_published"] = rfc3339(entry_published(story))
    if a.updated_at or story.joined_at:
        item["date_modified"] = rfc3339(entry_updated(story))
    authors = [{k: v for k, v in (("name", x.name or x.email), ("url", x.url)) if v} for x in a.authors]
    if authors:
        item["authors"] = authors
    if a.categories:
        item["tags"] = list(a.categories)
    if a.enclosures:
        item["attachments"] = [
            {
                k: v
                for k, v in (
                    ("url", e.url),
                    ("mime_type", e.type or "application/octet-stream"),
                    ("size_in_bytes", e.length),
                )
                if v is not None
            }
            for e in a.enclosures
        ]
    source = story.source
    item["_source"] = {"title": source.title, "feed_url": source.feed_url, "home_page_url": source.site_url}
    # The story this entry stands for: every outlet that reported it (DESIGN §4.6).
    item["_story"] = {
        "id": story.story_id or a.id,
        "size": story.size,
        "related": [{"url": o.url, "title": strip_control(o.title), "source": o.source.title} for o in story.also],
    }
    return item
