"""Story clustering (DESIGN §4.6): which articles from different outlets
report the same event. Pure functions and frozen records: no I/O, no clock,
no SQL. The store keeps what these functions return and hands it back.

How it decides:

* ``features`` turns an article's title and plain-text lead into a small
  weighted bag of terms: words of any script (casefolded, accents and Arabic
  vowel signs dropped, English plurals folded, CJK as character pairs) minus
  stop words; a title occurrence weighs ``title_weight`` times a lead one,
  counts are sublinear (1 + ln n), the vector is L2-normalised and keeps its
  ``max_terms`` heaviest terms, heaviest first.
* ``index_keys`` are the article's ``max_keys`` heaviest terms. The store
  keeps one row ``(key, story id, published_at)`` per key of every clustered
  article and, for a newcomer, reads the rows of its keys within ``window``
  of its published_at (none for a key more than ``max_key_articles`` carry)
  and passes them to ``select_candidates``: how many window articles carry each key, and
  the stories that share the most keys.
* A story remembers a ``StoryProfile``: the sum of its members' vectors
  (capped), its feeds, language and time span. ``assign`` scores each allowed
  candidate by the cosine between the newcomer and the story's centroid, in
  which a key that many articles of the window carry weighs less
  (``1 / (1 + idf_strength * ln n)``: a name that is everywhere this week is
  weak evidence, a rare one strong); it joins the best story at or above
  ``threshold`` or starts a new one. The hard rules come first: never two
  articles of one feed, never two languages, never outside the window, never
  a story longer than ``max_span``.

The only corpus statistics are those window counts, which the store's index
already holds: nothing to ship, nothing global to keep.

What the store keeps. Per story: its id and ``StoryProfile.to_json()``
(about 0.7 KB, rewritten at each join). Per article: its story id, and the
``Assignment``'s score and shared terms (the "why" people see). Index rows
``(key, story id, published_at)``, looked up by key and published_at. An
article's features need not be stored: ``features`` is pure and versioned, so
a split or join rebuilds profiles from the members' title and summary
(``build_profile``). ``features`` may run where the entry is parsed.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import stop_words as stop_words_package

# Bumped whenever ``features`` would give other terms or weights for the
# same input: a stored profile of another version is refused (ValueError)
# and must be rebuilt from its members' text (``build_profile``).
FEATURES_VERSION = 1
SCALE = 10_000  # a unit vector's weights as integers: 4 decimals
MAX_TITLE = 500  # characters of the title that features() reads
MAX_TEXT = 2_000  # characters of the lead that features() reads (a lead of 60-100 words is 400-700)


_W = TypeVar("_W", int, float)


@dataclass(frozen=True)
class ClusterSettings:
    """How articles are compared and grouped (chosen on the dev set: bench/RESULTS.md)."""

    title_weight: float = 2.0  # a title occurrence counts this many lead occurrences
    max_terms: int = 40  # an article's vector keeps this many heaviest terms

    window: float = 48 * 3600.0  # seconds: a story is a candidate while a member is this close in published_at
    threshold: float = 0.22  # score needed to join
    idf_strength: float = 0.6  # how much a key carried by many window articles is discounted
    max_span: float = 96 * 3600.0  # seconds: the longest a story may last, first member to last
    max_keys: int = 8  # index keys per article
    max_key_articles: int = 100  # a key on more window articles than this is too common to find candidates by
    max_candidates: int = 20  # stories assign looks at, most shared keys first
    centroid_terms: int = 40  # terms a story profile keeps


DEFAULT_SETTINGS = ClusterSettings()


# --- features ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoryFeatures:
    """What one article contributes: its weighted terms, heaviest first
    (ties by term), and its primary language subtag (None: unknown). Weights
    are integers, the unit vector times ``SCALE``: sums of them are exact, so
    a story's centroid does not depend on the order of its additions."""

    terms: tuple[tuple[str, int], ...]
    language: str | None

    def to_json(self) -> str:
        return _JSON.encode({"v": FEATURES_VERSION, "lang": self.language, "terms": dict(self.terms)})

    @classmethod
    def from_json(cls, text: str | bytes) -> StoryFeatures:
        """Raises ValueError, naming what is wrong, for anything but a
        ``to_json`` of this version."""
        data = _load_versioned(text, "story features")
        terms = _terms_from(data.get("terms"), "story features")
        return cls(_heaviest(terms, len(terms)), _language_from(data.get("lang")))


def features(
    title: str, text: str, language: str | None, settings: ClusterSettings = DEFAULT_SETTINGS
) -> StoryFeatures:
    """The terms of an article's title and plain-text lead (either may be
    empty; an article with no terms never joins a story). Only the first
    ``MAX_TITLE`` and ``MAX_TEXT`` characters count: a lead is what
    identifies the event, and a whole article as summary would cost time."""
    title, text = title[:MAX_TITLE], text[:MAX_TEXT]
    lang = primary_language(language)
    stop = stop_words(lang)
    fold_plurals = lang in (None, "en")
    log = math.log
    raw = {t: settings.title_weight * (1.0 + log(n)) for t, n in Counter(_terms(title, stop, fold_plurals)).items()}
    for term, n in Counter(_terms(text, stop, fold_plurals)).items():
        raw[term] = raw.get(term, 0.0) + 1.0 + log(n)
    ranked = _heaviest(raw, settings.max_terms)
    scale = SCALE / (math.sqrt(sum(w * w for _, w in ranked)) or 1.0)
    return StoryFeatures(tuple((t, r) for t, w in ranked if (r := int(w * scale + 0.5)) > 0), lang)


def index_keys(feats: StoryFeatures, settings: ClusterSettings = DEFAULT_SETTINGS) -> tuple[str, ...]:
    """The keys under which the store indexes the article and looks up its
    candidates: its heaviest terms, heaviest first."""
    return tuple(term for term, _ in feats.terms[: settings.max_keys])


# --- candidates --------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateSelection:
    story_ids: tuple[str, ...]  # most shared keys first, then story id; at most max_candidates
    key_counts: Mapping[str, int]  # key -> window articles carrying it (capped at max_key_articles + 1)


def select_candidates(
    key_rows: Mapping[str, Sequence[str] | None], settings: ClusterSettings = DEFAULT_SETTINGS
) -> CandidateSelection:
    """From the index rows the store read for each of the newcomer's keys
    (the story id of every indexed article carrying the key, published within
    ``window`` of the newcomer; None, or more than ``max_key_articles`` ids,
    for a key that more articles carry), the stories worth scoring and the
    key counts ``assign`` weighs keys by. A key carried by more than
    ``max_key_articles`` names no candidates: on its own it says little, and
    reading all its rows would cost too much."""
    shared: Counter[str] = Counter()
    counts: dict[str, int] = {}
    for key, story_ids in key_rows.items():
        if story_ids is None or len(story_ids) > settings.max_key_articles:
            counts[key] = settings.max_key_articles + 1
        else:
            counts[key] = len(story_ids)
            shared.update(set(story_ids))
    ranked = sorted(shared.items(), key=lambda item: (-item[1], item[0]))[: settings.max_candidates]
    return CandidateSelection(tuple(story_id for story_id, _ in ranked), counts)


# --- story profiles ----------------------------------------------------------------------


@dataclass(frozen=True)
class Newcomer:
    """An article to place: its features, its feed and its published_at."""

    features: StoryFeatures
    feed_id: str
    published_at: datetime  # timezone-aware


@dataclass(frozen=True)
class StoryProfile:
    """What a story remembers to compare newcomers with: the sum of its
    members' vectors (its ``centroid_terms`` heaviest terms, heaviest first),
    how many members, the feeds they came from, the language of its first
    member that had one, and the span of its members' published_at."""

    centroid: tuple[tuple[str, int], ...]
    size: int
    feeds: tuple[str, ...]  # sorted, distinct
    language: str | None
    first_at: datetime
    last_at: datetime

    @functools.cached_property
    def weights(self) -> dict[str, int]:
        """The centroid as a mapping (computed once; do not modify)."""
        return dict(self.centroid)

    @functools.cached_property
    def norm2(self) -> int:
        return sum(w * w for _, w in self.centroid)

    def to_json(self) -> str:
        return _JSON.encode(
            {
                "v": FEATURES_VERSION,
                "lang": self.language,
                "size": self.size,
                "feeds": list(self.feeds),
                "first": self.first_at.isoformat(),
                "last": self.last_at.isoformat(),
                "terms": self.weights,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> StoryProfile:
        """Raises ValueError, naming what is wrong, for anything but a
        ``to_json`` of this version."""
        data = _load_versioned(text, "story profile")
        feeds, size = data.get("feeds"), data.get("size")
        if not isinstance(feeds, list) or not feeds or not all(isinstance(f, str) for f in feeds):
            raise ValueError("story profile: 'feeds' must be a non-empty list of strings")
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError("story profile: 'size' must be a positive integer")
        terms = _terms_from(data.get("terms"), "story profile")
        return cls(
            tuple(terms.items()),
            size,
            tuple(sorted(set(feeds))),
            _language_from(data.get("lang")),
            _time_from(data.get("first"), "first"),
            _time_from(data.get("last"), "last"),
        )


def new_profile(article: Newcomer, settings: ClusterSettings = DEFAULT_SETTINGS) -> StoryProfile:
    """The profile of a story that has just this article."""
    centroid = article.features.terms[: settings.centroid_terms]
    return StoryProfile(
        centroid, 1, (article.feed_id,), article.features.language, article.published_at, article.published_at
    )


def join_profile(
    profile: StoryProfile, article: Newcomer, settings: ClusterSettings = DEFAULT_SETTINGS
) -> StoryProfile:
    """The profile once the article has joined the story."""
    summed = dict(profile.centroid)
    for term, weight in article.features.terms:
        summed[term] = summed.get(term, 0) + weight
    return StoryProfile(
        _heaviest(summed, settings.centroid_terms),
        profile.size + 1,
        tuple(sorted({*profile.feeds, article.feed_id})),
        profile.language or article.features.language,
        min(profile.first_at, article.published_at),
        max(profile.last_at, article.published_at),
    )


def build_profile(members: Iterable[Newcomer], settings: ClusterSettings = DEFAULT_SETTINGS) -> StoryProfile | None:
    """The profile of a story made of these members in this order (for the
    store after a manual split or join, or a FEATURES_VERSION change). None
    for no members."""
    profile: StoryProfile | None = None
    for member in members:
        profile = new_profile(member, settings) if profile is None else join_profile(profile, member, settings)
    return profile


# --- assignment ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    story_id: str
    profile: StoryProfile


@dataclass(frozen=True)
class Assignment:
    """The decision for one article: join ``story_id``, or start a new story
    (``story_id`` None). ``score`` is the similarity that joined it, or the
    best one that fell short (of ``best_story``); ``shared`` are the terms
    that weighed most in that score, for people to see why."""

    story_id: str | None
    score: float = 0.0
    shared: tuple[str, ...] = ()
    best_story: str | None = None


def assign(
    article: Newcomer,
    candidates: Iterable[Candidate],
    key_counts: Mapping[str, int],
    settings: ClusterSettings = DEFAULT_SETTINGS,
) -> Assignment:
    """Join the most similar candidate story the rules allow, if its score
    reaches the threshold; otherwise start a new story. Equal scores go to
    the smallest story id, so the answer never depends on the candidates'
    order. ``key_counts`` are ``select_candidates``'s."""
    factor = {key: 1.0 / (1.0 + settings.idf_strength * math.log(n)) for key, n in key_counts.items() if n > 1}
    # Both sides are weighed by the key factors: the article's vector by f
    # (for its norm) and once more by f (standing for the centroid's f in the
    # dot product, so that the centroid's stored weights serve as they are).
    once = {t: w * factor.get(t, 1.0) for t, w in article.features.terms} if factor else dict(article.features.terms)
    vector_norm = math.sqrt(sum(w * w for w in once.values()))
    if vector_norm == 0:
        return Assignment(None)
    vector = {t: w * factor.get(t, 1.0) for t, w in once.items()} if factor else once
    window, max_span = timedelta(seconds=settings.window), timedelta(seconds=settings.max_span)
    best_score, best = -1.0, None
    for candidate in candidates:
        profile = candidate.profile
        if article.feed_id in profile.feeds or not compatible_languages(article.features.language, profile.language):
            continue
        if not _in_window(article.published_at, profile, window, max_span):
            continue
        score = _cosine(vector, profile, factor) / vector_norm
        if score > best_score or (score == best_score and best is not None and candidate.story_id < best.story_id):
            best_score, best = score, candidate
    if best is None or best_score <= 0.0:
        return Assignment(None)
    score = round(best_score, 4)
    shared = _shared_terms(vector, best.profile, factor)
    return Assignment(best.story_id if score >= settings.threshold else None, score, shared, best.story_id)


def in_window(published_at: datetime, profile: StoryProfile, settings: ClusterSettings = DEFAULT_SETTINGS) -> bool:
    """May an article of this time join this story? Within ``window`` of one
    of its members (of its time span), and the story would not then last
    longer than ``max_span``: an event covered for days on end becomes a new
    story every few days, rather than one that drifts from topic to topic."""
    return _in_window(published_at, profile, timedelta(seconds=settings.window), timedelta(seconds=settings.max_span))


def _in_window(t: datetime, profile: StoryProfile, window: timedelta, max_span: timedelta) -> bool:
    if not profile.first_at - window <= t <= profile.last_at + window:
        return False
    return max(t, profile.last_at) - min(t, profile.first_at) <= max_span


def primary_language(language: str | None) -> str | None:
    """``en-US`` -> ``en``; None for a missing or meaningless value."""
    if not language:
        return None
    primary = language.strip().replace("_", "-").split("-", 1)[0].lower()
    return primary if primary.isascii() and primary.isalpha() and 2 <= len(primary) <= 3 else None


def compatible_languages(a: str | None, b: str | None) -> bool:
    """Primary subtags must match; an unknown language matches any."""
    return a is None or b is None or a == b


# --- text ---------------------------------------------------------------------------------

# A run of word characters (any script). Apostrophes split words ("don't":
# "don", "t"), which the stop words and the length limit absorb; possessives
# and separators inside numbers ("1,000", "3.5") are removed first. Linear.
_WORD = re.compile(r"\w+")
_POSSESSIVE = re.compile(r"'s\b")
_NUMBER_SEPARATOR = re.compile(r"(\d)[.,](?=\d)")
_HAS_DIGIT = re.compile(r"\d")
# Compiled on first use: a few milliseconds that a feed of plain English never needs.
_CJK = functools.cache(lambda: re.compile("[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]"))
_MAX_TERM = 40  # longer "words" are URLs, hashes or garbage
# Combining marks (accents; Arabic, Hebrew and Syriac vowel signs), dropped
# after NFKD so that "é" and "e" are one letter.
_MARKS = functools.cache(
    lambda: re.compile(
        "[\u0300-\u036f\u0483-\u0489\u0591-\u05c7\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed"
        "\u0711\u0730-\u074a\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
    )
)
_APOSTROPHES = ("\u2019", "\u02bc")
_ARABIC = re.compile("[\u0600-\u06ff]")
# Letters whose form Arabic spelling leaves to the writer, folded to one:
# alef with hamza or madda and alef wasla to alef, alef maqsura to yeh, teh
# marbuta to heh; tatweel (a stretching stroke) dropped.
_ARABIC_FOLDS = (
    ("\u0623", "\u0627"),
    ("\u0625", "\u0627"),
    ("\u0622", "\u0627"),
    ("\u0671", "\u0627"),
    ("\u0649", "\u064a"),
    ("\u0629", "\u0647"),
    ("\u0640", ""),
)


def _normalise(text: str) -> str:
    if text.isascii():
        return text
    # str.replace and one regex pass: str.translate with a mapping costs
    # several times more on a non-ASCII text.
    decomposed = unicodedata.normalize("NFKD", text)
    if decomposed != text:  # typographic quotes and dashes alone do not decompose
        text = _MARKS().sub("", decomposed)
    for apostrophe in _APOSTROPHES:
        text = text.replace(apostrophe, "'")
    if _ARABIC.search(text):
        for variant, letter in _ARABIC_FOLDS:
            text = text.replace(variant, letter)
    return text


def _terms(text: str, stop: frozenset[str], fold_plurals: bool) -> list[str]:
    """The terms of one text, in order."""
    text = _POSSESSIVE.sub("", _normalise(text))
    if _HAS_DIGIT.search(text):
        text = _NUMBER_SEPARATOR.sub(r"\1", text)
    tokens = _WORD.findall(text)
    if not text.isascii() and (cjk := _CJK()).search(text):
        tokens = [pair for token in tokens for pair in (_cjk_pairs(token) if cjk.search(token) else (token,))]
    # Casefolded in one call rather than one call per token: this function is
    # most of the cost of features().
    folded = "\x00".join(tokens).casefold().split("\x00")
    if fold_plurals:
        return [_fold_plural(t) if t[-1] == "s" else t for t in folded if 1 < len(t) <= _MAX_TERM and t not in stop]
    return [t for t in folded if 1 < len(t) <= _MAX_TERM and t not in stop]


def _cjk_pairs(token: str) -> list[str]:
    """Scripts written without spaces: a run of characters as overlapping pairs."""
    return [token[i : i + 2] for i in range(len(token) - 1)] or [token]


def _fold_plural(term: str) -> str:
    """English plurals to the singular, roughly but consistently: enough for
    "email" and "emails" to be one term."""
    if len(term) <= 3 or term[-2] in "su'":
        return term
    if term.endswith("ies") and len(term) > 4:
        return term[:-3] + "y"
    return term[:-1]


def _heaviest(weights: Mapping[str, _W], limit: int) -> tuple[tuple[str, _W], ...]:
    """The ``limit`` heaviest terms, heaviest first, ties by term."""
    # Two sorts in C: by term, then (stable, even reversed) by weight.
    return tuple(sorted(sorted(weights.items()), key=operator.itemgetter(1), reverse=True)[:limit])


def _cosine(vector: Mapping[str, float], profile: StoryProfile, factor: Mapping[str, float]) -> float:
    """Dot product of the article's vector (weighed twice by the key factors)
    with the profile's centroid, divided by the norm of the centroid weighed
    by the key factors. The article's terms are few: loop over them."""
    centroid = profile.weights
    dot = 0.0
    for term, weight in vector.items():
        other = centroid.get(term)
        if other is not None:
            dot += weight * other
    if dot == 0.0:
        return 0.0
    norm2 = float(profile.norm2)
    for term, f in factor.items():
        other = centroid.get(term)
        if other is not None:
            norm2 += other * other * (f * f - 1.0)
    return dot / math.sqrt(norm2) if norm2 > 0 else 0.0


def _shared_terms(
    vector: Mapping[str, float], profile: StoryProfile, factor: Mapping[str, float], limit: int = 5
) -> tuple[str, ...]:
    centroid = profile.weights
    products = sorted((-w * centroid[t], t) for t, w in vector.items() if t in centroid)
    return tuple(t for _, t in products[:limit])


# --- stored forms --------------------------------------------------------------------------


_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _load_versioned(text: str | bytes, what: str) -> dict[str, object]:
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what}: expected a JSON object")
    if data.get("v") != FEATURES_VERSION:
        raise ValueError(f"{what}: version {data.get('v')!r}, this code reads {FEATURES_VERSION}: rebuild it")
    return data


def _terms_from(value: object, what: str) -> dict[str, int]:
    if not isinstance(value, dict) or not all(type(w) is int and w > 0 for w in value.values()):
        raise ValueError(f"{what}: 'terms' must be an object of positive integer weights")
    return value


def _language_from(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError("'lang' must be a string or null")
    return primary_language(value)


def _time_from(value: object, name: str) -> datetime:
    try:
        when = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ValueError(f"story profile: '{name}' must be an ISO 8601 time with a timezone")
    return when


# --- stop words ----------------------------------------------------------------------------

# Lists of the stop-words package for scripts that English words never use:
# safe to apply to an article whose language is unknown or has no list.
_NON_LATIN_LISTS = ("ar", "bg", "el", "fa", "gu", "he", "hi", "ja", "ko", "ru", "uk", "zh")


@functools.cache
def stop_words(language: str | None) -> frozenset[str]:
    """Stop words for a primary language subtag, normalised as terms are.
    English uses our own list; other languages the stop-words package's
    list; a language without a list (or unknown) English plus every
    non-Latin-script list."""
    if language == "en":
        return _ENGLISH_STOP
    if language in stop_words_package.LANGUAGE_MAPPING:
        words = stop_words_package.get_stop_words(language, cache=False)
    else:
        words = [w for code in _NON_LATIN_LISTS for w in stop_words_package.get_stop_words(code, cache=False)]
        words.extend(_ENGLISH_STOP)
    # Normalised and split as text is, so that "aujourd'hui" stops "aujourd" and "hui".
    return frozenset(t for word in words for t in _WORD.findall(_normalise(word).casefold())) | _SINGLE_CHARACTERS


_SINGLE_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

# English function words, the leftovers of split contractions, news
# boilerplate, weekdays and months (time is the window's business, not the
# words'). Our own list rather than the stop-words package's English one,
# which drops words that carry news ("bill", "million", "state", "open").
_ENGLISH_STOP_WORDS = """
    a about above across after afterwards again against ago all almost alone along already also although always am
    among amongst an and another any anybody anyone anything anyway anywhere are around as at away be became because
    become becomes been before behind being below beside besides between beyond both but by can cannot could did do
    does doing done down during each either else elsewhere enough even ever every everyone everything everywhere except
    few for former formerly from further had has have having he her here hers herself him himself his how however if in
    inside into is it its itself just least less let like likely many may maybe me might mine more moreover most mostly
    much must my myself neither never nevertheless no nobody none nor not nothing now nowhere of off often on once one
    only onto or other others otherwise ought our ours ourselves out over own per perhaps quite rather really same
    shall she should since so some somehow someone something sometime sometimes somewhere still such than that the
    their theirs them themselves then thence there thereafter thereby therefore therein these they this those though
    through throughout thru thus to together too toward towards under unless until up upon us very via was we were what
    whatever when whenever where whereas wherever whether which while who whoever whole whom whose why will with within
    without would yet you your yours yourself yourselves
    ain aren couldn didn doesn don hadn hasn haven isn mustn shan shouldn wasn weren won wouldn ll ve re
    said says say saying told tells according new news video videos watch live update updates updated breaking
    exclusive opinion analysis photo photos read mr mrs ms dr
    monday tuesday wednesday thursday friday saturday sunday today yesterday tomorrow tonight week weekend
    january february april june july august september october november december
"""
_ENGLISH_STOP = frozenset(_ENGLISH_STOP_WORDS.split()) | _SINGLE_CHARACTERS
