"""Keep credentials that travel in URLs out of logs and error messages. Pure.

A storage connection string may hold a SAS (``SharedAccessSignature=sv=…&sig=…``);
the Blob SDK then puts the SAS in the query string of every URL it builds, and those
URLs reach messages: ``blob.url`` in a lock or checkpoint message, the dead-letter
location the loop logs, and the SDK's own exception texts (urllib3 writes
``… Max retries exceeded with url: /container/blob?sv=…&sig=…``). Graph's
``@odata.nextLink`` carries an opaque ``$skiptoken``, and an OAuth redirect a ``code``.
A query string never tells an operator anything they need, so every URL or SDK text
that goes into a message passes through here: :func:`safe_url` for a URL we hold,
:func:`scrub` for free text we did not write.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[redacted]"

# Names whose value is a credential wherever it appears: the SAS query parameters (account,
# service and user-delegation SAS), OAuth parameters, and the secret parts of a connection string.
_CREDENTIAL_NAMES = (
    "sig|se|sv|sp|spr|srt|ss|st|sr|sip|si|sdd|ses|skoid|sktid|skt|ske|sks|skv|saoid|suoid|scid|"
    "code|client_secret|client_assertion|assertion|access_token|refresh_token|id_token|password|"
    "AccountKey|SharedAccessSignature|SharedAccessKey"
)
# ``name=value`` not inside another word; the value runs to the next separator of a query
# string, a connection string, or a sentence. A connection string's SAS holds ``&``-joined
# pairs after ``SharedAccessSignature=``: each of them matches again on its own.
_CREDENTIAL_PAIR = re.compile(rf"(?<![\w.$-])({_CREDENTIAL_NAMES})=([^&;\s'\"<>,)\]}}]*)", re.IGNORECASE)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)
# urllib3: "Max retries exceeded with url: /path?query (Caused by …)"; also "url='/path?query'".
_RELATIVE_URL = re.compile(r"(\burl\s*[:=]\s*['\"]?)(/[^\s?#'\"]*)[?#][^\s'\"]*", re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)


def safe_url(url: str | bytes) -> str:
    """``url`` without its query string, fragment and any user:password: what a message may show."""
    text = url.decode("utf-8", "replace") if isinstance(url, bytes) else url
    try:
        parts = urlsplit(text)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: cut by hand
        return _cut_query(text)
    if not parts.scheme or not parts.netloc:
        return _cut_query(text)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _cut_query(text: str) -> str:
    return re.split(r"[?#]", text, maxsplit=1)[0]


def scrub(text: str) -> str:
    """``text`` with the query string cut from every URL in it and any credential parameter blanked.

    For texts we did not write (SDK exceptions, service answers): absolute URLs lose
    query, fragment and user info; urllib3's ``with url: /path?query`` loses its query;
    a SAS, OAuth or connection-string secret left anywhere else (``sig=…``,
    ``AccountKey=…``, ``Bearer …``) becomes ``[redacted]``.
    """
    text = _URL.sub(lambda match: _safe_url_in_text(match.group(0)), text)
    text = _RELATIVE_URL.sub(lambda match: match.group(1) + match.group(2), text)
    text = _CREDENTIAL_PAIR.sub(lambda match: f"{match.group(1)}={REDACTED}", text)
    return _BEARER.sub(lambda match: f"{match.group(1)} {REDACTED}", text)


# An address as services echo it: local part, "@", a dotted domain (Unicode allowed).
_ADDRESS = re.compile(r"[^\s@<>()\[\]{},;:'\"`]+@[^\s@<>()\[\]{},;:'\"`]+\.[^\s@<>()\[\]{},;:'\"`.]+")
ADDRESS = "<address>"


def hide_addresses(text: str) -> str:
    """``text`` with every e-mail address replaced by ``<address>``.

    For service answers and record problems that go into a log line or the checkpoint's
    last run: Logs Ingestion and Graph may echo a row's values, and a recipient must
    appear nowhere but in the table and the dead letters.
    """
    return _ADDRESS.sub(ADDRESS, text)


def _safe_url_in_text(url: str) -> str:
    """A URL found in prose: keep trailing punctuation that belongs to the sentence."""
    stripped = url.rstrip(".,;:)]}")
    return safe_url(stripped) + url[len(stripped) :]
