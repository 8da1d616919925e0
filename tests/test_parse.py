"""Parsing and normalising one document: every field of the record, for
each format; dates; HTML cleaning; hostile documents."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aggregator.model import Author, Enclosure
from aggregator.parse import ParseError, parse_document

NOW = datetime(2026, 6, 15, 12, 0, 0, tzinfo=timezone.utc)
UTC = timezone.utc

RSS2 = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"
     xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/">
<channel>
  <title>Example &amp; Co News</title>
  <link>https://news.example.com/</link>
  <description>All the news</description>
  <language>en-gb</language>
  <ttl>45</ttl>
  <item>
    <title>Ceasefire talks &lt;b&gt;resume&lt;/b&gt; in Erbil</title>
    <link>https://news.example.com/world/ceasefire?utm_source=rss&amp;id=9</link>
    <guid isPermaLink="false">story-9</guid>
    <pubDate>Mon, 15 Jun 2026 09:30:00 +0300</pubDate>
    <description>&lt;p&gt;Short &lt;a href="/world"&gt;summary&lt;/a&gt;&lt;/p&gt;</description>
    <content:encoded><![CDATA[<p>Full <b>text</b> <img src="/img/map.png" alt="map"><script>alert(1)</script></p>]]></content:encoded>
    <author>desk@example.com (Jane Reporter)</author>
    <dc:creator>John Editor</dc:creator>
    <category>Middle East</category>
    <category>Politics</category>
    <enclosure url="https://cdn.example.com/audio/9.mp3" type="audio/mpeg" length="123456"/>
    <media:thumbnail url="https://cdn.example.com/thumb/9.jpg"/>
  </item>
</channel></rss>"""


def test_rss2_every_field() -> None:
    feed = parse_document(RSS2, "https://news.example.com/feed.xml", {"content-type": "application/rss+xml"}, NOW)
    assert feed.title == "Example & Co News"
    assert feed.site_url == "https://news.example.com/"
    assert feed.language == "en-gb"
    assert feed.ttl == 45 * 60
    assert len(feed.entries) == 1
    e = feed.entries[0]
    assert e.entry_key == "story-9" and e.key_rule == "guid"
    assert e.guid == "story-9"
    assert e.title == "Ceasefire talks resume in Erbil"  # markup reduced to text
    assert e.url == "https://news.example.com/world/ceasefire?id=9"  # tracking parameter gone
    assert e.canonical_url == "https://news.example.com/world/ceasefire?id=9"
    assert e.published_at == datetime(2026, 6, 15, 6, 30, tzinfo=UTC)  # +0300 -> UTC
    assert e.summary == '<p>Short <a href="https://news.example.com/world" rel="noopener noreferrer">summary</a></p>'
    assert e.content == '<p>Full <b>text</b> <img src="https://news.example.com/img/map.png" alt="map"></p>'
    assert Author(name="Jane Reporter", email="desk@example.com") in e.authors
    assert Author(name="John Editor") in e.authors
    assert e.categories == ("Middle East", "Politics")
    assert e.enclosures == (Enclosure("https://cdn.example.com/audio/9.mp3", "audio/mpeg", 123456),)
    assert e.image == "https://cdn.example.com/thumb/9.jpg"
    assert e.language == "en-gb"
    assert len(e.content_hash) == 32


ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="ar">
  <title type="text">أخبار</title>
  <link rel="alternate" href="https://arabic.example.org/"/>
  <link rel="self" href="https://arabic.example.org/atom.xml"/>
  <id>tag:arabic.example.org,2026:feed</id>
  <updated>2026-06-14T10:00:00Z</updated>
  <entry>
    <title type="html">&lt;i&gt;عنوان&lt;/i&gt; الخبر</title>
    <link rel="alternate" type="text/html" href="/2026/06/story"/>
    <link rel="enclosure" type="video/mp4" length="999" href="https://cdn.example.org/v.mp4"/>
    <id>tag:arabic.example.org,2026:1</id>
    <published>2026-06-14T08:00:00+02:00</published>
    <updated>2026-06-14T09:00:00Z</updated>
    <author><name>Layla</name><email>layla@example.org</email><uri>https://example.org/layla</uri></author>
    <category term="politics" label="Politics"/>
    <summary type="text">A plain &lt;text&gt; summary</summary>
    <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">Body <a href="javascript:alert(1)">link</a></p></div></content>
  </entry>
</feed>""".encode("utf-8")


def test_atom_every_field() -> None:
    feed = parse_document(ATOM, "https://arabic.example.org/atom.xml", {"content-type": "application/atom+xml"}, NOW)
    assert feed.title == "أخبار"
    assert feed.site_url == "https://arabic.example.org/"
    assert feed.self_url == "https://arabic.example.org/atom.xml"
    assert feed.updated_at == datetime(2026, 6, 14, 10, tzinfo=UTC)
    e = feed.entries[0]
    assert e.guid == "tag:arabic.example.org,2026:1"
    assert e.title == "عنوان الخبر"
    assert e.url == "https://arabic.example.org/2026/06/story"  # relative link resolved
    assert e.published_at == datetime(2026, 6, 14, 6, tzinfo=UTC)
    assert e.updated_at == datetime(2026, 6, 14, 9, tzinfo=UTC)
    assert e.authors == (Author("Layla", "layla@example.org", "https://example.org/layla"),)
    assert e.categories == ("Politics",)
    assert e.summary == "<p>A plain &lt;text&gt; summary</p>"  # text type escaped, not parsed
    assert "onclick" not in (e.content or "") and "javascript" not in (e.content or "")
    assert "Body" in (e.content or "")
    assert e.enclosures == (Enclosure("https://cdn.example.org/v.mp4", "video/mp4", 999),)
    assert e.language == "ar"


RSS1 = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
         xmlns:dc="http://purl.org/dc/elements/1.1/">
  <channel rdf:about="https://rdf.example.net/">
    <title>RDF News</title><link>https://rdf.example.net/</link><description>d</description>
    <dc:language>de</dc:language>
  </channel>
  <item rdf:about="https://rdf.example.net/item/1">
    <title>Erste Meldung</title>
    <link>https://rdf.example.net/item/1</link>
    <description>Kurz &amp; knapp</description>
    <dc:date>2026-06-10T12:00:00+01:00</dc:date>
    <dc:creator>Hans</dc:creator>
    <dc:subject>Wirtschaft</dc:subject>
  </item>
</rdf:RDF>"""


def test_rss1_every_field() -> None:
    feed = parse_document(RSS1, "https://rdf.example.net/index.rdf", {}, NOW)
    assert feed.title == "RDF News" and feed.language == "de"
    e = feed.entries[0]
    assert e.entry_key == "https://rdf.example.net/item/1"
    assert e.url == "https://rdf.example.net/item/1"
    assert e.title == "Erste Meldung"
    # dc:date is an "updated" date to feedparser; the store falls back to it for published_at.
    assert e.published_at is None and e.updated_at == datetime(2026, 6, 10, 11, tzinfo=UTC)
    assert e.authors == (Author("Hans"),)
    assert e.categories == ("Wirtschaft",)
    assert e.summary == "Kurz &amp; knapp"
    assert e.language == "de"


JSONFEED = """{
  "version": "https://jsonfeed.org/version/1.1",
  "title": "JSON News",
  "home_page_url": "https://json.example.com/",
  "feed_url": "https://json.example.com/feed.json",
  "language": "fr",
  "items": [
    {
      "id": "https://json.example.com/p/1",
      "url": "https://json.example.com/p/1?utm_medium=feed",
      "title": "Première <nouvelle>",
      "content_html": "<p>Texte <iframe src='https://evil.example/'></iframe></p>",
      "summary": "Résumé",
      "image": "https://json.example.com/i/1.jpg",
      "date_published": "2026-06-01T10:00:00-04:00",
      "date_modified": "2026-06-02T10:00:00Z",
      "authors": [{"name": "Chloé", "url": "https://json.example.com/chloe"}],
      "tags": ["monde", "paix"],
      "attachments": [{"url": "https://json.example.com/a.mp3", "mime_type": "audio/mpeg", "size_in_bytes": 42}]
    },
    {"id": "2", "content_text": "No title, no date.\\n\\nSecond paragraph."}
  ]
}""".encode("utf-8")


def test_json_feed_every_field() -> None:
    feed = parse_document(JSONFEED, "https://json.example.com/feed.json", {"content-type": "application/feed+json"}, NOW)
    assert feed.title == "JSON News" and feed.site_url == "https://json.example.com/" and feed.language == "fr"
    assert feed.self_url == "https://json.example.com/feed.json"
    e = feed.entries[0]
    assert e.guid == "https://json.example.com/p/1"
    assert e.url == "https://json.example.com/p/1"
    assert e.title == "Première"  # markup is dropped from every title, even JSON Feed's plain-text ones
    assert e.content == "<p>Texte </p>"
    assert e.summary == "<p>Résumé</p>"
    assert e.image == "https://json.example.com/i/1.jpg"
    assert e.published_at == datetime(2026, 6, 1, 14, tzinfo=UTC)
    assert e.updated_at == datetime(2026, 6, 2, 10, tzinfo=UTC)
    assert e.authors == (Author("Chloé", None, "https://json.example.com/chloe"),)
    assert e.categories == ("monde", "paix")
    assert e.enclosures == (Enclosure("https://json.example.com/a.mp3", "audio/mpeg", 42),)
    assert e.language == "fr"
    second = feed.entries[1]
    assert second.title == "No title, no date. Second paragraph." and second.published_at is None
    assert second.content == "<p>No title, no date.</p><p>Second paragraph.</p>"


def _dated(date: str) -> datetime | None:
    doc = f"""<rss version="2.0"><channel><title>t</title><item><title>x</title><link>http://e.com/1</link>
    <pubDate>{date}</pubDate></item></channel></rss>""".encode()
    return parse_document(doc, "http://e.com/feed", {}, NOW).entries[0].published_at


def test_date_without_timezone_is_utc() -> None:
    assert _dated("Sat, 13 Jun 2026 10:00:00") == datetime(2026, 6, 13, 10, tzinfo=UTC)


@pytest.mark.parametrize("zone,hour", [("EST", 15), ("EDT", 14), ("PST", 18), ("GMT", 10), ("UT", 10), ("Z", 10)])
def test_date_zone_abbreviations(zone: str, hour: int) -> None:
    assert _dated(f"Sat, 13 Jun 2026 10:00:00 {zone}") == datetime(2026, 6, 13, hour, tzinfo=UTC)


def test_future_date_is_dropped_so_the_store_falls_back() -> None:
    assert _dated("Sun, 14 Jun 2026 10:00:00 +0000") is not None  # yesterday
    assert _dated("Tue, 16 Jun 2026 11:00:00 +0000") is not None  # within a day ahead: clock skew
    assert _dated("Wed, 17 Jun 2026 13:00:00 +0000") is None  # more than a day ahead
    assert _dated("Tue, 01 Jan 2999 00:00:00 +0000") is None


def test_epoch_zero_and_garbage_dates_are_no_dates() -> None:
    assert _dated("Thu, 01 Jan 1970 00:00:00 +0000") is None
    assert _dated("not a date at all") is None


def test_undated_entry() -> None:
    doc = b"<rss version='2.0'><channel><title>t</title><item><title>x</title><link>http://e.com/1</link></item></channel></rss>"
    entry = parse_document(doc, "http://e.com/feed", {}, NOW).entries[0]
    assert entry.published_at is None and entry.updated_at is None


def test_entry_keys_guid_link_hash_and_untrusted_guids() -> None:
    doc = b"""<rss version="2.0"><channel><title>t</title>
      <item><title>a</title><link>http://e.com/a</link><guid>same</guid></item>
      <item><title>b</title><link>http://e.com/b</link><guid>same</guid></item>
      <item><title>c</title><link>http://e.com/c</link></item>
      <item><title>d</title><pubDate>Sat, 13 Jun 2026 10:00:00 GMT</pubDate></item>
      <item><title>e</title><guid>e-guid</guid></item>
    </channel></rss>"""
    entries = parse_document(doc, "http://e.com/feed", {}, NOW).entries
    assert [(e.entry_key, e.key_rule) for e in entries][:3] == [
        ("http://e.com/a", "link:untrusted-guid"), ("http://e.com/b", "link:untrusted-guid"), ("http://e.com/c", "link")]
    assert entries[3].key_rule == "hash" and entries[3].entry_key.startswith("hash:")
    assert (entries[4].entry_key, entries[4].key_rule) == ("e-guid", "guid")


def test_same_key_twice_in_one_document_is_folded() -> None:
    doc = b"""<rss version="2.0"><channel><title>t</title>
      <item><title>a</title><link>http://e.com/a</link><guid>g1</guid></item>
      <item><title>a again</title><link>http://e.com/a</link><guid>g1</guid></item>
    </channel></rss>"""
    feed = parse_document(doc, "http://e.com/feed", {}, NOW)
    assert [e.title for e in feed.entries] == ["a"]
    assert feed.folded == [("g1", "same-key-in-document")]
    assert feed.entry_count == 2


def test_known_unchanged_entries_skip_normalising() -> None:
    first = parse_document(RSS2, "https://news.example.com/feed.xml", {}, NOW).entries[0]
    again = parse_document(RSS2, "https://news.example.com/feed.xml", {}, NOW, {first.entry_key: first.content_hash})
    assert again.entries[0].unchanged and again.entries[0].title == ""
    changed = parse_document(RSS2, "https://news.example.com/feed.xml", {}, NOW, {first.entry_key: "other"})
    assert not changed.entries[0].unchanged and changed.entries[0].title


def test_html_cleaning() -> None:
    html = (
        '<p style="background:url(javascript:alert(1))" onerror="x()">ok</p>'
        '<img src="https://t.example/p.gif" width="1" height="1">'
        '<img src="/real.jpg" width="600" height="400">'
        '<a href="data:text/html,evil">d</a><object data="x.swf"></object><embed src="x.swf">'
        '<iframe src="https://youtube.com/embed/x"></iframe><style>p{x:expression(alert(1))}</style>'
        '<svg><script>alert(1)</script></svg><form action="/x"><input></form>'
    )
    doc = f"""<rss version="2.0"><channel><title>t</title><item><title>x</title><link>http://e.com/1</link>
      <description><![CDATA[{html}]]></description></item></channel></rss>""".encode()
    summary = parse_document(doc, "http://e.com/feed", {}, NOW).entries[0].summary or ""
    for bad in ("style", "onerror", "javascript", "data:", "object", "embed", "iframe", "expression", "script",
                "svg", "t.example/p.gif", "<form", "<input"):
        assert bad not in summary, bad
    assert '<img src="http://e.com/real.jpg" width="600" height="400">' in summary
    assert "<p>ok</p>" in summary


@pytest.mark.parametrize(
    "body,message",
    [
        (b"", "empty document"),
        (b"   \n", "empty document"),
        (b"<!DOCTYPE html><html><head><title>Hi</title></head><body>page</body></html>", "HTML page"),
        (b"just some text", "no RSS, Atom or JSON Feed document"),
        (b'{"hello": "world"}', "without a jsonfeed.org version"),
        (b"{not json", "invalid JSON"),
    ],
)
def test_not_a_feed(body: bytes, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_document(body, "http://e.com/feed", {}, NOW)


def test_truncated_xml_still_yields_complete_entries() -> None:
    doc = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
      <item><title>one</title><link>http://e.com/1</link></item>
      <item><title>two</title><link>http://e.com/2</link></item>
      <item><title>thr"""
    feed = parse_document(doc, "http://e.com/feed", {"content-type": "application/rss+xml"}, NOW)
    assert [e.title for e in feed.entries][:2] == ["one", "two"]
    assert feed.warning  # bozo is reported, entries kept


def test_wrong_content_type_is_ignored() -> None:
    feed = parse_document(RSS2, "https://news.example.com/feed.xml", {"content-type": "text/html; charset=utf-8"}, NOW)
    assert feed.entries[0].title.startswith("Ceasefire")


def test_external_entities_are_not_resolved() -> None:
    doc = b"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd"><!ENTITY web SYSTEM "http://127.0.0.1:9/x">]>
<rss version="2.0"><channel><title>t&xxe;</title><item><title>a&xxe;&web;</title><link>http://e.com/1</link>
<description>&xxe;</description></item></channel></rss>"""
    feed = parse_document(doc, "http://e.com/feed", {"content-type": "application/rss+xml"}, NOW)
    text = repr(feed)
    assert "root:" not in text and "/bin/" not in text
    assert feed.entries and feed.entries[0].url == "http://e.com/1"


def test_billion_laughs_is_not_expanded() -> None:
    doc = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<rss version="2.0"><channel><title>t</title><item><title>&lol9;</title><link>http://e.com/1</link></item></channel></rss>"""
    feed = parse_document(doc, "http://e.com/feed", {"content-type": "application/rss+xml"}, NOW)
    assert all(len(e.title) < 10_000 for e in feed.entries)


def test_declared_encoding_wrong() -> None:
    text = "<rss version='2.0'><channel><title>Новости</title><item><title>Привет мир</title><link>http://e.com/1</link></item></channel></rss>"
    body = b'<?xml version="1.0" encoding="utf-8"?>' + text.encode("windows-1251")
    feed = parse_document(body, "http://e.com/feed", {"content-type": "application/rss+xml; charset=utf-8"}, NOW)
    assert len(feed.entries) == 1  # something usable, no exception
    latin = '<?xml version="1.0" encoding="iso-8859-1"?>' + "<rss version='2.0'><channel><title>t</title><item><title>Café crème</title><link>http://e.com/1</link></item></channel></rss>"
    feed = parse_document(latin.encode("utf-8"), "http://e.com/feed", {}, NOW)
    assert len(feed.entries) == 1 and "Caf" in feed.entries[0].title


def test_control_characters_are_removed() -> None:
    doc = b"<rss version='2.0'><channel><title>t</title><item><title>bad\x01\x02 title\x0b</title><link>http://e.com/1</link></item></channel></rss>"
    feed = parse_document(doc, "http://e.com/feed", {}, NOW)
    assert feed.entries[0].title in ("bad title", "badtitle")


def test_image_falls_back_to_the_first_picture_in_the_text() -> None:
    doc = b"""<rss version="2.0"><channel><title>t</title><item><title>x</title><link>http://e.com/1</link>
      <description><![CDATA[<p><img src="/px.gif" width="1" height="1"><img src="/photo.jpg?a=1&amp;b=2" alt="">Text</p>]]></description>
    </item></channel></rss>"""
    entry = parse_document(doc, "http://e.com/feed", {}, NOW).entries[0]
    assert entry.image == "http://e.com/photo.jpg?a=1&b=2"  # not the tracking pixel
