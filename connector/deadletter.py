"""Dead letters: records that cannot become rows, kept with the reason instead of lost. Pure.

A record without the fields the pipeline needs (trace id, recipient, receive time,
status), with a date that does not parse or with fields of the wrong type cannot be
stored in ``EmailEvents_CL``, and must not stop the feed either. It is written as a
document ``deadletter/<feed>/<digest>.json`` next to the checkpoint, counted in the
run summary and logged at WARNING. The name is a digest of the record, so reading
the same slice again after a crash rewrites the same document instead of adding one.

Dead letters are the one place the connector keeps raw records (addresses, subjects;
the subject already under ``SUBJECT_MODE``, :mod:`connector.subjects`):
they are not pruned by the connector as it runs. ``python -m connector
purge-dead-letters --older-than 30d`` deletes those last written before the age
(:func:`parse_age`); a storage lifecycle rule on the ``deadletter/`` prefix does the
same in Azure.

The record is kept exactly as Graph sent it, hostile text included: the document is
ASCII JSON (``\ud83d`` stays an escape), and the name's digest encodes an unpaired
surrogate as itself (``surrogatepass``), so a record that cannot become UTF-8 can still
be dead-lettered.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from connector import __version__
from connector.mapping import format_datetime
from connector.windows import Window

DEAD_LETTER_PREFIX = "deadletter/"

_AGE = re.compile(r"([1-9][0-9]{0,5})([dh])", re.ASCII)


def parse_age(text: str) -> timedelta:
    """``30d`` or ``12h``: how old a dead letter must be to be purged.

    Days and hours only: ``m`` could be read as minutes or months, and a purge must not
    guess. Zero is refused too, as "delete everything" is not an age.

    Raises:
        ValueError: one line saying what an age looks like.
    """
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an age: give whole days or hours, like 30d or 12h")
    amount = int(match.group(1))
    return timedelta(days=amount) if match.group(2) == "d" else timedelta(hours=amount)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record the connector could not store, with why and where it came from."""

    feed: str
    reason: str
    record: object
    window: Window
    seen_at: datetime

    @property
    def name(self) -> str:
        """Stable document name: the same record always lands in the same document."""
        material = json.dumps(self.record, sort_keys=True, default=str, ensure_ascii=False)
        # surrogatepass: identical bytes for every encodable record (names stay stable across
        # versions), and an unpaired surrogate still yields a name instead of an exception.
        digest = hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        return f"{DEAD_LETTER_PREFIX}{self.feed}/{digest}.json"

    def encode(self) -> bytes:
        """The document: reason, the raw record as Graph sent it, and context (ASCII JSON)."""
        document = {
            "reason": self.reason,
            "record": self.record,
            "feed": self.feed,
            "window": {"start": format_datetime(self.window.start), "end": format_datetime(self.window.end)},
            "seen_at": format_datetime(self.seen_at),
            "connector_version": __version__,
        }
        # ASCII JSON: any text Graph sent, even an unpaired surrogate, survives as an escape.
        return json.dumps(document, indent=2, default=str).encode("ascii")
