"""The subscription list as OPML 2.0 (`feeds export`, /opml). Feeds are
grouped under their first tag; every tag is also in the category attribute,
so a round trip through `feeds import` keeps them."""

from __future__ import annotations

from collections.abc import Sequence

from aggregator.model import Subscription
from aggregator.publish.common import MAX_SOURCE_TITLE, shorten
from aggregator.publish.xmlutil import attr, text


def render_opml(
    subs: Sequence[Subscription],
    title: str,
    titles: dict[str, str] | None = None,
    site_urls: dict[str, str] | None = None,
) -> bytes:
    titles = titles or {}
    site_urls = site_urls or {}
    groups: dict[str, list[Subscription]] = {}
    for sub in sorted(subs, key=lambda s: (s.title or titles.get(s.feed_id) or s.url).lower()):
        groups.setdefault(sub.tags[0] if sub.tags else "", []).append(sub)
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<opml version="2.0">',
        f"  <head><title>{text(title)}</title></head>",
        "  <body>",
    ]

    def outline(sub: Subscription, indent: str) -> str:
        name = shorten(sub.title or titles.get(sub.feed_id), MAX_SOURCE_TITLE) or sub.url
        parts = [f'type="rss" text="{attr(name)}" title="{attr(name)}" xmlUrl="{attr(sub.url)}"']
        if site_urls.get(sub.feed_id):
            parts.append(f'htmlUrl="{attr(site_urls[sub.feed_id])}"')
        if sub.tags:
            parts.append('category="{}"'.format(attr(",".join("/" + t for t in sub.tags))))
        return f"{indent}<outline {' '.join(parts)}/>"

    for group, members in sorted(groups.items()):
        if group:
            lines.append(f'    <outline text="{attr(group)}" title="{attr(group)}">')
            lines.extend(outline(s, "      ") for s in members)
            lines.append("    </outline>")
        else:
            lines.extend(outline(s, "    ") for s in members)
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines).encode("utf-8")
