"""A small but realistic newsroom on a fixture server, for the reading pages:
four outlets over three days, one event reported by three of them (a story
with several outlets), a busy day that needs two archive pages, a thumbnail,
right-to-left text, an unbreakable 90-character word, a summary that ends in
its own "Read more" link, markup in a title. Every article link points at a
page on the fixture server, so every link on our pages can be followed."""

from __future__ import annotations

from dataclasses import dataclass

from tests.feedgen import Item, rss
from tests.fixture_server import FeedServer

# A 1x1 PNG, the outlets' thumbnail.
PIXEL = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63f8cfc0f01f0005"
    "0001ff89993d1d0000000049454e44ae426082"
)

EVENT_TITLE = "Erbil airport reopens after a dust storm closed its runway for two days"

# Headlines of the busy day: one outlet's wire, so they never cluster with each other.
PLACES = ["Duhok", "Sulaymaniyah", "Kirkuk", "Halabja", "Zakho", "Soran", "Akre", "Ranya", "Koya", "Chamchamal",
          "Penjwen", "Amedi", "Shaqlawa", "Khanaqin"]
EVENTS = ["opens a new public library", "council votes on the water budget", "hospital adds a children's ward",
          "farmers report an early wheat harvest"]


@dataclass
class Newsdesk:
    feeds: dict[str, str]  # outlet name -> feed URL
    event_outlets: tuple[str, ...]  # the outlets that reported EVENT_TITLE
    busy_day: str  # the day with more stories than one archive page holds
    articles: int  # visible articles in all
    items: dict[str, list[Item]]  # outlet name -> its feed's items


def _date(day: int, hour: int, minute: int) -> str:
    return f"{['Mon', 'Tue', 'Wed'][day - 1]}, {day:02d} Jun 2026 {hour:02d}:{minute:02d}:00 +0000"


def build(server: FeedServer) -> Newsdesk:
    image = server.add("/img/thumb.png", PIXEL, content_type="image/png")

    def page(slug: str, title: str) -> str:
        return server.add(f"/news/{slug}", f"<!DOCTYPE html><title>{title}</title><h1>{title}</h1>",
                          content_type="text/html; charset=utf-8")

    def item(outlet: str, slug: str, title: str, summary: str, day: int, hour: int, minute: int,
             **extra: object) -> Item:
        link = page(f"{outlet}/{slug}", slug)
        return Item(title=title, link=link, guid=link, date=_date(day, hour, minute), summary=summary,
                    **extra)  # type: ignore[arg-type]

    event_summary = ("<p>Flights resumed on Wednesday morning at Erbil International Airport after a dust storm "
                     "closed the runway for two days and stranded hundreds of travellers.</p>")
    k24 = [
        item("k24", "airport", EVENT_TITLE, event_summary, 3, 9, 10, thumbnail=image),
        item("k24", "markets", "Qaysari bazaar traders prepare for the Eid rush",
             '<p>Shopkeepers in the old covered market stock sweets and new clothes.<a href="https://k24.example/more">'
             "Read more</a></p>", 3, 8, 0),
        item("k24", "rtl", "ئاشتی لە هەولێر: کۆبوونەوەی نوێ بۆ ئاشتی", "<p>کۆبوونەوەیەکی نوێ لە هەولێر.</p>", 2, 17, 30),
        item("k24", "long", "Word" + "x" * 86 + " and a link https://example.com/" + "a" * 70,
             "<p>A headline with a ninety-character word must wrap on a phone screen too.</p>", 2, 16, 0),
    ]
    rudaw = [
        item("rudaw", "airport", "Erbil airport reopens runway after two-day dust storm closure",
             "<p>Erbil International Airport resumed flights on Wednesday after the dust storm that closed the "
             "runway for two days; hundreds of stranded travellers boarded.</p>", 3, 9, 40),
        item("rudaw", "script", "<script>alert('x')</script>Parliament session postponed",
             "<p>The session was moved to next week.</p><script>alert(1)</script>", 3, 7, 15),
        item("rudaw", "heritage", "Citadel restoration enters its final phase",
             "<p>Engineers finish the eastern wall of the ancient citadel.</p>", 1, 12, 0),
    ]
    planet = [
        item("planet", "airport", "Dust storm over: Erbil airport reopens its runway after two days",
             "<p>The airport in Erbil reopened on Wednesday once the dust storm that shut its runway for two days "
             "had passed, letting stranded travellers fly.</p>", 3, 10, 5),
    ]
    n = 0
    for place in PLACES:
        for event in EVENTS:
            n += 1
            planet.append(item("planet", f"wire-{n}", f"{place} {event}",
                               f"<p>Wire report {n}: in {place}, local officials said the {event.split()[-1]} "
                               "plans were announced this week.</p>", 2, n % 24 if n < 24 else 23,
                               n % 60))
    tech = [
        item("tech", "phones", "A phone maker opens an assembly plant near Erbil",
             "<p>The plant will employ four hundred people by next year.</p>", 3, 6, 45),
        item("tech", "fibre", "Fibre broadband reaches Duhok's old town", "<p>Street works end next month.</p>",
             1, 9, 30),
    ]
    outlets = {"Kurdistan 24": ("k24", k24, ["kurdistan", "world"]), "Rudaw English": ("rudaw", rudaw, ["kurdistan"]),
               "The Daily Planet": ("planet", planet, ["world"]), "Tech Wire": ("tech", tech, ["tech"])}
    feeds = {}
    for name, (slug, items, _tags) in outlets.items():
        feeds[name] = server.add(f"/feeds/{slug}.xml", rss(items, title=name, link=server.url(f"/news/{slug}/")))
        page(f"{slug}/", name)
    return Newsdesk(feeds=feeds, event_outlets=("Kurdistan 24", "Rudaw English", "The Daily Planet"),
                    busy_day="2026-06-02", articles=sum(len(items) for _, items, _ in outlets.values()),
                    items={name: items for name, (_, items, _) in outlets.items()})


def subscriptions(desk: Newsdesk) -> list[dict[str, object]]:
    tags = {"Kurdistan 24": ["kurdistan", "world"], "Rudaw English": ["kurdistan"], "The Daily Planet": ["world"],
            "Tech Wire": ["tech"]}
    return [{"url": url, "tags": tags[name]} for name, url in desk.feeds.items()]
