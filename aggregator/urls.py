"""URL rules: tracking-parameter removal and the canonical URL used as a
duplicate key (DESIGN §4.5)."""

from __future__ import annotations

import ipaddress
import re
from datetime import date
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

# Parameters that only say where a click came from. Matched case-insensitively.
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "mc_cid",
        "mc_eid",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "igshid",
        "ncid",
        "ocid",
        "cmpid",
        "_openstat",
        "fb_action_ids",
        "fb_action_types",
        "fb_ref",
        "fb_source",
        "ga_source",
        "ga_medium",
        "ga_campaign",
        "ga_content",
        "ga_term",
        "at_medium",
        "at_campaign",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "vero_conv",
        "rb_clickid",
        "s_cid",
        "sc_cid",
        "wt_mc",
        "wt.mc_id",
        "__twitter_impression",
        "_ga",
        "_gl",
        "ito",
        "cmp",
        "xtor",
        "guccounter",
        "guce_referrer",
        "guce_referrer_sig",
        "spm",
        "soc_src",
        "soc_trk",
    }
)
TRACKING_PREFIXES = ("utm_", "hmb_", "pk_", "mtm_", "itm_")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_tracking_param(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def _without_tracking(query: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not is_tracking_param(k)]


def clean_url(url: str | None) -> str | None:
    """The link we publish: the original URL minus tracking parameters (and
    a fragment that is itself a tracker, like #xtor=RSS-8). Scheme, host and
    path are kept as the source wrote them."""
    url = url.strip() if url else None
    if not url:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    query = parts.query
    if query:
        kept = _without_tracking(query)
        if len(kept) != len(parse_qsl(query, keep_blank_values=True)):
            query = urlencode(kept, doseq=True)
    fragment = parts.fragment
    if fragment and re.match(r"^(xtor|utm_|at_|ns_)", fragment, re.I):
        fragment = ""
    if query == parts.query and fragment == parts.fragment:
        return url
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, fragment))


def canonical_url(url: str | None) -> str | None:
    """The duplicate key for a link. http and https are equal, as are
    example.com and www.example.com; case of scheme and host, default
    ports, fragments, trailing slashes, tracking parameters and parameter
    order do not matter. Not a URL to visit: a key."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not host:
        return None
    if host.startswith("www."):
        host = host[4:]
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    path = parts.path or "/"
    path = re.sub(r"/{2,}", "/", path)
    if len(path) > 1:
        path = path.rstrip("/")
    query = urlencode(sorted(_without_tracking(parts.query)), doseq=True) if parts.query else ""
    return urlunsplit(("https", netloc, path, query, ""))


def is_weak_identity(canonical: str | None) -> bool:
    """A site's home page is not a story: many entries link there, so it must
    never make two entries the same article."""
    if not canonical:
        return True
    parts = urlsplit(canonical)
    return parts.path in ("", "/") and not parts.query


def absolute(url: str | None, base: str | None) -> str | None:
    """Resolve url against base; None when the result is not http(s)."""
    if not url:
        return None
    url = url.strip()
    try:
        # urljoin drops an empty query ("x ?"), which can leave whitespace at the end.
        joined = (urljoin(base or "", url) if base else url).strip()
        scheme = urlsplit(joined).scheme.lower()
    except ValueError:
        return None
    return joined if scheme in ("http", "https") else None


MAX_ID_LENGTH = 2000

# What the W3C Feed Validator accepts in an id, in the RFCs' words. Every
# pattern is anchored and bounded by MAX_ID_LENGTH before it runs.
# Characters of an ASCII URI (RFC 3986: unreserved, sub-delims, gen-delims
# but brackets, and '%'); brackets only around an IPv6 host.
_URI_CHARS = re.compile(r"[0-9A-Za-z;/?:@&=+$.\-_!~*'()%,#]*")
_PCT_BROKEN = re.compile(r"%(?![0-9A-Fa-f]{2})")
_DNS_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?")
# RFC 4151, with the validator's lower-case authority: tag:authority,date:specific[#fragment]
_TAG = re.compile(
    r"tag:(?:[a-z0-9._-]+@)?(?P<dns>[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*)"
    r",(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2}))?)?"
    r":(?:[0-9A-Za-z;/?:@&=+$.\-_!~*'(),]|%[0-9A-Fa-f]{2})*"
    r"(?:#(?:[0-9A-Za-z;/?:@&=+$.\-_!~*'(),]|%[0-9A-Fa-f]{2})*)?"
)
# RFC 8141 NID (2-32 letters, digits, hyphens; no hyphen first or last) and
# an NSS of the characters both RFC 8141 and the validator's RFC 2141 check
# allow (so no '/', '~' or '&', no ?+ ?= # components).
_URN = re.compile(
    r"urn:(?P<nid>[A-Za-z0-9][A-Za-z0-9-]{0,30}[A-Za-z0-9]):(?:[A-Za-z0-9()+,.:=@;$_!*'-]|%[0-9A-Fa-f]{2})+",
    re.IGNORECASE,
)
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def is_reusable_id(value: str | None) -> bool:
    """Whether a source's entry id can be published as it is: a valid IRI of
    a scheme we can vouch for, as the W3C Feed Validator checks it. http and
    https with a valid host (no user or password: credentials are never
    republished), tag (RFC 4151) and urn (RFC 8141; a urn:uuid must be a
    UUID), all in ASCII. Anything else is given a minted id (dedupe.py):
    stricter than the RFCs costs nothing but a source id we did not reuse."""
    if not value or len(value) > MAX_ID_LENGTH or not value.isascii():
        return False
    scheme = value.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return _is_web_id(value)
    if scheme == "tag":
        return _is_tag(value)
    if scheme == "urn":
        match = _URN.fullmatch(value)
        if match is None:
            return False
        if match["nid"].lower() == "uuid":
            return bool(_UUID.fullmatch(value[len("urn:uuid:") :]))
        return True
    return False


def _is_web_id(value: str) -> bool:
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:  # a port that is not a number or out of range, a broken IPv6 literal
        return False
    if not port_ok or parts.username is not None or value.count("#") > 1 or _PCT_BROKEN.search(value):
        return False
    host = parts.hostname or ""
    if not host or not value[len(parts.scheme) :].startswith("://"):
        return False
    rest = value
    if ":" in host:  # an IPv6 literal: urlsplit checked the brackets, not what is inside
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        rest = value.replace(parts.netloc[parts.netloc.index("[") : parts.netloc.index("]") + 1], "", 1)
    elif not _DNS_NAME.fullmatch(host):
        return False
    return bool(_URI_CHARS.fullmatch(rest))


def _is_tag(value: str) -> bool:
    match = _TAG.fullmatch(value)
    if match is None:
        return False
    year, month, day = int(match["year"]), int(match["month"] or 1), int(match["day"] or 1)
    try:
        date(year, month, day)
    except ValueError:
        return False
    return True
