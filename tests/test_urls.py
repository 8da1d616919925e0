from __future__ import annotations

import pytest

from aggregator.urls import absolute, canonical_url, clean_url, is_reusable_id, is_weak_identity


@pytest.mark.parametrize(
    "a,b",
    [
        ("http://example.com/a/story", "https://example.com/a/story"),
        ("https://www.example.com/a/story", "https://example.com/a/story"),
        ("HTTPS://EXAMPLE.COM/a/story", "https://example.com/a/story"),
        ("https://example.com:443/a/story", "https://example.com/a/story"),
        ("http://example.com:80/a/story", "https://example.com/a/story"),
        ("https://example.com/a/story/", "https://example.com/a/story"),
        ("https://example.com/a/story#comments", "https://example.com/a/story"),
        ("https://example.com/a/story?utm_source=rss&utm_medium=feed", "https://example.com/a/story"),
        ("https://example.com/a/story?fbclid=abc&gclid=x&mc_cid=1&mc_eid=2", "https://example.com/a/story"),
        ("https://example.com/a?id=7&utm_campaign=x&page=2", "https://example.com/a?page=2&id=7"),
    ],
)
def test_same_canonical_url(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)


@pytest.mark.parametrize(
    "a,b",
    [
        ("https://example.com/a/story", "https://example.com/a/other"),
        ("https://example.com/a?id=7", "https://example.com/a?id=8"),
        ("https://example.com:8443/a", "https://example.com/a"),
        ("https://news.example.com/a", "https://example.com/a"),
        ("https://example.com/A", "https://example.com/a"),  # paths are case-sensitive
    ],
)
def test_different_canonical_url(a: str, b: str) -> None:
    assert canonical_url(a) != canonical_url(b)


def test_canonical_url_rejects_non_http() -> None:
    assert canonical_url("javascript:alert(1)") is None
    assert canonical_url("mailto:a@b.c") is None
    assert canonical_url(None) is None
    assert canonical_url("http://[::1") is None  # unparseable


def test_clean_url_keeps_scheme_host_and_path() -> None:
    assert clean_url("http://WWW.Example.com/Path/?utm_source=x&id=3#xtor=RSS-8") == "http://WWW.Example.com/Path/?id=3"
    assert clean_url("https://example.com/p?a=1&b=2") == "https://example.com/p?a=1&b=2"  # untouched
    assert clean_url("https://example.com/p#section-2") == "https://example.com/p#section-2"


def test_weak_identity_is_the_home_page() -> None:
    assert is_weak_identity(canonical_url("https://www.example.com/"))
    assert is_weak_identity(canonical_url("https://example.com"))
    assert not is_weak_identity(canonical_url("https://example.com/story"))
    assert not is_weak_identity(canonical_url("https://example.com/?p=123"))


def test_absolute() -> None:
    assert absolute("/a/b", "https://example.com/feed.xml") == "https://example.com/a/b"
    assert absolute("javascript:alert(1)", "https://example.com/") is None
    assert absolute("data:text/html,hi", None) is None


def test_absolute_uri_for_ids() -> None:
    assert is_reusable_id("https://example.com/1")
    assert is_reusable_id("tag:example.com,2005:1")
    assert is_reusable_id("urn:uuid:1225c695-cfb8-4ebb-aaaa-80da344efa6a")
    assert not is_reusable_id("1234")
    assert not is_reusable_id("/relative/path")
    assert not is_reusable_id("has space:x")
    assert not is_reusable_id("javascript:alert(1)")
