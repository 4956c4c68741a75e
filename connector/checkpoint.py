"""The checkpoint document: progress, the dedup ledger and the last run, as versioned JSON. Pure.

One document per feed: ``live.json`` for the timer, ``backfill/<start>_<end>.json``
for each manual backfill. ``high_water_mark`` only ever covers slices whose every
row was accepted by the Logs Ingestion API; the ledger holds the rows committed
since (and the lookback span before) it, so a re-run after any stop neither loses
nor repeats a row.

Format (``format_version`` 1)::

    {"format_version": 1, "feed": "live", "high_water_mark": "...Z" | null,
     "coverage_start": "...Z" | null, "range": {"start": ..., "end": ...} | null,
     "slice_span_seconds": 3600,
     "ledger": {"<key digest>": [<received, epoch ms>, "<status>", <revision>], ...},
     "last_run": {...} | null, "updated": "...Z",
     "pending_batch": {"created": "...Z", "entries": [[key, received_ms, status, revision, trace id]]} | null}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from connector.errors import CheckpointFormatError
from connector.ledger import LedgerEntry
from connector.mapping import format_datetime, parse_datetime

FORMAT_VERSION = 1
LIVE_FEED = "live"


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the last run did, for ``status`` and for operators reading the blob."""

    started: str
    finished: str
    outcome: str
    rows_uploaded: int
    revisions: int
    duplicates_dropped: int
    batches: int
    error: str | None = None
    dead_lettered: int = 0
    possible_duplicates: int = 0


@dataclass(frozen=True, slots=True)
class IntentEntry:
    """One row of a batch about to be sent: enough to find it in the workspace and commit it."""

    key: str
    received_ms: int
    status: str
    revision: int
    trace_id: str


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """The batch in flight: written before the upload, cleared once the upload's outcome is known.

    Found on load, it means the process stopped between sending a batch and learning
    (or recording) whether the service took it.
    """

    created: datetime
    entries: tuple[IntentEntry, ...]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """State of one feed (live or one backfill)."""

    feed: str
    high_water_mark: datetime | None = None
    coverage_start: datetime | None = None
    range_start: datetime | None = None
    range_end: datetime | None = None
    slice_span: timedelta | None = None
    ledger: dict[str, LedgerEntry] = field(default_factory=dict)
    last_run: RunSummary | None = None
    updated: datetime | None = None
    pending_batch: PendingBatch | None = None
    possible_duplicates_total: int = 0

    def with_changes(self, **changes: Any) -> Checkpoint:
        """Copy with fields replaced."""
        return replace(self, **changes)


def backfill_feed_name(start: datetime, end: datetime) -> str:
    """Name of the checkpoint document for a backfill of ``[start, end)``."""
    return f"backfill/{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else format_datetime(value)


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """Serialise to UTF-8 JSON."""
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "feed": checkpoint.feed,
        "high_water_mark": _iso(checkpoint.high_water_mark),
        "coverage_start": _iso(checkpoint.coverage_start),
        "range": (
            None
            if checkpoint.range_start is None or checkpoint.range_end is None
            else {"start": _iso(checkpoint.range_start), "end": _iso(checkpoint.range_end)}
        ),
        "slice_span_seconds": None
        if checkpoint.slice_span is None
        else int(checkpoint.slice_span.total_seconds()),
        "ledger": {
            key: [entry.received_ms, entry.status, entry.revision] for key, entry in checkpoint.ledger.items()
        },
        "last_run": None if checkpoint.last_run is None else asdict(checkpoint.last_run),
        "updated": _iso(checkpoint.updated),
        "possible_duplicates_total": checkpoint.possible_duplicates_total,
        "pending_batch": None
        if checkpoint.pending_batch is None
        else {
            "created": format_datetime(checkpoint.pending_batch.created),
            "entries": [
                [entry.key, entry.received_ms, entry.status, entry.revision, entry.trace_id]
                for entry in checkpoint.pending_batch.entries
            ],
        },
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _optional_time(document: dict[str, Any], name: str) -> datetime | None:
    value = document.get(name)
    return None if value is None else parse_datetime(str(value))


def decode_checkpoint(data: bytes, *, where: str) -> Checkpoint:
    """Parse a stored checkpoint.

    Raises:
        CheckpointFormatError: not JSON, a newer format, or fields of the wrong shape.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointFormatError(f"checkpoint {where} is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise CheckpointFormatError(f"checkpoint {where} is not a JSON object")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointFormatError(
            f"checkpoint {where} has format_version {version!r}; this connector reads version {FORMAT_VERSION}. "
            "Upgrade the connector, or move the blob aside to start over (rows already stored stay)."
        )
    try:
        ledger = {
            str(key): LedgerEntry(received_ms=int(value[0]), status=str(value[1]), revision=int(value[2]))
            for key, value in dict(document.get("ledger") or {}).items()
        }
        range_doc = document.get("range")
        last_run = document.get("last_run")
        span = document.get("slice_span_seconds")
        pending = document.get("pending_batch")
        return Checkpoint(
            feed=str(document["feed"]),
            high_water_mark=_optional_time(document, "high_water_mark"),
            coverage_start=_optional_time(document, "coverage_start"),
            range_start=None if not range_doc else parse_datetime(range_doc["start"]),
            range_end=None if not range_doc else parse_datetime(range_doc["end"]),
            slice_span=None if span is None else timedelta(seconds=int(span)),
            ledger=ledger,
            last_run=None if not last_run else RunSummary(**last_run),
            updated=_optional_time(document, "updated"),
            possible_duplicates_total=int(document.get("possible_duplicates_total") or 0),
            pending_batch=None
            if not pending
            else PendingBatch(
                created=parse_datetime(pending["created"]),
                entries=tuple(
                    IntentEntry(
                        key=str(k), received_ms=int(r), status=str(s), revision=int(v), trace_id=str(t)
                    )
                    for k, r, s, v, t in pending["entries"]
                ),
            ),
        )
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise CheckpointFormatError(f"checkpoint {where} has a malformed field: {err!r}") from err
