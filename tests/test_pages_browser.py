"""The reading pages in a real browser: `aggregator run` serves a small
newsroom (tests/newsdesk.py), headless Chromium (tests/browser.py) opens each
kind of page at phone (360x740) and desktop (1280x900) widths, and the tests
assert on what it rendered: nothing wider than the screen, readable type,
tap targets, the search box, the story page's outlets; and every link on every
page answers 200.

Screenshots of each kind of page at both widths go to a temporary folder, or
to the folder named by $AGGREGATOR_SCREENSHOTS (docs/screenshots for the README).
"""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import html5lib
import pytest

from tests.browser import Browser, Page
from tests.conftest import REPO, Workspace
from tests.daemon import Daemon
from tests.fixture_server import FeedServer
from tests.hostile import html_problems
from tests.newsdesk import EVENT_TITLE, Newsdesk, build, subscriptions

PHONE = (360, 740)
DESKTOP = (1280, 900)
WIDTHS = [pytest.param(PHONE, id="phone"), pytest.param(DESKTOP, id="desktop")]


class Service:
    def __init__(self, daemon: Daemon, desk: Newsdesk, server: FeedServer):
        self.daemon = daemon
        self.desk = desk
        self.server = server
        self.base = f"http://127.0.0.1:{daemon.port}/"

    def url(self, path: str) -> str:
        return self.base + path.lstrip("/")

    def get(self, path: str) -> tuple[int, bytes]:
        return self.daemon.get("/" + path.lstrip("/"))


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    server = FeedServer()
    ws = Workspace(tmp_path_factory.mktemp("pages"))
    desk = build(server)
    ws.write_config(stories={"enabled": True}, output={"entries": 20, "per_source": 10})
    ws.feeds(subscriptions(desk))
    daemon = Daemon(ws)
    try:
        daemon.start()

        def ready() -> bool:
            status, body = daemon.get("/")
            _, archive = daemon.get("/archive")
            return status == 200 and b"All reports" in body and b"2026-06-01" in archive

        daemon.wait_until(ready, 60, "every feed polled and the event's three reports in one story")
        yield Service(daemon, desk, server)
    finally:
        daemon.kill()
        ws.close()
        server.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("AGGREGATOR_SCREENSHOTS")
    return (REPO / wanted) if wanted else tmp_path_factory.mktemp("screenshots")


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and ((tag in ("a", "link") and name == "href") or (tag == "img" and name == "src")
                          or (tag == "form" and name == "action")):
                self.urls.append(value)


def _fetch(url: str) -> tuple[int, str, bytes]:
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", f"a link leaves the machine: {url}"
    conn = http.client.HTTPConnection("127.0.0.1", parts.port, timeout=10)
    conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, response.getheader("Content-Type") or "", body


def crawl(service: Service) -> dict[str, bytes]:
    """Every page of the service reachable from the home page (URL -> body);
    asserts that every link, image and form target on them answers 200."""
    pages: dict[str, bytes] = {}
    checked: dict[str, int] = {}
    queue = [service.base]
    while queue:
        url = queue.pop()
        if url in pages:
            continue
        status, content_type, body = _fetch(url)
        assert status == 200, f"{url}: {status}"
        pages[url] = body
        parser = _Links()
        parser.feed(body.decode("utf-8"))
        for link in parser.urls:
            target = urljoin(url, link).split("#", 1)[0]
            if target.startswith(service.base) and urlsplit(target).path.endswith((".html", "/", "/feeds", "/archive")):
                if target not in pages:
                    queue.append(target)
            elif target not in checked:
                checked[target] = _fetch(target)[0]
    broken = {u: s for u, s in checked.items() if s != 200}
    assert not broken, broken
    return pages


def test_every_link_resolves_and_every_page_is_valid_html_without_script(service: Service) -> None:
    pages = crawl(service)
    paths = {urlsplit(u).path for u in pages}
    kinds = {
        "home": "/", "tags": r"/tags/\w+\.html", "sources": r"/sources/[0-9a-f]{12}\.html",
        "stories": r"/stories/[0-9a-f]{16}\.html", "archive index": "/archive", "archive day": r"/archive/2026-06-0\d\.html",
        "archive part 2": r"/archive/2026-06-02-2\.html", "sources table": "/feeds",
    }
    for kind, pattern in kinds.items():
        assert any(re.fullmatch(pattern, p) for p in paths), (kind, sorted(paths))
    from aggregator.publish.html import STYLE

    for url, body in pages.items():
        html5lib.HTMLParser(strict=True).parse(body)  # valid HTML5, or it raises
        assert not html_problems(body.decode(), url, document=True, own_style=STYLE)


def _overflowing(page: Page) -> list[str]:
    """Elements that reach past the right edge of the screen."""
    return page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => {"
        " const r = e.getBoundingClientRect(); return r.width && r.right > innerWidth + 0.5; })"
        ".map(e => e.tagName + '.' + e.className + ': ' + (e.textContent || '').slice(0, 60))"
    )


def _small_targets(page: Page) -> list[str]:
    """Links and controls people tap that are less than 44 px high (lines of inline text links aside)."""
    return page.evaluate(
        "[...document.querySelectorAll('.top a, form.search input, form.search button, .links a, .pages a,"
        " .feeds a, .tags a, ul.days a')].filter(e => e.getBoundingClientRect().height < 44)"
        ".map(e => e.outerHTML.slice(0, 80))"
    )


def _images_shown(page: Page, seconds: float = 10) -> bool:
    """Whether the images on the screen loaded (the rest load lazily as one
    scrolls; the crawl checks that every image URL answers)."""
    deadline = time.monotonic() + seconds
    check = ("[...document.images].filter(i => i.getBoundingClientRect().top < innerHeight)"
             ".map(i => i.complete ? (i.naturalWidth > 0 ? 'ok' : 'broken') : 'loading')")
    while time.monotonic() < deadline:
        states = page.evaluate(check)
        if "loading" not in states:
            return "broken" not in states
        time.sleep(0.05)
    return False


PAGE_KINDS = ["home", "tag", "source", "story", "archive", "archive-day", "sources", "search"]


def _page_url(service: Service, kind: str) -> str:
    home = service.get("/")[1].decode()
    if kind == "home":
        return service.base
    if kind == "tag":
        return service.url("tags/kurdistan.html")
    if kind == "source":
        return re.findall(r'href="([^"]*/sources/[0-9a-f]{12}\.html)"', home)[0]
    if kind == "story":
        return re.search(r'href="([^"]*/stories/[0-9a-f]{16}\.html)">All reports', home).group(1)  # type: ignore[union-attr]
    if kind == "archive":
        return service.url("archive")
    if kind == "archive-day":
        return service.url("archive/2026-06-02.html")
    if kind == "sources":
        return service.url("feeds")
    return service.url("search?q=erbil")


@pytest.mark.parametrize("size", WIDTHS)
def test_every_kind_of_page_fits_the_screen(service: Service, browser: Browser, screenshots: Path,
                                            size: tuple[int, int]) -> None:
    width, height = size
    page = browser.page(width, height, mobile=width < 600)
    for kind in PAGE_KINDS:
        page.goto(_page_url(service, kind))
        where = f"{kind} at {width}px"
        assert page.evaluate("document.documentElement.scrollWidth") <= page.evaluate("innerWidth"), where
        assert not _overflowing(page), (where, _overflowing(page))
        assert page.evaluate("document.scripts.length") == 0, where
        assert float(page.evaluate("getComputedStyle(document.body).fontSize").removesuffix("px")) >= 16, where
        assert _images_shown(page), where
        if width < 600:
            assert not _small_targets(page), (where, _small_targets(page))
        shot = screenshots / f"{kind}-{width}.png"
        page.screenshot(shot, full_height_limit=0)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_read_more_stands_apart_from_the_summary(service: Service, browser: Browser) -> None:
    page = browser.page(*PHONE, mobile=True)
    page.goto(service.base)
    entry = page.evaluate(
        "(() => { const a = [...document.querySelectorAll('article')].find(x => x.textContent.includes('Qaysari'));"
        " const s = a.querySelector('p.summary'), l = a.querySelector('.links a');"
        " return {summary: s.textContent, summaryBottom: s.getBoundingClientRect().bottom,"
        " linkTop: l.getBoundingClientRect().top, link: l.textContent}; })()"
    )
    assert entry["summary"] == "Shopkeepers in the old covered market stock sweets and new clothes."
    assert entry["link"] == "Read at Kurdistan 24"
    assert entry["linkTop"] >= entry["summaryBottom"]  # on a line of its own, below the summary


@pytest.mark.parametrize("size", WIDTHS)
def test_sources_table_never_breaks_a_word(service: Service, browser: Browser, size: tuple[int, int]) -> None:
    width, height = size
    page = browser.page(width, height, mobile=width < 600)
    page.goto(service.url("feeds"))
    # Every header (when the table shows as a table) and every label stays on one line.
    lines = page.evaluate(
        "[...document.querySelectorAll('th')].filter(th => th.offsetParent).map(th => {"
        " const r = document.createRange(); r.selectNodeContents(th);"
        " return [th.textContent, new Set([...r.getClientRects()].map(x => Math.round(x.top))).size]; })"
    )
    assert all(count == 1 for _, count in lines), lines
    if width < 600:
        assert lines == []  # a phone gets one block per source, each value labelled
        labels = page.evaluate(
            "[...document.querySelectorAll('td[data-label]')].map(td => getComputedStyle(td, '::before').content)"
        )
        assert labels and set(labels) == {'"Tags: "', '"Last poll: "', '"When (UTC): "', '"Articles: "'}
    else:
        assert [text for text, _ in lines] == ["Source", "Tags", "Last poll", "When (UTC)", "Articles"]


def test_the_search_box_finds_stories(service: Service, browser: Browser) -> None:
    page = browser.page(*PHONE, mobile=True)
    page.goto(service.base)
    page.type_into("form.search input", "bazaar")
    page.tap("form.search button")
    page.browser.wait_event("Page.loadEventFired", page.session)
    assert page.evaluate("location.pathname + location.search") == "/search?q=bazaar"
    titles = page.evaluate("[...document.querySelectorAll('article h2')].map(h => h.textContent)")
    assert titles == ["Qaysari bazaar traders prepare for the Eid rush"]
    assert page.evaluate("document.querySelector('form.search input').value") == "bazaar"
    # A query that cannot be read is told so, on the same page.
    page.goto(service.url('search?q=%22unclosed'))
    assert "Cannot search for that" in page.evaluate("document.querySelector('main').textContent")


def test_story_page_lists_every_outlet(service: Service, browser: Browser) -> None:
    page = browser.page(*DESKTOP)
    page.goto(service.base)
    page.tap("article .links a[href*='/stories/']")  # the first entry: the event, three reports
    page.browser.wait_event("Page.loadEventFired", page.session)
    assert re.fullmatch(r"/stories/[0-9a-f]{16}\.html", page.evaluate("location.pathname"))
    reports = page.evaluate(
        "[...document.querySelectorAll('ol.outlets li')].map(li => ({"
        " title: li.querySelector('.title').textContent, href: li.querySelector('a.title').href,"
        " source: li.querySelector('.meta a').textContent, time: li.querySelector('time').dateTime}))"
    )
    assert [r["source"] for r in reports] == list(service.desk.event_outlets)
    assert reports[0]["title"] == EVENT_TITLE
    assert [r["time"] for r in reports] == ["2026-06-03T09:10:00Z", "2026-06-03T09:40:00Z", "2026-06-03T10:05:00Z"]
    for report in reports:
        assert _fetch(report["href"])[0] == 200


def test_tag_links_open_html_pages_with_their_feeds(service: Service, browser: Browser) -> None:
    page = browser.page(*DESKTOP)
    page.goto(service.base)
    tags = page.evaluate("[...document.querySelectorAll('.tags a')].map(a => a.href)")
    assert tags == [service.url(f"tags/{t}.html") for t in ("kurdistan", "tech", "world")]
    page.goto(tags[0])
    feeds = page.evaluate("[...document.querySelectorAll('.feeds a')].map(a => a.href)")
    assert feeds == [service.url(f"tags/kurdistan{s}") for s in (".atom", ".rss", ".json")]
    alternates = page.evaluate("[...document.querySelectorAll('link[rel=alternate]')].map(a => a.href)")
    assert alternates == feeds
    titles = page.evaluate("[...document.querySelectorAll('article h2')].map(h => h.textContent)")
    # The event once (told by whichever of the tag's outlets was seen first), nothing of the tech tag.
    assert sum("Erbil airport" in t for t in titles) == 1
    assert "Fibre broadband reaches Duhok's old town" not in titles and len(titles) == 6
