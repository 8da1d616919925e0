"""Property-based fuzzing of the URL functions (Hypothesis; profiles in
conftest.py): over arbitrary strings they never raise and are idempotent;
over generated URLs the canonical form ignores exactly what DESIGN §4.5 says
it ignores (http/https, www., default ports, parameter order, tracking
parameters, fragments, a trailing slash, case of scheme and host)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from hypothesis import assume, example, given
from hypothesis import strategies as st

from aggregator.urls import TRACKING_PARAMS, absolute, canonical_url, clean_url, is_reusable_id, is_tracking_param

URLISH = st.text(alphabet=st.sampled_from(list("htps:/?#&=%.@[]-_~ aZ09éW\x00\t")), max_size=60)
ANY_TEXT = st.one_of(st.text(max_size=200), URLISH)
BASES = st.sampled_from([None, "", "http://example.com/a/b/", "https://x.example/feed.xml?x=1", "not a url", "http://[::1]/"])


@given(ANY_TEXT, BASES)
@example("http://example.com:abc/", None)
@example("http://[::1/", None)
@example("http://example.com:99999/x", "http://example.com/")
@example("//evil.example/x", "http://example.com/")
def test_url_functions_never_raise(text: str, base: str | None) -> None:
    canonical = canonical_url(text)
    cleaned = clean_url(text)
    joined = absolute(text, base)
    is_reusable_id(text)
    if canonical is not None:
        assert urlsplit(canonical).scheme == "https"
    if joined is not None:
        assert urlsplit(joined).scheme.lower() in ("http", "https")
    assert cleaned is None or isinstance(cleaned, str)


@given(ANY_TEXT)
def test_canonical_and_clean_are_idempotent(text: str) -> None:
    canonical = canonical_url(text)
    if canonical is not None:
        assert canonical_url(canonical) == canonical
    cleaned = clean_url(text)
    if cleaned is not None:
        assert clean_url(cleaned) == cleaned
        assert canonical_url(cleaned) == canonical


@given(ANY_TEXT, BASES)
def test_absolute_is_idempotent(text: str, base: str | None) -> None:
    joined = absolute(text, base)
    if joined is not None:
        assert absolute(joined, base) == joined
        assert absolute(joined, None) == joined


# --- generated URLs ---------------------------------------------------------------------------------

LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
HOSTS = st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, min_size=1, max_size=3),
                  st.sampled_from(["com", "org", "co.uk", "news"]))
SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%20", min_size=1, max_size=10).filter(
    lambda s: s not in (".", "..") and "%" not in s.replace("%20", ""))
PATHS = st.lists(SEGMENT, max_size=4).map(lambda parts: "/" + "/".join(parts))
KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6).filter(lambda k: not is_tracking_param(k))
VALUES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=6)
PARAMS = st.lists(st.tuples(KEYS, VALUES), max_size=4, unique_by=lambda kv: kv[0])
TRACKERS = st.lists(st.tuples(st.sampled_from([*sorted(TRACKING_PARAMS)[:12], "utm_source", "utm_Medium", "UTM_campaign"]),
                              VALUES), max_size=3)


@st.composite
def story_urls(draw: st.DrawFn) -> tuple[str, str]:
    """(the URL as one feed writes it, the same story as another writes it)."""
    host, path, params = draw(HOSTS), draw(PATHS), draw(PARAMS)
    first = _url(draw(st.sampled_from(["http", "https"])), host, draw(st.booleans()), draw(st.booleans()), path,
                 params, draw(TRACKERS), draw(st.booleans()), draw(st.booleans()))
    second = _url(draw(st.sampled_from(["http", "https", "HTTP", "HTTPS"])), host.upper() if draw(st.booleans()) else host,
                  draw(st.booleans()), draw(st.booleans()), path, draw(st.permutations(params)), draw(TRACKERS),
                  draw(st.booleans()), draw(st.booleans()))
    return first, second


def _url(scheme: str, host: str, www: bool, default_port: bool, path: str, params: list[tuple[str, str]],
         trackers: list[tuple[str, str]], trailing_slash: bool, fragment: bool) -> str:
    port = {"http": ":80", "https": ":443"}[scheme.lower()] if default_port else ""
    query = urlencode([*params, *trackers])
    if trailing_slash and not path.endswith("/"):
        path += "/"
    return f"{scheme}://{'www.' if www else ''}{host}{port}{path}{'?' + query if query else ''}{'#top' if fragment else ''}"


@given(story_urls())
def test_one_story_one_canonical_url(urls: tuple[str, str]) -> None:
    first, second = urls
    assert canonical_url(first) is not None
    assert canonical_url(first) == canonical_url(second)


@given(HOSTS, PATHS, PARAMS, TRACKERS)
def test_clean_url_removes_trackers_and_keeps_the_rest(host: str, path: str, params: list[tuple[str, str]],
                                                       trackers: list[tuple[str, str]]) -> None:
    plain = _url("http", host, False, False, path, params, [], False, False)
    tracked = _url("http", host, False, False, path, [*params, *trackers], [], False, False)
    assert clean_url(tracked) == plain
    assert clean_url(plain) == plain  # the link we publish keeps scheme, host and path as written


@given(HOSTS, PATHS)
def test_different_stories_stay_different(host: str, path: str) -> None:
    assume(path.rstrip("/") != "")
    assert canonical_url(f"https://{host}{path}") != canonical_url(f"https://{host}{path}x")
    assert canonical_url(f"https://{host}{path}") != canonical_url(f"https://other-{host}{path}")
    assert canonical_url(f"https://{host}{path}?id=1") != canonical_url(f"https://{host}{path}?id=2")


@given(st.text(max_size=120))
def test_a_reusable_id_is_an_absolute_ascii_iri(value: str) -> None:
    if is_reusable_id(value):
        assert value.isascii() and not any(c.isspace() for c in value)
        assert value.split(":", 1)[0].lower() in ("http", "https", "tag", "urn")


# --- defects the fuzzers found, as regular regression tests -----------------------------------------


def test_a_blank_link_is_no_link() -> None:
    assert clean_url(" ") is None and clean_url("\t\n") is None  # was "": an empty link


def test_absolute_never_ends_in_whitespace() -> None:
    # urljoin drops the empty query of "0 ?" and left "…/0 " (not idempotent, and a URL with a space)
    assert absolute("0 ?", "http://example.com/a/b/") == "http://example.com/a/b/0"
