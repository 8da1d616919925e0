"""RSS 2.0 (with atom:link rel=self, dc:creator and content:encoded)."""

from __future__ import annotations

from collections.abc import Sequence

from aggregator.model import Story
from aggregator.publish.common import (
    GENERATOR,
    GENERATOR_VERSION,
    FeedMeta,
    also_reported_html,
    body_html,
    entry_published,
    newest_update,
    rfc822,
)
from aggregator.publish.xmlutil import attr, text


def render_rss(stories: Sequence[Story], meta: FeedMeta) -> bytes:
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:content="http://purl.org/rss/1.0/modules/content/">',
        "<channel>",
        f"<title>{text(meta.title)}</title>",
        f"<link>{text(meta.home_url)}</link>",
        f"<description>{text(meta.subtitle)}</description>",
        f'<atom:link rel="self" type="application/rss+xml" href="{attr(meta.url(".rss"))}"/>',
        f"<generator>{GENERATOR} {GENERATOR_VERSION}</generator>",
    ]
    if stories or meta.empty_updated:
        out.append(f"<lastBuildDate>{rfc822(newest_update(stories, meta.empty_updated))}</lastBuildDate>")
    if meta.language:
        out.append(f"<language>{text(meta.language)}</language>")
    out.extend(_item(story) for story in stories)
    out.append("</channel>\n</rss>\n")
    return "\n".join(out).encode("utf-8")


def _item(story: Story) -> str:
    a = story.article
    parts = ["<item>", f"<title>{text(a.title)}</title>"]
    if a.url:
        parts.append(f"<link>{text(a.url)}</link>")
    permalink = "true" if a.url and a.id == a.url else "false"
    parts.append(f'<guid isPermaLink="{permalink}">{text(a.id)}</guid>')
    parts.append(f"<pubDate>{rfc822(entry_published(story))}</pubDate>")
    parts.append(f'<source url="{attr(story.source.feed_url)}">{text(story.source.title)}</source>')
    for author in a.authors:
        if author.name:
            parts.append(f"<dc:creator>{text(author.name)}</dc:creator>")
    for category in a.categories:
        parts.append(f"<category>{text(category)}</category>")
    if a.enclosures:
        # RSS allows one enclosure per item; its length is required (0 when unknown).
        first = a.enclosures[0]
        parts.append(
            f'<enclosure url="{attr(first.url)}" length="{first.length or 0}" '
            f'type="{attr(first.type or "application/octet-stream")}"/>'
        )
    description = (a.summary or a.content or "") + also_reported_html(story)
    if description:
        parts.append(f"<description>{text(description)}</description>")
    body = body_html(story)
    if body:
        parts.append(f"<content:encoded>{text(body)}</content:encoded>")
    parts.append("</item>")
    return "\n".join(parts)
