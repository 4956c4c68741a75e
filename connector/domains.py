"""One spelling per mail domain, so ``Direction`` and the domain columns do not depend on how it was written.

Graph hands over addresses as the sender or the mail system wrote them: ``Contoso.COM``,
``contoso.com.`` (the DNS root's trailing dot), ``bücher.example`` or its ASCII form
``xn--bcher-kva.example``. Compared as text, each spelling of one domain would be another
domain, and mail between two of the organisation's own domains could be called
``Inbound`` or ``External``.

The canonical form is the lower-case ASCII one (IDNA "A-label", punycode) without a
trailing dot:

* ordinary ASCII domains keep the text the table always held (lower-cased), so queries
  and rows stored before this change still match;
* a Unicode domain and its ``xn--`` form become one value, whichever Graph sent;
* look-alike (homograph) domains stay visible in the table as ``xn--`` labels instead of
  passing for the ASCII domain they imitate.

The conversion is UTS 46 + IDNA 2008 (the ``idna`` package, the rules browsers and
registries use), not Python's built-in ``idna`` codec, which implements IDNA 2003: it
maps ``faß.de`` to ``fass.de`` (another domain, another owner) and accepts symbols that
registries no longer allow. A domain in a record that IDNA 2008 refuses (a symbol or
emoji label, an underscore, a malformed ``xn--`` label) is still a fact about the
message: it is kept lower-cased as written rather than failing the record. A local
domain in the settings must convert, or the setting is refused (:func:`local_domain`).

Pure: no I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache

import idna

# What LOCAL_DOMAINS accepts once converted: at least two labels of letters, digits, '-'.
_ASCII_DOMAIN = re.compile(r"[a-z0-9-]+(\.[a-z0-9-]+)+")


@lru_cache(maxsize=4096)
def normalise_domain(domain: str) -> str:
    """The canonical form of ``domain``: lower-case A-label, no trailing dot.

    A domain that IDNA 2008 refuses comes back lower-cased as written (trailing dot
    removed), so a record is never dropped for its domain. Cached: a run sees few
    distinct domains and many rows.
    """
    text = domain.strip().rstrip(".")
    if text.isascii():
        # UTS 46 only lower-cases ASCII, and an ASCII name it refuses falls back to the
        # lower-cased text anyway, so the result is the same without the conversion.
        return text.lower()
    try:
        return idna.encode(text, uts46=True).decode("ascii").rstrip(".")
    except UnicodeError:  # idna.IDNAError and its subclasses
        return text.lower()


def local_domain(value: str) -> str:
    """The canonical form of one LOCAL_DOMAINS entry; ``ValueError`` naming it if it cannot be a domain.

    Stricter than :func:`normalise_domain`: a setting that is not a domain would make
    ``Direction`` wrong for every row, so it stops the run instead of being guessed at.
    """
    shown = value.strip()
    text = shown.lstrip("@").rstrip(".")
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=True).decode("ascii").rstrip(".")
        except UnicodeError as err:  # the reason names the label and the code point
            raise ValueError(f"{shown!r} is not a domain (IDNA 2008 refuses it: {err})") from None
    text = text.lower()
    if not _ASCII_DOMAIN.fullmatch(text):
        raise ValueError(f"{shown!r} is not a domain name")
    return text
