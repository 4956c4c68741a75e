"""What happens to a message's subject before it leaves the function (``SUBJECT_MODE``). Pure.

A subject is the one message trace field that carries what a mail is *about*, and
whoever can read ``EmailEvents_CL`` reads it (README "Privacy"). Three modes:

* ``keep`` (default): the subject as Graph sent it (cut to 64 KB, like every field);
* ``hash``: ``hmac-sha256:`` + the first 32 hex digits of HMAC-SHA256(``SUBJECT_HASH_KEY``,
  the subject as UTF-8). Equal subjects still give equal values, so campaign grouping and
  "who got the mail with this exact subject" keep working for whoever holds the key
  (``python -m connector subject-hash``), while a reader without it cannot guess a
  subject by hashing candidates, as they could a plain SHA-256. 32 hex digits are 128
  bits: among a billion distinct subjects the chance that two share a value is about
  10^-21, and the value stays a short, fixed-size string;
* ``drop``: the empty string (the column stays, so queries and the schema do not change).

The mode applies to everything that leaves: the row sent to Logs Ingestion (and so the
text any refusal echoes back) and the raw record kept in a dead letter. The hash is
taken over the *whole* subject, before the 64 KB cut, and after an unpaired UTF-16
surrogate became U+FFFD (as in the row, so a dead letter and a row of one subject
agree). An empty subject stays empty in ``hash`` mode: it holds nothing to hide, and
``isempty(Subject)`` keeps meaning "no subject". ``RowId`` never includes the subject,
so it is the same in every mode.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from connector.mapping import replace_lone_surrogates

HASH_PREFIX = "hmac-sha256:"
HASH_HEX_DIGITS = 32
MIN_KEY_BYTES = 32
KEY_FORMAT = f"base64 of at least {MIN_KEY_BYTES} random bytes (make one with `openssl rand -base64 32`)"


class SubjectMode(enum.Enum):
    """``SUBJECT_MODE``: what the connector does with a subject before it leaves."""

    KEEP = "keep"
    HASH = "hash"
    DROP = "drop"


def parse_hash_key(raw: str) -> bytes:
    """The key ``SUBJECT_HASH_KEY`` holds: base64 (standard or URL-safe) of at least 32 bytes.

    One format only, so a value is never read two ways (a hex string is valid base64 too);
    base64 because that is what ``openssl rand -base64`` and Key Vault users paste. The
    error never quotes the value: it is a secret even when it is a bad one.

    Raises:
        ValueError: not base64, or too short; says what a key looks like.
    """
    if raw.strip().startswith("@Microsoft.KeyVault("):
        # The Functions host passes a reference it could not resolve through as text.
        raise ValueError(
            "is a Key Vault reference the Functions host could not resolve: check that the secret exists "
            "and that the function identity has Key Vault Secrets User on the vault (infra/README.md)"
        )
    text = raw.strip().replace("-", "+").replace("_", "/")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not base64: it must be {KEY_FORMAT}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"decodes to {len(key)} bytes: it must be {KEY_FORMAT}")
    return key


@dataclass(frozen=True, slots=True)
class SubjectPolicy:
    """The mode and, for ``hash``, the key (kept out of ``repr``: a logged policy never shows it)."""

    mode: SubjectMode = SubjectMode.KEEP
    key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode is SubjectMode.HASH and (self.key is None or len(self.key) < MIN_KEY_BYTES):
            raise ValueError(f"hash mode needs a key of at least {MIN_KEY_BYTES} bytes")

    def apply(self, subject: str | None) -> str | None:
        """The subject as it may leave the function: kept, hashed or emptied (None stays None)."""
        if subject is None or self.mode is SubjectMode.KEEP:
            return subject
        if self.mode is SubjectMode.DROP or not subject:
            return ""
        return self.digest(subject)

    def digest(self, subject: str) -> str:
        """``hmac-sha256:`` + 32 hex digits of the subject under this policy's key."""
        assert self.key is not None  # noqa: S101 - __post_init__ holds it for hash mode
        text = replace_lone_surrogates(subject).encode("utf-8")
        return HASH_PREFIX + hmac.new(self.key, text, hashlib.sha256).hexdigest()[:HASH_HEX_DIGITS]

    def scrub_record(self, raw: object) -> object:
        """A raw Graph record as a dead letter may keep it: its subject under this mode.

        Any key spelled ``subject`` in any case is treated, and a subject that is not a
        string (a record refused for exactly that) is hashed as its JSON text or emptied,
        since it may still hold the words. A record that is not a JSON object has no
        subject field and is kept as it is.
        """
        if self.mode is SubjectMode.KEEP or not isinstance(raw, Mapping):
            return raw
        scrubbed: dict[object, object] = {}
        for name, value in raw.items():
            if isinstance(name, str) and name.lower() == "subject" and value is not None:
                text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
                value = self.apply(text)
            scrubbed[name] = value
        return scrubbed


KEEP_SUBJECTS = SubjectPolicy()
