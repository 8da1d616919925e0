"""What the hard parse limit costs `aggregator poll --feed URL`.

Single-feed commands parse in one worker process (ingest.make_parser), started
when a document first needs parsing, so a document that hangs feedparser is
abandoned at parse_timeout. The alternative it replaced parsed in the calling
process, with no limit. This runs the real CLI both ways, alternating, on a
fresh database each run (the body is new: it is parsed) and on a second poll
(the server answers 304: nothing is parsed), and prints medians and ratios.

    python -m bench.bench_one_feed [--runs 7] [--file techcrunch.xml]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from tests.fixture_server import FeedServer

CORPUS = Path(os.environ.get("AGGREGATOR_CORPUS", Path(__file__).resolve().parents[2] / "shared/corpus/realworld"))
# The command as it was: parsing in the calling process, no hard limit.
INLINE = (
    "import sys, aggregator.ingest as ingest; ingest.make_parser = lambda config, n: ingest.InlineParser(); "
    "from aggregator.cli import main; sys.argv[0] = 'aggregator'; main()"
)


def _run(mode: str, url: str, config: Path) -> float:
    # The console script, as users run it (its worker processes re-import the CLI module).
    script = Path(sys.executable).with_name("aggregator")
    command = [str(script)] if mode == "pool" else [sys.executable, "-c", INLINE]
    started = time.perf_counter()
    proc = subprocess.run([*command, "poll", "--feed", url, "--no-progress", "--config", str(config)],
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{mode}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--file", default="techcrunch.xml")
    args = parser.parse_args()
    body = (CORPUS / args.file).read_bytes()
    server = FeedServer()
    url = server.add("/feed", body, etag='"v1"')
    times: dict[tuple[str, str], list[float]] = {}
    try:
        for run in range(args.runs):
            for mode in (("pool", "inline") if run % 2 == 0 else ("inline", "pool")):
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp)
                    (root / "feeds").mkdir()
                    (root / "feeds" / "one.yaml").write_text(yaml.safe_dump({"feeds": [url]}))
                    config = root / "config.yaml"
                    config.write_text(yaml.safe_dump({"database": "one.db", "logging": {"level": "warning"}}))
                    times.setdefault((mode, "parsed"), []).append(_run(mode, url, config))
                    times.setdefault((mode, "304"), []).append(_run(mode, url, config))
    finally:
        server.close()
    print(f"aggregator poll --feed, {args.file} ({len(body):,} bytes), median of {args.runs} runs, wall seconds")
    print("| phase | in the calling process (no limit) | one worker process (hard limit) | difference | ratio |")
    print("|---|---:|---:|---:|---:|")
    for phase in ("parsed", "304"):
        inline, pool = statistics.median(times[("inline", phase)]), statistics.median(times[("pool", phase)])
        print(f"| {phase} | {inline:.2f} | {pool:.2f} | {pool - inline:+.2f} | {pool / inline:.2f}× |")


if __name__ == "__main__":
    main()
