"""Small builders for fixture feed documents."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr


@dataclass
class Item:
    title: str | None = "Title"
    link: str | None = None
    guid: str | None = None
    guid_permalink: bool | None = None
    date: str | None = None  # as written in the document
    updated: str | None = None
    summary: str | None = None  # HTML, escaped into the document
    content: str | None = None
    author: str | None = None  # RSS <author> text, or Atom name
    author_email: str | None = None
    creator: str | None = None  # dc:creator
    categories: list[str] = field(default_factory=list)
    enclosure: tuple[str, str, int] | None = None  # url, type, length
    thumbnail: str | None = None
    extra: str = ""  # raw XML inside the item


def rss(items: list[Item], title: str = "Fixture feed", link: str = "http://example.com/",
        extra_channel: str = "", language: str | None = "en") -> str:
    parts = []
    for it in items:
        x = ["<item>"]
        if it.title is not None:
            x.append(f"<title>{escape(it.title)}</title>")
        if it.link:
            x.append(f"<link>{escape(it.link)}</link>")
        if it.guid:
            perma = "" if it.guid_permalink is None else f' isPermaLink="{str(it.guid_permalink).lower()}"'
            x.append(f"<guid{perma}>{escape(it.guid)}</guid>")
        if it.date:
            x.append(f"<pubDate>{escape(it.date)}</pubDate>")
        if it.updated:
            x.append(f"<atom:updated>{escape(it.updated)}</atom:updated>")
        if it.summary is not None:
            x.append(f"<description>{escape(it.summary)}</description>")
        if it.content is not None:
            x.append(f"<content:encoded>{escape(it.content)}</content:encoded>")
        if it.author:
            x.append(f"<author>{escape(it.author)}</author>")
        if it.creator:
            x.append(f"<dc:creator>{escape(it.creator)}</dc:creator>")
        for cat in it.categories:
            x.append(f"<category>{escape(cat)}</category>")
        if it.enclosure:
            url, kind, length = it.enclosure
            x.append(f"<enclosure url={quoteattr(url)} type={quoteattr(kind)} length=\"{length}\"/>")
        if it.thumbnail:
            x.append(f"<media:thumbnail url={quoteattr(it.thumbnail)}/>")
        x.append(it.extra)
        x.append("</item>")
        parts.append("".join(x))
    lang = f"<language>{language}</language>" if language else ""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/" '
        'xmlns:atom="http://www.w3.org/2005/Atom">\n'
        f"<channel><title>{escape(title)}</title><link>{escape(link)}</link><description>d</description>{lang}"
        f"{extra_channel}\n" + "\n".join(parts) + "\n</channel></rss>\n"
    )


def atom(items: list[Item], title: str = "Fixture Atom", link: str = "http://example.com/",
         feed_id: str = "urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6", updated: str = "2026-01-01T00:00:00Z") -> str:
    parts = []
    for it in items:
        x = ["<entry>"]
        if it.title is not None:
            x.append(f'<title type="html">{escape(it.title)}</title>')
        if it.link:
            x.append(f'<link rel="alternate" href={quoteattr(it.link)}/>')
        if it.guid:
            x.append(f"<id>{escape(it.guid)}</id>")
        if it.date:
            x.append(f"<published>{escape(it.date)}</published>")
        if it.updated:
            x.append(f"<updated>{escape(it.updated)}</updated>")
        if it.summary is not None:
            x.append(f'<summary type="html">{escape(it.summary)}</summary>')
        if it.content is not None:
            x.append(f'<content type="html">{escape(it.content)}</content>')
        if it.author:
            email = f"<email>{escape(it.author_email)}</email>" if it.author_email else ""
            x.append(f"<author><name>{escape(it.author)}</name>{email}</author>")
        for cat in it.categories:
            x.append(f"<category term={quoteattr(cat)}/>")
        if it.enclosure:
            url, kind, length = it.enclosure
            x.append(f'<link rel="enclosure" href={quoteattr(url)} type={quoteattr(kind)} length="{length}"/>')
        x.append(it.extra)
        x.append("</entry>")
        parts.append("".join(x))
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" '
        'xmlns:media="http://search.yahoo.com/mrss/">\n'
        f"<title>{escape(title)}</title><link href={quoteattr(link)}/><id>{escape(feed_id)}</id>"
        f"<updated>{updated}</updated>\n" + "\n".join(parts) + "\n</feed>\n"
    )


def jsonfeed(items: list[Item], title: str = "Fixture JSON", home: str = "http://example.com/") -> str:
    out = []
    for it in items:
        obj: dict[str, object] = {"id": it.guid or it.link or it.title}
        if it.link:
            obj["url"] = it.link
        if it.title is not None:
            obj["title"] = it.title
        if it.content is not None:
            obj["content_html"] = it.content
        if it.summary is not None:
            obj["summary"] = it.summary
        if it.date:
            obj["date_published"] = it.date
        if it.updated:
            obj["date_modified"] = it.updated
        if it.author:
            obj["authors"] = [{"name": it.author}]
        if it.categories:
            obj["tags"] = it.categories
        if it.enclosure:
            url, kind, length = it.enclosure
            obj["attachments"] = [{"url": url, "mime_type": kind, "size_in_bytes": length}]
        if it.thumbnail:
            obj["image"] = it.thumbnail
        out.append(obj)
    return json.dumps({"version": "https://jsonfeed.org/version/1.1", "title": title, "home_page_url": home,
                       "items": out}, ensure_ascii=False)


def story(n: int, site: str = "http://news.example.com", **kw: object) -> Item:
    """An ordinary dated news item number n."""
    defaults: dict[str, object] = dict(
        title=f"Story {n}", link=f"{site}/story/{n}", guid=f"{site}/story/{n}",
        date=f"Mon, {n % 28 + 1:02d} Jun 2026 10:{n % 60:02d}:00 +0000", summary=f"<p>Body of story {n}</p>",
    )
    defaults.update(kw)
    return Item(**defaults)  # type: ignore[arg-type]
