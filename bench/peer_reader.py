"""The peer: lemon24/reader 3.26 polling the same feeds into its own SQLite.

reader's defaults are kept: ``update_feeds(workers=1)`` (one thread
retrieves and parses, in this process), its own requests session with
conditional requests from stored ETag / Last-Modified, and no search index
(search is only enabled by ``update_search()``, which we never call).

cold:    make_reader(db), add_feed() for every URL, update_feeds() (new
         feeds are due at once, so the default scheduled=True polls them all)
warm,
changed: update_feeds(scheduled=False), because after the cold poll no feed
         is due for an hour and reader would otherwise skip them all

``update_feeds_iter`` is used in place of ``update_feeds`` (which is a loop
over it that drops the results) so the runner can check the counts.

Prints one JSON line: feeds, ok, not_modified, failed, new, modified.

    python -m bench.peer_reader --db reader.sqlite --urls urls.txt --phase cold
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reader import UpdatedFeed, make_reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--urls", type=Path, required=True, help="file with one feed URL a line")
    parser.add_argument("--phase", choices=("cold", "warm", "changed"), required=True)
    args = parser.parse_args()
    urls = args.urls.read_text().split()

    reader = make_reader(str(args.db))
    try:
        if args.phase == "cold":
            for url in urls:
                reader.add_feed(url, exist_ok=True)
        summary = {"feeds": 0, "ok": 0, "not_modified": 0, "failed": 0, "new": 0, "modified": 0}
        for url, value in reader.update_feeds_iter(scheduled=args.phase == "cold"):
            summary["feeds"] += 1
            if value is None:
                summary["not_modified"] += 1
            elif isinstance(value, UpdatedFeed):
                summary["ok"] += 1
                summary["new"] += value.new
                summary["modified"] += value.modified
            else:
                summary["failed"] += 1
                print(f"reader: {url}: {value}", file=sys.stderr)
    finally:
        reader.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
