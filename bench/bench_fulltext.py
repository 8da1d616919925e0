"""Full-text extraction: which library, measured on the fixture pages (issue 13).

    python -m bench.bench_fulltext [--venvs DIR] [--repeat 5] [--only trafilatura,readability]

Each candidate library is installed in its own virtual environment under
DIR (default /tmp/bench-fulltext; created on first use with ``pip install``
through the configured index), so its import time, memory and dependency
tree are its own. The script then runs itself in each environment as a
worker (``--worker NAME``), in a fresh process: it measures the import,
the RSS before and after the import and after the first extraction, and the
time of every page (median of ``--repeat`` runs), and prints what the
library returned for each page. The parent scores the outputs against the
expected text of each fixture (tests/fixtures/fulltext, read its README):

* recall / precision: bag-of-words overlap with the expected body
  (lower-case ``\\w+`` tokens, counts clipped: the usual measure of
  boilerplate-removal evaluations such as CleanEval's);
* chrome leaked: how many of the page's known chrome passages (comments,
  teasers of other articles, banners, bios, footers: ``chrome`` in
  cases.json) appear in the output;
* non-articles: of the pages that hold no article (a login wall, an index
  page, a "not found" page, a video page), on how many the library returned
  50 words or more (which we would store as the article's content).

The row "ours" is aggregator.fulltext.extract as shipped (the chosen
library, its settings, our decoding, thresholds and sanitising), run in the
project's own environment.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures" / "fulltext"

# name -> (pip requirements, what the output is, a note on the settings)
CANDIDATES: dict[str, tuple[list[str], str]] = {
    "trafilatura": (["trafilatura==2.3.1", "lxml_html_clean"], "html"),
    "trafilatura-fast": (["trafilatura==2.3.1", "lxml_html_clean"], "html"),
    "trafilatura-precision": (["trafilatura==2.3.1", "lxml_html_clean"], "html"),
    "readability": (["readability-lxml==0.9"], "html"),
    "justext": (["justext==3.0.2", "lxml_html_clean"], "html"),
    "boilerpy3": (["boilerpy3==1.0.7"], "text"),
    "goose3": (["goose3==3.1.22"], "text"),
    "resiliparse": (["resiliparse==2.0.1"], "text"),
}
# Environments are shared by the variants of one library.
VENV_OF = {"trafilatura-fast": "trafilatura", "trafilatura-precision": "trafilatura"}
JUSTEXT_LANGUAGES = {"en": "English", "fr": "French", "he": "Hebrew", "de": "German"}


# --- the worker: runs inside a candidate's environment -------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _decode(raw: bytes, charset: str) -> str:
    return raw.decode(charset, "replace")


def _lang(document: str) -> str:
    match = re.search(r"<html[^>]*\blang=[\"']?([a-zA-Z]{2})", document[:5000])
    return match.group(1).lower() if match else ""


def _extractor(name: str):  # type: ignore[no-untyped-def]
    """Import the library (this is what the import time measures) and return extract(document, url)."""
    if name.startswith("trafilatura"):
        import trafilatura

        fast = name == "trafilatura-fast"
        precision = name == "trafilatura-precision"

        def run(document: str, url: str) -> str | None:
            return trafilatura.extract(
                document, url=url, output_format="html", include_links=True, include_images=True,
                include_tables=True, include_comments=False, with_metadata=False, fast=fast,
                favor_precision=precision,
            )

        return run
    if name == "readability":
        from readability import Document

        def run(document: str, url: str) -> str | None:
            return Document(document, url=url).summary(html_partial=True)

        return run
    if name == "justext":
        import justext

        def run(document: str, url: str) -> str | None:
            language = JUSTEXT_LANGUAGES.get(_lang(document))
            if language:
                paragraphs = justext.justext(document, justext.get_stoplist(language))
            else:  # jusText's language-independent mode
                paragraphs = justext.justext(document, frozenset(), stopwords_low=0, stopwords_high=0)
            kept = [p.text for p in paragraphs if not p.is_boilerplate]
            return "".join(f"<p>{_escape(t)}</p>" for t in kept) or None

        return run
    if name == "boilerpy3":
        from boilerpy3 import extractors

        extractor = extractors.ArticleExtractor(raise_on_failure=False)

        def run(document: str, url: str) -> str | None:
            return extractor.get_content(document)

        return run
    if name == "goose3":
        from goose3 import Goose

        goose = Goose({"enable_image_fetching": False, "use_meta_language": True})

        def run(document: str, url: str) -> str | None:
            return goose.extract(raw_html=document).cleaned_text

        return run
    if name == "resiliparse":
        from resiliparse.extract.html2text import extract_plain_text
        from resiliparse.parse.html import HTMLTree

        def run(document: str, url: str) -> str | None:
            return extract_plain_text(HTMLTree.parse(document), main_content=True)

        return run
    if name == "ours":
        from aggregator.fulltext import extract

        def run(document: str, url: str) -> str | None:
            raise AssertionError("ours takes bytes")  # replaced in worker()

        return run
    raise SystemExit(f"unknown candidate {name}")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def worker(name: str, repeat: int) -> None:
    cases = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))
    pages = [(c, (FIXTURES / f"{c['name']}.html").read_bytes()) for c in cases]
    if name == "ours":  # what the service has loaded anyway: the cost of full text is what comes on top
        import aggregator.fetch
        import aggregator.ingest
        import aggregator.service  # noqa: F401
    rss_start = _rss_mb()
    started = time.perf_counter()
    if name == "ours":
        from aggregator.fulltext import extract as ours_extract

        def run(case: dict, raw: bytes) -> str | None:  # type: ignore[type-arg]
            return ours_extract(raw, case["url"], f"text/html; charset={case['charset']}")
    else:
        extract = _extractor(name)

        def run(case: dict, raw: bytes) -> str | None:  # type: ignore[type-arg]
            return extract(_decode(raw, case["charset"]), case["url"])

    import_s = time.perf_counter() - started
    rss_imported = _rss_mb()
    run(*pages[0])
    rss_first = _rss_mb()
    outputs: dict[str, str | None] = {}
    times: dict[str, float] = {}
    for case, raw in pages:
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            try:
                out = run(case, raw)
            except Exception as exc:  # a library that fails on a page scores nothing there
                out = None
                print(f"{name}: {case['name']}: {type(exc).__name__}: {exc}", file=sys.stderr)
            samples.append(time.perf_counter() - t0)
        outputs[case["name"]] = out
        times[case["name"]] = statistics.median(samples)
    rss_end = _rss_mb()
    json.dump({"import_s": import_s, "rss_start": rss_start, "rss_imported": rss_imported, "rss_first": rss_first,
               "rss_end": rss_end, "outputs": outputs, "times": times}, sys.stdout)


# --- the parent: environments, scoring, the table ------------------------------------------------------


class _Text(HTMLParser):
    BLOCKS = {"p", "div", "li", "br", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "td", "th"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def to_text(output: str | None, kind: str) -> str:
    if not output:
        return ""
    if kind == "text":
        return output
    parser = _Text()
    parser.feed(output)
    parser.close()
    return "".join(parser.parts)


TOKEN = re.compile(r"\w+")


def tokens(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for token in TOKEN.findall(text.lower()):
        counts[token] = counts.get(token, 0) + 1
    return counts


def overlap(got: dict[str, int], want: dict[str, int]) -> tuple[float, float]:
    common = sum(min(n, want.get(t, 0)) for t, n in got.items())
    recall = common / max(1, sum(want.values()))
    precision = common / max(1, sum(got.values())) if got else 1.0
    return recall, precision


def _norm(text: str) -> str:
    return " ".join(TOKEN.findall(text.lower()))


def score(outputs: dict[str, str | None], kind: str) -> dict[str, float]:
    cases = json.loads((FIXTURES / "cases.json").read_text(encoding="utf-8"))
    recalls, precisions, leaked, chrome_total, non_articles, empty = [], [], 0, 0, 0, 0
    per_page: dict[str, tuple[float, float]] = {}
    for case in cases:
        text = to_text(outputs.get(case["name"]), kind)
        if not case["article"]:
            if len(text.split()) >= 50:
                non_articles += 1
            continue
        want = tokens((FIXTURES / f"{case['name']}.txt").read_text(encoding="utf-8"))
        recall, precision = overlap(tokens(text), want)
        if not text.strip():
            empty += 1
            precision = 0.0
        recalls.append(recall)
        precisions.append(precision)
        per_page[case["name"]] = (recall, precision)
        flat = _norm(text)
        chrome_total += len(case["chrome"])
        leaked += sum(1 for snippet in case["chrome"] if _norm(snippet) in flat)
    f1 = [2 * r * p / (r + p) if r + p else 0.0 for r, p in zip(recalls, precisions, strict=True)]
    return {
        "recall": statistics.mean(recalls), "precision": statistics.mean(precisions), "f1": statistics.mean(f1),
        "min_f1": min(f1), "leaked": leaked, "chrome_total": chrome_total, "non_articles": non_articles,
        "empty": empty, "per_page": per_page,  # type: ignore[dict-item]
    }


def _python(venvs: Path, name: str) -> Path:
    return venvs / VENV_OF.get(name, name) / "bin" / "python"


def ensure_venv(venvs: Path, name: str) -> Path:
    python = _python(venvs, name)
    if not python.exists():
        env_dir = python.parent.parent
        subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *CANDIDATES[name][0]], check=True)
    return python


def dependency_tree(python: Path, baseline: Path) -> tuple[int, float]:
    """Distributions and megabytes a library adds to a fresh environment."""

    def listing(py: Path) -> dict[str, float]:
        code = (
            "import importlib.metadata as m, json, os\n"
            "out = {}\n"
            "for d in m.distributions():\n"
            "    size = sum(os.path.getsize(d.locate_file(f)) for f in (d.files or []) "
            "if os.path.exists(d.locate_file(f)))\n"
            "    out[d.metadata['Name'].lower()] = size\n"
            "print(json.dumps(out))"
        )
        return json.loads(subprocess.run([str(py), "-c", code], check=True, capture_output=True, text=True).stdout)

    base = listing(baseline)
    mine = listing(python)
    added = {k: v for k, v in mine.items() if k not in base}
    return len(added), sum(added.values()) / 1e6


# Hostile pages through aggregator.fulltext.extract, each in a fresh process:
# (name, how to build the document). Element counts are just under or over MAX_ELEMENTS.
HOSTILE_SHAPES = {
    "14,900 links": "'<html><body>' + '<a href=/x>x</a>' * 14_900 + '</body></html>'",
    "7,450 table rows (14,900 cells)": "'<html><body><table>' + '<tr><td>a</td><td>b b b</td></tr>' * 4_966 + "
    "'</table></body></html>'",
    "14,900 distinct paragraphs": "'<html><body><article>' + ''.join('<p>Paragraph %d of a page that goes on and on "
    "about the council, the budget and the new bridge over the river.</p>' % i for i in range(14_900)) + "
    "'</article></body></html>'",
    "7,450 nested list items": "'<html><body><article>' + '<ul><li>word and another word here</li></ul>' * 7_450 + "
    "'</article></body></html>'",
    "1,000,000 links (refused)": "'<html><body>' + '<a href=/x>x</a>' * 1_000_000 + '</body></html>'",
    "4.9 MB of inline script": "'<html><head><script>var s=\"' + 'x' * 4_900_000 + '\";</script></head><body>"
    "<article>' + ''.join('<p>Paragraph %d of the article text, long enough to count as one.</p>' % i "
    "for i in range(20)) + '</article></body></html>'",
    "100,000 levels of nesting": "'<html><body>' + '<div>' * 100_000 + '<p>deep</p>' + '</div>' * 100_000 + "
    "'</body></html>'",
}


def hostile() -> None:
    code = (
        "import resource, sys, time\n"
        "import aggregator.ingest, aggregator.service\n"
        "from aggregator.fulltext import extract\n"
        "extract(b'<html><body><p>warm up</p></body></html>', 'http://x/', 'text/html')\n"
        "def rss():\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "doc = (%s).encode()\n"
        "before = rss(); t = time.perf_counter()\n"
        "out = extract(doc, 'http://x/', 'text/html')\n"
        "print(len(doc), time.perf_counter() - t, rss() - before, len(out or ''))\n"
    )
    print("| hostile page | bytes | time s | peak RSS added MB | content chars |")
    print("|---|---:|---:|---:|---:|")
    for name, build in HOSTILE_SHAPES.items():
        proc = subprocess.run([sys.executable, "-c", code % build], capture_output=True, text=True, cwd=REPO,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
        size, took, added, chars = proc.stdout.split()
        print(f"| {name} | {int(size):,} | {float(took):.2f} | {float(added):.0f} | {int(chars):,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venvs", type=Path, default=Path("/tmp/bench-fulltext"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", default="")
    parser.add_argument("--worker", default="")
    parser.add_argument("--per-page", action="store_true", help="print recall/precision of every page")
    parser.add_argument("--hostile", action="store_true", help="time and memory of hostile pages (ours only)")
    args = parser.parse_args()
    if args.hostile:
        hostile()
        return
    if args.worker:
        worker(args.worker, args.repeat)
        return
    names = [n for n in [*CANDIDATES, "ours"] if not args.only or n in args.only.split(",")]
    args.venvs.mkdir(parents=True, exist_ok=True)
    baseline = args.venvs / "_empty" / "bin" / "python"
    if not baseline.exists():
        subprocess.run([sys.executable, "-m", "venv", str(baseline.parent.parent)], check=True)
    rows = []
    for name in names:
        python = Path(sys.executable) if name == "ours" else ensure_venv(args.venvs, name)
        proc = subprocess.run(
            [str(python), str(Path(__file__).resolve()), "--worker", name, "--repeat", str(args.repeat)],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        if proc.returncode != 0:
            print(f"{name}: worker failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        if proc.stderr.strip():
            print(proc.stderr.strip()[-1500:], file=sys.stderr)
        result = json.loads(proc.stdout)
        kind = "html" if name == "ours" else CANDIDATES[name][1]
        quality = score(result["outputs"], kind)
        deps = (0, 0.0) if name == "ours" else dependency_tree(python, baseline)
        times_ms = [t * 1000 for t in result["times"].values()]
        rows.append((name, quality, result, deps, times_ms))
        if args.per_page:
            for page, (r, p) in quality["per_page"].items():  # type: ignore[union-attr]
                print(f"  {name:22} {page:32} recall {r:.3f} precision {p:.3f}", file=sys.stderr)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; {len(json.loads((FIXTURES / 'cases.json').read_text()))} fixture pages; "
          f"median of {args.repeat} runs per page.\n")
    print("| library | recall | precision | F1 | worst F1 | chrome leaked | non-articles kept | ms/page (median) "
          "| ms/page (max) | import s | RSS +import MB | RSS +1st page MB | RSS end MB | deps | deps MB | markup |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, q, r, (n_deps, deps_mb), times_ms in rows:
        kind = "html" if name == "ours" else CANDIDATES[name][1]
        print(
            f"| {name} | {q['recall']:.3f} | {q['precision']:.3f} | {q['f1']:.3f} | {q['min_f1']:.2f} "
            f"| {q['leaked']}/{q['chrome_total']} | {q['non_articles']}/4 | {statistics.median(times_ms):.1f} "
            f"| {max(times_ms):.0f} | {r['import_s']:.2f} | {r['rss_imported'] - r['rss_start']:.1f} "
            f"| {r['rss_first'] - r['rss_start']:.1f} | {r['rss_end']:.0f} | {n_deps} | {deps_mb:.1f} | {kind} |"
        )


if __name__ == "__main__":
    main()
