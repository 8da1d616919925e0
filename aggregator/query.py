"""The search language (saved searches, `aggregator search`, the search box),
parsed into a small tree, and written out for each engine's full-text index.

    kurdistan erbil            both words (AND)
    "peace talks"              a phrase
    kurdistan OR erbil         either (OR binds tighter than AND: a b OR c = a AND (b OR c))
    -football                  not this word (or -"a phrase")
    source:rudaw               only articles of feeds whose title or address contains it
    tag:world                  only articles of feeds with this tag

Words are matched whole, case- and accent-insensitive, in the title and the
plain text of an article. A query that cannot be read gets a QueryError
saying where and why; nothing a person types reaches the index unquoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_QUERY = 500
MAX_TERMS = 50
_TOKEN = re.compile(r'\s*(?:(-?)(?:(source|tag):)?(?:"([^"]*)"|([^\s"]+)))')


class QueryError(ValueError):
    """The query cannot be read; the message says where and why."""


@dataclass(frozen=True)
class Term:
    words: str  # one word or a phrase, as typed


@dataclass(frozen=True)
class Query:
    groups: tuple[tuple[Term, ...], ...] = ()  # every group must match; a group matches when one of its terms does
    excluded: tuple[Term, ...] = ()
    sources: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    text: str = ""

    @property
    def has_text(self) -> bool:
        return bool(self.groups)


def parse(text: str) -> Query:
    if len(text) > MAX_QUERY:
        raise QueryError(f"the query is too long ({len(text)} characters; at most {MAX_QUERY})")
    if text.count('"') % 2:
        raise QueryError('a phrase is not closed: a " is missing')
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    sources: list[str] = []
    tags: list[str] = []
    pending_or = False
    position = 0
    terms = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip():
                raise QueryError(f"cannot read the query at {text[position:][:20]!r}")
            break
        position = match.end()
        negated, field, quoted, bare = match.group(1), match.group(2), match.group(3), match.group(4)
        value = quoted if quoted is not None else bare
        if bare is not None and set(bare) == {"-"}:
            raise QueryError("a - needs a word after it, like -football")
        terms += 1
        if terms > MAX_TERMS:
            raise QueryError(f"too many terms (at most {MAX_TERMS})")
        if bare == "OR" and not negated and not field:
            if not groups or pending_or:
                raise QueryError("OR needs a word on each side")
            pending_or = True
            continue
        if field:
            if negated or pending_or:
                raise QueryError(f"{field}: cannot be negated or OR-ed")
            if not value.strip():
                raise QueryError(f"{field}: needs a name, like {field}:world")
            (sources if field == "source" else tags).append(value.strip().lower())
            continue
        if not value.strip() or not re.search(r"\w", value):
            if negated and not value.strip():
                raise QueryError("a - needs a word after it, like -football")
            continue  # punctuation alone: nothing to search for
        term = Term(value.strip())
        if negated:
            if pending_or:
                raise QueryError("OR cannot join an excluded word")
            excluded.append(term)
        elif pending_or:
            groups[-1].append(term)
            pending_or = False
        else:
            groups.append([term])
    if pending_or:
        raise QueryError("OR needs a word on each side")
    if not groups and not sources and not tags:
        raise QueryError("nothing to search for: give at least one word, a source: or a tag:")
    return Query(tuple(tuple(g) for g in groups), tuple(excluded), tuple(sources), tuple(tags), text)


def _fts5_quote(term: Term) -> str:
    return '"' + term.words.replace('"', '""') + '"'


def to_fts5(query: Query) -> str:
    """The query as an SQLite FTS5 MATCH expression (every term quoted)."""
    parts = []
    for group in query.groups:
        quoted = [_fts5_quote(t) for t in group]
        parts.append(quoted[0] if len(quoted) == 1 else "(" + " OR ".join(quoted) + ")")
    expression = " AND ".join(parts)
    for term in query.excluded:
        expression += f" NOT {_fts5_quote(term)}"
    return expression


def _ts_lexemes(term: Term) -> list[str]:
    return [w for w in re.findall(r"\w+", term.words.lower()) if w]


def to_tsquery(query: Query) -> str:
    """The query for PostgreSQL's to_tsquery('simple', …): phrases as <->, words quoted."""

    def one(term: Term) -> str:
        words = [f"'{w}'" for w in _ts_lexemes(term)]
        return "(" + " <-> ".join(words) + ")" if len(words) > 1 else (words[0] if words else "")

    parts = []
    for group in query.groups:
        alternatives = [x for x in (one(t) for t in group) if x]
        if alternatives:
            parts.append("(" + " | ".join(alternatives) + ")")
    for term in query.excluded:
        negated = one(term)
        if negated:
            parts.append(f"!{negated}")
    return " & ".join(parts)
