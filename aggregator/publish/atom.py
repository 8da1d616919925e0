"""Atom 1.0 (RFC 4287)."""

from __future__ import annotations

from collections.abc import Sequence

from aggregator.model import Story
from aggregator.publish.common import (
    GENERATOR,
    GENERATOR_URI,
    GENERATOR_VERSION,
    FeedMeta,
    body_html,
    entry_published,
    entry_updated,
    newest_update,
    rfc3339,
)
from aggregator.publish.xmlutil import attr, text


def render_atom(stories: Sequence[Story], meta: FeedMeta) -> bytes:
    out = [
        '<?xml version="1.0" encoding="utf-8"?>',
        f'<feed xmlns="http://www.w3.org/2005/Atom"{_lang(meta.language)}>',
        f"<id>{text(meta.id)}</id>",
        f'<title type="text">{text(meta.title)}</title>',
        f'<subtitle type="text">{text(meta.subtitle)}</subtitle>',
        f'<link rel="self" type="application/atom+xml" href="{attr(meta.url(".atom"))}"/>',
        f'<link rel="alternate" type="text/html" href="{attr(meta.home_url)}"/>',
        f'<generator uri="{attr(GENERATOR_URI)}" version="{attr(GENERATOR_VERSION)}">{GENERATOR}</generator>',
        f"<updated>{rfc3339(newest_update(stories, meta.empty_updated))}</updated>",
    ]
    for story in stories:
        out.append(_entry(story))
    out.append("</feed>\n")
    return "\n".join(out).encode("utf-8")


def _lang(language: str | None) -> str:
    return f' xml:lang="{attr(language)}"' if language else ""


def _entry(story: Story) -> str:
    a = story.article
    source = story.source
    parts = ["<entry>", f"<id>{text(a.id)}</id>", f'<title type="text">{text(a.title)}</title>']
    if a.url:
        parts.append(f'<link rel="alternate" type="text/html" href="{attr(a.url)}"/>')
    for other in story.also:
        if other.url:
            parts.append(
                f'<link rel="related" type="text/html" href="{attr(other.url)}" '
                f'title="{attr(other.source.title + ": " + other.title)}"/>'
            )
    for enclosure in a.enclosures:
        extra = f' type="{attr(enclosure.type)}"' if enclosure.type else ""
        extra += f' length="{enclosure.length}"' if enclosure.length is not None else ""
        parts.append(f'<link rel="enclosure" href="{attr(enclosure.url)}"{extra}/>')
    parts.append(f"<published>{rfc3339(entry_published(story))}</published>")
    parts.append(f"<updated>{rfc3339(entry_updated(story))}</updated>")
    authors = a.authors or ()
    for author in authors:
        parts.append(
            "<author>"
            + f"<name>{text(author.name or author.email)}</name>"
            + (f"<email>{text(author.email)}</email>" if author.email else "")
            + (f"<uri>{text(author.url)}</uri>" if author.url else "")
            + "</author>"
        )
    if not authors:
        # Atom requires an author; the source is the honest answer.
        parts.append(f"<author><name>{text(source.title)}</name></author>")
    for category in a.categories:
        parts.append(f'<category term="{attr(category)}"/>')
    if a.summary and a.content:
        parts.append(f'<summary type="html">{text(a.summary)}</summary>')
    body = body_html(story)
    if body:
        parts.append(f'<content type="html">{text(body)}</content>')
    elif not a.url:
        # RFC 4287 4.1.1: an entry without an alternate link must have content.
        parts.append(f'<content type="text">{text(a.title)}</content>')
    else:
        # No text at all: its title stands in, so no reader shows an empty entry.
        parts.append(f'<summary type="text">{text(a.title)}</summary>')
    parts.append(_source(story))
    parts.append("</entry>")
    return "\n".join(parts)


def _source(story: Story) -> str:
    source = story.source
    updated = source.updated_at or entry_updated(story)
    parts = [
        "<source>",
        f"<id>{text(source.feed_url)}</id>",
        f'<title type="text">{text(source.title)}</title>',
        f'<link rel="self" href="{attr(source.feed_url)}"/>',
    ]
    if source.site_url:
        parts.append(f'<link rel="alternate" type="text/html" href="{attr(source.site_url)}"/>')
    parts.append(f"<updated>{rfc3339(updated)}</updated>")
    parts.append("</source>")
    return "".join(parts)
