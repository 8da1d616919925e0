"""The baseline poller: the simplest thing that polls feeds correctly.

One process, one thread: for each URL, ``requests.get`` (with If-None-Match
/ If-Modified-Since from the previous poll of the same sequence, kept in a
JSON state file) and ``feedparser.parse`` of the body. It stores nothing but
the validators and the entry ids it has seen (so it can count new entries
for the runner's sanity check). It is the floor that any real poller, which
also cleans, deduplicates and stores, is compared with.

Prints one JSON line: feeds, ok, not_modified, failed, entries, new.

    python -m bench.baseline_poll --urls urls.txt --state state.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import feedparser
import requests


def poll(urls: list[str], state: dict[str, dict[str, Any]]) -> dict[str, int]:
    summary = {"feeds": len(urls), "ok": 0, "not_modified": 0, "failed": 0, "entries": 0, "new": 0}
    for url in urls:
        known = state.setdefault(url, {})
        headers = {}
        if known.get("etag"):
            headers["If-None-Match"] = known["etag"]
        if known.get("last_modified"):
            headers["If-Modified-Since"] = known["last_modified"]
        try:
            response = requests.get(url, headers=headers, timeout=30)
        except requests.RequestException as exc:
            print(f"baseline: {url}: {exc}", file=sys.stderr)
            summary["failed"] += 1
            continue
        if response.status_code == 304:
            summary["not_modified"] += 1
            continue
        if response.status_code != 200:
            print(f"baseline: {url}: HTTP {response.status_code}", file=sys.stderr)
            summary["failed"] += 1
            continue
        known["etag"] = response.headers.get("ETag")
        known["last_modified"] = response.headers.get("Last-Modified")
        parsed = feedparser.parse(response.content)
        if parsed.bozo and not parsed.entries:
            print(f"baseline: {url}: not a feed: {parsed.get('bozo_exception')}", file=sys.stderr)
            summary["failed"] += 1
            continue
        seen = set(known.get("seen", []))
        ids = [e.get("id") or e.get("link") or e.get("title", "") for e in parsed.entries]
        summary["ok"] += 1
        summary["entries"] += len(ids)
        summary["new"] += len(set(ids) - seen)
        known["seen"] = sorted(seen | set(ids))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=Path, required=True, help="file with one feed URL a line")
    parser.add_argument("--state", type=Path, required=True, help="JSON file of validators and seen ids (created if missing)")
    args = parser.parse_args()
    urls = args.urls.read_text().split()
    state = json.loads(args.state.read_text()) if args.state.exists() else {}
    summary = poll(urls, state)
    args.state.write_text(json.dumps(state))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
