"""URL rules: tracking-parameter removal and the canonical URL used as a
duplicate key (DESIGN §4.5)."""

from __future__ import annotations

import re
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
    if not url:
        return None
    url = url.strip()
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
        joined = urljoin(base or "", url) if base else url
        scheme = urlsplit(joined).scheme.lower()
    except ValueError:
        return None
    return joined if scheme in ("http", "https") else None


_URI_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:\S+$")


def is_absolute_uri(value: str | None) -> bool:
    """True for 'https://…', 'urn:…', 'tag:…': usable as an Atom id as it is."""
    if not value or len(value) > 2000 or any(c.isspace() for c in value):
        return False
    if not _URI_SCHEME.match(value):
        return False
    scheme = value.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return bool(urlsplit(value).hostname)
    return scheme in ("urn", "tag", "ftp", "mailto") or scheme.startswith("x-")
