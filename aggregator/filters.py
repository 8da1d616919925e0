"""Filters: which articles an output leaves out (issue 13). Pure: rules are
compiled once (when config.yaml and feeds/ load) and decide on an article's
plain fields; nothing here reads or writes anything.

A rule set has `block` rules (an article matching any is hidden) and `keep`
rules (if there are any, an article matching none is hidden). A matcher looks
at one field: `title`, `text` (summary and content as plain text), `author`,
`category` or `url`, with either words (a phrase of whole words, case- and
accent-insensitive: `sponsored`, `press release`) or a regular expression
(`re:casino|betting`, case-insensitive). Regular expressions run on RE2,
whose matching time is linear in the text whatever the pattern, so no rule
can hang a poll (catastrophic backtracking cannot happen); what RE2 does not
support (back-references, look-around) is refused when the rule loads.
Several rule sets apply to an article (everything, each of its feed's tags,
its feed); the first one that hides it is named in ``hidden_by``.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Protocol

FIELDS = ("title", "text", "author", "category", "url")
MAX_RULES = 1000  # per rule set
MAX_PATTERN = 1000  # characters
MAX_FIELD_TEXT = 100_000  # characters of one field a rule looks at
_WORD = re.compile(r"\w+")
_MARKS = re.compile("[\u0300-\u036f]")


def normalise(text: str) -> str:
    """Casefolded, accents dropped: 'Café' and 'CAFE' are one word."""
    if not text.isascii():
        text = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return text.casefold()


def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(normalise(text[:MAX_FIELD_TEXT])))


@functools.cache
def _re2() -> Any:
    import re2  # google-re2: imported only when a rule uses a regular expression

    return re2


@dataclass(frozen=True)
class Matcher:
    field: str
    pattern: str  # as written: "sponsored", "re:casino|betting"
    phrase: tuple[str, ...] = ()
    regex: Any = dataclass_field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        return f"{self.field}: {self.pattern}"


@dataclass(frozen=True)
class RuleSet:
    scope: str  # "everything", "tag:world", "feed:https://…", "search:kurdistan"
    block: tuple[Matcher, ...] = ()
    keep: tuple[Matcher, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.block or self.keep)

    @functools.cached_property
    def block_regex(self) -> dict[str, Any]:
        """Per field, one RE2 pattern that matches where any of the field's
        block patterns does (an alternation, still linear): one search per
        field tells whether any of them can hide an article, instead of one
        per rule. Fields whose patterns do not combine are left out."""
        by_field: dict[str, list[str]] = {}
        for matcher in self.block:
            if matcher.regex is not None:
                by_field.setdefault(matcher.field, []).append(matcher.pattern[3:])
        combined = {}
        for name, patterns in by_field.items():
            if len(patterns) > 1:
                try:
                    combined[name] = _compile("|".join(f"(?:{p})" for p in patterns), 64 << 20)
                except ValueError:
                    continue  # too big together: each pattern is searched alone
        return combined


@dataclass(frozen=True)
class Subject:
    """What rules look at, as plain text."""

    title: str = ""
    text: str = ""
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    url: str = ""


class _Person(Protocol):
    @property
    def name(self) -> str | None: ...

    @property
    def email(self) -> str | None: ...


class _Entry(Protocol):
    """An entry or a stored article: what a subject is made of (besides its plain text)."""

    @property
    def title(self) -> str: ...

    @property
    def authors(self) -> Sequence[_Person]: ...

    @property
    def categories(self) -> Sequence[str]: ...

    @property
    def url(self) -> str | None: ...


def subject_of(entry: _Entry, text: str) -> Subject:
    authors = tuple(part for a in entry.authors for part in (a.name, a.email) if part)
    return Subject(entry.title, text, authors, tuple(entry.categories), entry.url or "")


# --- compiling ------------------------------------------------------------------------------


def compile_matcher(raw: Any) -> list[Matcher]:
    """One rule as written in YAML: ``{title: sponsored}``, ``{text: "re:…"}``,
    or ``{category: [a, b]}`` (any of them). Raises ValueError saying what is wrong."""
    if isinstance(raw, str) and ":" in raw:  # "title: sponsored", as the command line writes it
        key, _, value = raw.partition(":")
        raw = {key.strip(): value.strip()}
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ValueError(f"expected one field and its words, like {{title: sponsored}}, got {raw!r}")
    ((name, value),) = raw.items()
    if name not in FIELDS:
        raise ValueError(f"unknown field {name!r} (expected one of: {', '.join(FIELDS)})")
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name}: expected words or re:PATTERN, got {value!r}")
    return [_one(name, str(v)) for v in values]


def _one(name: str, pattern: str) -> Matcher:
    pattern = pattern.strip()
    if not pattern or len(pattern) > MAX_PATTERN:
        raise ValueError(f"{name}: expected 1 to {MAX_PATTERN} characters, got {len(pattern)}")
    if pattern.startswith("re:"):
        try:
            compiled = _compile(pattern[3:], 8 << 20)  # a pattern compiling to a huge automaton is refused
        except ValueError as exc:
            raise ValueError(f"{name}: invalid regular expression {pattern!r}: {exc}") from None
        return Matcher(name, pattern, regex=compiled)
    phrase = words(pattern)
    if not phrase:
        raise ValueError(f"{name}: {pattern!r} has no words to match (use re: for punctuation)")
    return Matcher(name, pattern, phrase=phrase)


def _compile(pattern: str, max_mem: int) -> Any:
    """An RE2 pattern, case-insensitive; ValueError saying why it cannot be."""
    re2 = _re2()
    options = re2.Options()
    options.log_errors = False
    options.case_sensitive = False
    options.max_mem = max_mem
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise ValueError(exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)) from None


def compile_rules(raw: Any, scope: str) -> RuleSet:
    """A `filters:` mapping (block/keep lists). Raises ValueError naming the rule."""
    if raw is None:
        return RuleSet(scope)
    if not isinstance(raw, Mapping):
        raise ValueError("expected a mapping with 'block' and/or 'keep' lists")
    unknown = set(raw) - {"block", "keep"}
    if unknown:
        first = sorted(unknown, key=str)[0]  # keys may be of any type YAML has: 1, null, a date
        shown = first if isinstance(first, str) and first.isprintable() else repr(first)
        raise ValueError(f"{shown}: unknown setting (expected block or keep)")
    lists: dict[str, list[Matcher]] = {"block": [], "keep": []}
    for kind in ("block", "keep"):
        rules = raw.get(kind) or []
        if not isinstance(rules, list):
            raise ValueError(f"{kind}: expected a list of rules like - title: sponsored")
        if len(rules) > MAX_RULES:
            raise ValueError(f"{kind}: at most {MAX_RULES} rules, got {len(rules)}")
        for index, rule in enumerate(rules):
            try:
                lists[kind].extend(compile_matcher(rule))
            except ValueError as exc:
                raise ValueError(f"{kind}[{index + 1}]: {exc}") from None
    return RuleSet(scope, tuple(lists["block"]), tuple(lists["keep"]))


# --- deciding ---------------------------------------------------------------------------------


class _Prepared:
    """A subject's fields, normalised once for all rules."""

    def __init__(self, subject: Subject):
        self.subject = subject
        self._words: dict[str, list[tuple[str, ...]]] = {}
        self._sets: dict[str, frozenset[str]] = {}

    def texts(self, name: str) -> list[str]:
        s = self.subject
        value = {"title": [s.title], "text": [s.text], "author": list(s.authors), "category": list(s.categories),
                 "url": [s.url]}[name]  # fmt: skip
        return [v[:MAX_FIELD_TEXT] for v in value if v]

    def words(self, name: str) -> list[tuple[str, ...]]:
        if name not in self._words:
            self._words[name] = [words(t) for t in self.texts(name)]
        return self._words[name]

    def word_set(self, name: str) -> frozenset[str]:
        """Every word of the field: a one-word rule is a set lookup."""
        if name not in self._sets:
            self._sets[name] = frozenset(token for tokens in self.words(name) for token in tokens)
        return self._sets[name]


def _matches(matcher: Matcher, prepared: _Prepared) -> bool:
    if matcher.regex is not None:
        return any(matcher.regex.search(text) is not None for text in prepared.texts(matcher.field))
    phrase = matcher.phrase
    if len(phrase) == 1:
        return phrase[0] in prepared.word_set(matcher.field)
    for tokens in prepared.words(matcher.field):
        first = phrase[0]
        for start, token in enumerate(tokens):
            if token == first and tokens[start : start + len(phrase)] == phrase:
                return True
    return False


def hidden_by(subject: Subject, rule_sets: Iterable[RuleSet]) -> str | None:
    """The rule that hides the article, as people read it, or None."""
    prepared = _Prepared(subject)
    for rules in rule_sets:
        # Fields where none of the block patterns can match: their patterns need not be asked one by one.
        quiet = {
            name
            for name, regex in rules.block_regex.items()
            if not any(regex.search(text) is not None for text in prepared.texts(name))
        }
        for matcher in rules.block:
            if matcher.regex is not None and matcher.field in quiet:
                continue
            if _matches(matcher, prepared):
                return f"{rules.scope}: block {matcher.describe()}"
        if rules.keep and not any(_matches(m, prepared) for m in rules.keep):
            return f"{rules.scope}: keep (no keep rule matched)"
    return None


def applicable(
    everything: RuleSet, by_tag: Mapping[str, RuleSet], feed_rules: RuleSet | None, tags: Sequence[str]
) -> list[RuleSet]:
    """The rule sets that apply to an article of a feed with these tags, broadest first."""
    out = [everything] if everything else []
    out += [by_tag[t] for t in tags if by_tag.get(t)]
    if feed_rules:
        out.append(feed_rules)
    return out
