from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.config import Settings, load_config
from aggregator.subscriptions import append_feed, feed_id_for, load_subscriptions
from aggregator.validation import ConfigError, parse_duration, parse_size
from tests.conftest import REPO


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value).replace(str(path), "config.yaml")


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text,size", [("512KB", 512_000), ("10MB", 10_000_000), ("1MiB", 1_048_576), (300, 300)])
def test_sizes(text: object, size: int) -> None:
    assert parse_size(text) == size


def test_empty_config_means_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path / "config.yaml", ""))
    assert config.settings == Settings()
    assert config.settings.polling.interval == 1800
    assert config.settings.polling.min_interval == 600
    assert config.settings.polling.max_interval == 86400
    assert config.settings.output.entries == 100
    assert config.settings.retention.days == 90
    assert config.database_path == tmp_path / "aggregator.db"  # relative to the config file


def test_repo_config_yaml_is_valid_and_documents_every_setting() -> None:
    config = load_config(REPO / "config.yaml")
    text = (REPO / "config.yaml").read_text()
    for section, model in Settings.model_fields.items():
        assert f"{section}:" in text, section
        sub = model.annotation
        if hasattr(sub, "model_fields"):
            for key in sub.model_fields:  # type: ignore[union-attr]
                assert f"{key}:" in text, f"{section}.{key} is not documented in config.yaml"
    assert config.settings.http.host == "127.0.0.1"


def test_repo_starter_feeds_load_without_errors() -> None:
    subs = load_subscriptions(REPO / "feeds")
    assert not subs.errors
    assert len(subs.feeds) >= 7
    tags = {t for s in subs.feeds for t in s.tags}
    assert {"world", "middle-east"} <= tags
    assert all(s.url.startswith("https://") for s in subs.feeds)


def test_bad_yaml_names_file_line_and_column(tmp_path: Path) -> None:
    message = config_error(tmp_path, "polling:\n  interval: [1,\n")
    # libyaml and pure-Python PyYAML word it differently; both name the place.
    assert message.startswith("config.yaml:3:1: invalid YAML: ") and "node content" in message


def test_unknown_setting_names_the_known_ones(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "polling:\n  intervall: 5m\n")
    assert msg.startswith("config.yaml: polling.intervall: unknown setting (expected one of: interval, min_interval,")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    msg = config_error(tmp_path, "databse: x.db\n")
    assert msg == ("config.yaml: databse: unknown setting (expected one of: database, feeds_dir, http, polling, "
                   "output, retention, logging, stories, filters, tags, searches)")


def test_bad_interval(tmp_path: Path) -> None:
    assert config_error(tmp_path, "polling:\n  interval: soon\n") == (
        "config.yaml: polling.interval: expected a duration like 90s, 15m, 2h or 1d, got 'soon'"
    )


def test_bad_url(tmp_path: Path) -> None:
    assert config_error(tmp_path, "http:\n  base_url: ftp://example.com/\n") == (
        "config.yaml: http.base_url: expected an http:// or https:// URL, got 'ftp://example.com/'"
    )


def test_floor_above_ceiling(tmp_path: Path) -> None:
    assert config_error(tmp_path, "polling:\n  min_interval: 2h\n  max_interval: 1h\n") == (
        "config.yaml: polling: min_interval (7200s) must not be longer than max_interval (3600s)"
    )


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_unreadable_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.mkdir()  # exists, cannot be read as a file (chmod does not stop root)
    with pytest.raises(ConfigError, match=r"config.yaml: cannot read: Is a directory"):
        load_config(path)


def test_feeds_yaml_file_tags_interval_and_one_bad_entry(tmp_path: Path) -> None:
    write(tmp_path / "feeds/world.yaml", """
tags: [World]
interval: 1h
feeds:
  - url: https://a.example/feed
    title: A
    tags: Europe
  - url: notaurl
  - url: https://b.example/rss
    interval: soon
  - {url: https://c.example/rss, colour: red}
  - 42
  - https://d.example/atom
  - url: https://e.example/rss
    interval: 15m
""")
    subs = load_subscriptions(tmp_path / "feeds")
    errors = [e.replace(str(tmp_path), "") for e in subs.errors]
    assert errors == [
        "/feeds/world.yaml: feed #2 (notaurl): url: expected an http:// or https:// URL, got 'notaurl'",
        "/feeds/world.yaml: feed #3 (https://b.example/rss): interval: expected a duration like 90s, 15m, 2h or 1d, got 'soon'",
        "/feeds/world.yaml: feed #4 (https://c.example/rss): colour: unknown setting (expected one of: url, title, tags, interval, enabled, cluster, full_text, backfill, user_agent, headers, filters)",
        "/feeds/world.yaml: feed #5: expected a mapping with a 'url', got int",
    ]
    by_url = {s.url: s for s in subs.feeds}
    assert set(by_url) == {"https://a.example/feed", "https://d.example/atom", "https://e.example/rss"}
    assert by_url["https://a.example/feed"].tags == ("world", "europe")
    assert by_url["https://a.example/feed"].title == "A"
    assert by_url["https://a.example/feed"].interval == 3600
    assert by_url["https://e.example/rss"].interval == 900
    assert by_url["https://d.example/atom"].tags == ("world",)


def test_opml_nested_outlines_become_tags(tmp_path: Path) -> None:
    write(tmp_path / "feeds/subs.opml", """<?xml version="1.0"?>
<opml version="2.0"><head><title>t</title></head><body>
  <outline text="News">
    <outline text="Middle East">
      <outline type="rss" text="Rudaw" xmlUrl="https://www.rudaw.net/english/rss"/>
    </outline>
    <outline type="rss" text="BBC" xmlUrl="https://feeds.bbci.co.uk/news/world/rss.xml"/>
  </outline>
  <outline type="rss" text="bad" xmlUrl="javascript:alert(1)"/>
</body></opml>""")
    subs = load_subscriptions(tmp_path / "feeds")
    by_title = {s.title: s for s in subs.feeds}
    assert by_title["Rudaw"].tags == ("news", "middle-east")
    assert by_title["BBC"].tags == ("news",)
    assert len(subs.errors) == 1
    assert "outline #3: xmlUrl: expected an http:// or https:// URL, got 'javascript:alert(1)'" in subs.errors[0]


def test_broken_file_does_not_stop_other_files(tmp_path: Path) -> None:
    write(tmp_path / "feeds/a.yaml", "feeds:\n  - url: https://a.example/feed\n")
    write(tmp_path / "feeds/b.yaml", "feeds: [\n")
    write(tmp_path / "feeds/c.opml", "this is not xml")
    subs = load_subscriptions(tmp_path / "feeds")
    assert [s.url for s in subs.feeds] == ["https://a.example/feed"]
    assert len(subs.errors) == 2
    assert "b.yaml:2:1: invalid YAML" in subs.errors[0]
    assert "c.opml: not a valid OPML file" in subs.errors[1]


def test_same_feed_in_two_files_is_one_feed_with_both_tags(tmp_path: Path) -> None:
    write(tmp_path / "feeds/a.yaml", "tags: [a]\nfeeds:\n  - url: http://www.example.com/feed\n")
    write(tmp_path / "feeds/b.yaml", "tags: [b]\nfeeds:\n  - url: https://example.com/feed\n")
    subs = load_subscriptions(tmp_path / "feeds")
    assert len(subs.feeds) == 1
    assert subs.feeds[0].tags == ("a", "b")
    assert feed_id_for("http://www.example.com/feed") == feed_id_for("https://example.com/feed")


def test_append_feed_keeps_existing_entries(tmp_path: Path) -> None:
    path = write(tmp_path / "feeds/added.yaml", "tags: [x]\nfeeds:\n  - url: https://a.example/feed\n")
    append_feed(path, "https://b.example/feed", "B", ["World News"])
    subs = load_subscriptions(tmp_path / "feeds")
    assert [(s.url, s.tags) for s in subs.feeds] == [
        ("https://a.example/feed", ("x",)), ("https://b.example/feed", ("x", "world-news"))]


# --- defects found by tests/test_fuzz_config.py, kept as regular tests -----------------------------


@pytest.mark.parametrize("text", ["filters: {1: x, a: y}\n", "filters: {null: x, a: y}\n",
                                  "tags: {world: {filters: {2026-01-01: x, block: []}}}\n"])
def test_filter_keys_of_mixed_types_are_an_error_not_a_crash(tmp_path: Path, text: str) -> None:
    # sorted() over {1, "a"} raised TypeError out of the loader
    assert "unknown setting (expected block or keep)" in config_error(tmp_path, text)


@pytest.mark.parametrize("value,error", [("!!bool maybe", "KeyError"), ("!!int ''", "IndexError"),
                                         ("!!float ''", "IndexError"), ("!!timestamp x", "AttributeError")])
def test_a_value_that_does_not_fit_its_yaml_tag_is_an_error(tmp_path: Path, value: str, error: str) -> None:
    # PyYAML's constructors raised these out of read_yaml: every command crashed
    assert config_error(tmp_path, f"polling:\n  adaptive: {value}\n") == (
        f"config.yaml: invalid YAML: a value does not fit its !!tag ({error})")
    write(tmp_path / "feeds/a.yaml", f"feeds:\n  - {{url: https://a.example/, enabled: {value}}}\n")
    write(tmp_path / "feeds/b.yaml", "feeds:\n  - https://b.example/\n")
    subs = load_subscriptions(tmp_path / "feeds")
    assert [s.url for s in subs.feeds] == ["https://b.example/"] and "a.yaml: invalid YAML" in subs.errors[0]


@pytest.mark.parametrize("setting,expected", [
    ("retention: {days: 1%s}", "retention.days: expected a number more than 0 and at most 36500"),
    ("polling: {interval: 1%s}", "polling.interval: expected a duration like 90s, 15m, 2h or 1d, got 1000"),
    ("polling: {max_bytes: 1%s}", "polling.max_bytes: expected a size like 512KB or 10MB, got 1000"),
    ("polling: {jitter: -1%s}", "polling.jitter: expected a number from 0 to 0.5"),
])  # fmt: skip
def test_a_whole_number_too_large_for_a_float_is_an_error(tmp_path: Path, setting: str, expected: str) -> None:
    # math.isfinite(10**400) raised OverflowError
    assert expected in config_error(tmp_path, setting % ("0" * 400))


def test_an_error_line_is_one_line_whatever_the_key(tmp_path: Path) -> None:
    # A key holding U+0085, U+2028 or \x1e (line breaks to str.splitlines and
    # to many log readers) forged a line of its own in the error output.
    for key in ("\\x85", "\\u2028", "\\x1e", "a\\nb"):
        message = config_error(tmp_path, f'polling: {{"{key}": 1}}\n')
        assert len(message.splitlines()) == 1, message
        assert message.startswith("config.yaml: polling.'") and "unknown setting" in message
    message = config_error(tmp_path, 'filters: {"\\x85": x}\n')
    assert len(message.splitlines()) == 1 and "'\\x85': unknown setting" in message


def test_an_error_quoting_a_huge_value_is_cut(tmp_path: Path) -> None:
    message = config_error(tmp_path, "http: {base_url: '" + "x" * 100_000 + "'}\n")
    assert message.startswith("config.yaml: http.base_url: expected an http:// or https:// URL, got 'xxx")
    assert len(message) < 400 and message.endswith("…")


def test_an_entry_whose_url_is_not_even_a_url_is_reported_and_the_others_load(tmp_path: Path) -> None:
    # The error label split the URL to hide credentials: urlsplit raised
    # ValueError on an unclosed IPv6 bracket, and the whole load with it.
    # The message itself quoted the URL with its password.
    write(tmp_path / "feeds/a.yaml",
          'feeds:\n  - url: "http://user:secret@[::1/x"\n  - https://a.example/feed\n  - url: "https://b.example/\\u2028x"\n')
    subs = load_subscriptions(tmp_path / "feeds")
    assert [s.url for s in subs.feeds] == ["https://a.example/feed"]
    assert len(subs.errors) == 2 and "secret" not in subs.errors[0], subs.errors  # nor in the message
    assert "feed #1 (http://[::1/x): url: expected a valid URL in" in subs.errors[0]
    assert "feed #3 ('https://b.example/\\u2028x'): url:" in subs.errors[1] and len(subs.errors[1].splitlines()) == 1


def test_titles_are_one_line_whatever_the_file_says(tmp_path: Path) -> None:
    # An OPML outline's text went into the feed's title as it was, control
    # characters and line breaks included (&#10; &#x1b;), and from there into
    # log lines and terminals; a YAML title kept \n, \x85 and U+2028.
    write(tmp_path / "feeds/a.opml", '<opml version="2.0"><body><outline text="Evil&#10;2026-01-01 ERROR forged'
          '&#x1b;[31m&#x2028;end" xmlUrl="https://a.example/rss"/></body></opml>')
    write(tmp_path / "feeds/b.yaml", 'feeds:\n  - {url: "https://b.example/rss", title: "B\\nforged\\x85x\\u2028y\\tz"}\n')
    subs = load_subscriptions(tmp_path / "feeds")
    assert not subs.errors
    assert sorted(s.title or "" for s in subs.feeds) == ["B forged x y z", "Evil 2026-01-01 ERROR forged[31m end"]
    assert load_config(write(tmp_path / "config.yaml", 'output: {title: "Latest\\nnews"}\n')).settings.output.title == (
        "Latest news")
    assert "output.title: expected text without control characters" in config_error(
        tmp_path, 'output: {title: "x\\x9by"}\n')
