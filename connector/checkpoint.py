"""The checkpoint document: a feed's progress and dedup ledger as versioned JSON. Pure.

One document per feed: ``live.json`` for the timer, ``backfill/<start>_<end>.json``
for each manual backfill. What the fields mean is in :mod:`connector.state`; this
module only writes and reads them.

Format (``format_version`` 1, unchanged since the first release, so deployed feeds
and older versions read each other's documents; fields added since, like
``stalled_runs``, are optional: older versions ignore them, this one reads their
absence as 0)::

    {"format_version": 1, "feed": "live", "high_water_mark": "...Z" | null,
     "coverage_start": "...Z" | null, "range": {"start": ..., "end": ...} | null,
     "slice_span_seconds": 3600,
     "ledger": {"<key digest>": [<received, epoch ms>, "<status>", <revision>], ...},
     "last_run": {<the fields in connector.report.LAST_RUN_FIELDS>} | null, "updated": "...Z",
     "possible_duplicates_total": 0, "stalled_runs": 2 (only when not 0),
     "waiting_for_permission_since": "...Z" (only while Graph answers the service-principal 401),
     "discovered_domains": {"domains": ["contoso.com", ...], "fetched_at": "...Z"} (once Graph listed them),
     "deep_reread": {"cursor": "...Z", "end": "...Z"} (the live feed's deep re-read in progress;
         absent in documents written before the tiers: read as "a new pass is due"),
     "pending_batch": {"created": "...Z", "rows": [[key, received_ms, status, revision, RowId]]} | null,
     "queue_plan": {"slice_seconds": 86400, "stop": "...Z"} (a backfill run on Azure as queued slices),
     "slice_failure": {"failures": 2, "attempt": 2, "reason": "...", "poisoned": false, "at": "...Z"}
         (a queued slice's last failure)}

A queued slice's document is named ``backfill/<start>_<end>/<slice start>_<slice end>``.

The intent (``pending_batch``) holds each row's ``RowId``, never a trace id: with a trace
id beside them, the ledger's digests of (trace id, recipient) could be tried against a
list of addresses. Versions before ``RowId`` wrote ``"entries"`` with the trace id in
the last place; such an intent is still read, resolved by trace id, and then cleared.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.errors import CheckpointFormatError
from connector.ledger import Decision, DedupLedger, LedgerChange, LedgerEntry, PackedEntries
from connector.mapping import format_datetime, parse_datetime
from connector.report import LAST_RUN_FIELDS
from connector.state import (
    Checkpoint,
    FeedProgress,
    IntentEntry,
    LastRun,
    PendingBatch,
    QueuePlan,
    SliceFailure,
)
from connector.tenant_domains import DiscoveredDomains
from connector.windows import DeepPass

FORMAT_VERSION = 1
LIVE_FEED = "live"
BACKFILL_PREFIX = "backfill/"


def backfill_feed_name(start: datetime, end: datetime) -> str:
    """Name of the checkpoint document for a backfill of ``[start, end)``."""
    return f"{BACKFILL_PREFIX}{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"


def slice_feed_name(job: str, start: datetime, end: datetime) -> str:
    """Name of the checkpoint document of one queued slice ``[start, end)`` of the backfill ``job``."""
    return f"{job}/{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"


_STAMP = r"([0-9]{8}T[0-9]{6}Z)_([0-9]{8}T[0-9]{6}Z)"
_BACKFILL_FEED = re.compile(rf"backfill/{_STAMP}(?:/{_STAMP})?", re.ASCII)


def check_feed_name(name: str) -> str:
    """``name`` if it is a feed's name: ``live``, or what :func:`backfill_feed_name` makes.

    Feed names become blob names and paths (``<feed>.json``, ``locks/<feed>.lock``,
    ``deadletter/<feed>/``), so a name typed on the command line is held to exactly
    these forms: ``../x`` or ``live/../x`` must not reach another blob or file.

    Raises:
        ValueError: one line saying what a feed name looks like.
    """
    match = _BACKFILL_FEED.fullmatch(name)
    if name == LIVE_FEED:
        return name
    if match is not None:
        try:
            start, end, *part = (
                datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                for text in match.groups()
                if text is not None
            )
        except ValueError:
            pass
        else:
            job = backfill_feed_name(start, end)
            if job == name or (
                part and start <= part[0] < part[1] <= end and slice_feed_name(job, *part) == name
            ):
                return name
    raise ValueError(
        f"{name!r} is not a feed: give live, backfill/<YYYYmmddTHHMMSSZ>_<YYYYmmddTHHMMSSZ> or a queued slice "
        "backfill/<start>_<end>/<slice start>_<slice end> (the names `status` lists)"
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else format_datetime(value)


def _progress_document(progress: FeedProgress) -> dict[str, Any]:
    """Every field of ``progress`` as the checkpoint stores it (the ledger is written apart)."""
    pending = progress.pending_batch
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "feed": progress.feed,
        "high_water_mark": _iso(progress.high_water_mark),
        "coverage_start": _iso(progress.coverage_start),
        "range": (
            None
            if progress.range_start is None or progress.range_end is None
            else {"start": _iso(progress.range_start), "end": _iso(progress.range_end)}
        ),
        "slice_span_seconds": None
        if progress.slice_span is None
        else int(progress.slice_span.total_seconds()),
        "last_run": None if progress.last_run is None else dict(progress.last_run),
        "updated": _iso(progress.updated),
        "possible_duplicates_total": progress.possible_duplicates_total,
        "pending_batch": None if pending is None else _encode_pending(pending),
    }
    # Fields added after the first release are written only when set (older versions ignore them).
    if progress.stalled_runs:
        document["stalled_runs"] = progress.stalled_runs
    if progress.waiting_for_permission_since is not None:
        document["waiting_for_permission_since"] = _iso(progress.waiting_for_permission_since)
    if progress.discovered_domains is not None:
        document["discovered_domains"] = {
            "domains": list(progress.discovered_domains.domains),
            "fetched_at": format_datetime(progress.discovered_domains.fetched_at),
        }
    if progress.deep_reread is not None:
        document["deep_reread"] = {
            "cursor": format_datetime(progress.deep_reread.cursor),
            "end": format_datetime(progress.deep_reread.end),
        }
    if progress.queue_plan is not None:
        document["queue_plan"] = {
            "slice_seconds": int(progress.queue_plan.slice_span.total_seconds()),
            "stop": format_datetime(progress.queue_plan.stop),
        }
    if progress.slice_failure is not None:
        failure = progress.slice_failure
        document["slice_failure"] = {
            "failures": failure.failures,
            "attempt": failure.attempt,
            "reason": failure.reason,
            "poisoned": failure.poisoned,
            "at": format_datetime(failure.at),
        }
    return document


def _json_bytes(document: object) -> bytes:
    # backslashreplace: a stray unpaired surrogate (from an error text, say) is written as the
    # JSON escape "\udXXX" it reads back as, instead of failing the save; other text is plain UTF-8.
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "backslashreplace")


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """Serialise to one UTF-8 JSON document (format 1: the file store and every older version)."""
    document = _progress_document(checkpoint.progress)
    # The ledger sits where format 1 always had it: just before the last run.
    ordered: dict[str, Any] = {}
    for name, value in document.items():
        if name == "last_run":
            ordered["ledger"] = {
                key: [entry.received_ms, entry.status, entry.revision]
                for key, entry in checkpoint.ledger.items()
            }
        ordered[name] = value
    return _json_bytes(ordered)


def _encode_pending(pending: PendingBatch) -> dict[str, Any]:
    """The intent: ``rows`` (looked up by RowId), or, for one a version before RowId left, its ``entries``."""
    if any(entry.legacy_trace_id is not None for entry in pending.entries):
        return {
            "created": format_datetime(pending.created),
            "entries": [
                [entry.key, entry.received_ms, entry.status, entry.revision, entry.legacy_trace_id or ""]
                for entry in pending.entries
            ],
        }
    return {
        "created": format_datetime(pending.created),
        "rows": [entry[:5] for entry in pending.entries],  # key, received_ms, status, revision, row_id
    }


def _decode_pending(pending: dict[str, Any]) -> PendingBatch:
    """Either form of the intent (``entries`` hold a trace id where ``rows`` hold a RowId)."""
    if "rows" in pending:
        entries = tuple(
            IntentEntry(key=str(k), received_ms=int(r), status=str(s), revision=int(v), row_id=str(i))
            for k, r, s, v, i in pending["rows"]
        )
    else:
        entries = tuple(
            IntentEntry(
                key=str(k),
                received_ms=int(r),
                status=str(s),
                revision=int(v),
                row_id="",
                legacy_trace_id=str(t),
            )
            for k, r, s, v, t in pending["entries"]
        )
    return PendingBatch(created=parse_datetime(pending["created"]), entries=entries)


def _optional_time(document: dict[str, Any], name: str) -> datetime | None:
    value = document.get(name)
    return None if value is None else parse_datetime(str(value))


def _discovered_domains(value: object) -> DiscoveredDomains | None:
    """The cached domain list; absent in checkpoints written before discovery (then read again from Graph)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("domains"), list):
        raise TypeError(f"discovered_domains must be an object with a domains list, got {value!r}")
    return DiscoveredDomains(
        domains=tuple(str(domain) for domain in value["domains"]),
        fetched_at=parse_datetime(str(value["fetched_at"])),
    )


def _deep_reread(value: object) -> DeepPass | None:
    """The deep re-read in progress; absent before the tiers (then a new pass is due)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"deep_reread must be an object with cursor and end, got {value!r}")
    return DeepPass(cursor=parse_datetime(str(value["cursor"])), end=parse_datetime(str(value["end"])))


def _queue_plan(value: object) -> QueuePlan | None:
    """A queued backfill's plan; absent for the live feed and local backfills."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"queue_plan must be an object with slice_seconds and stop, got {value!r}")
    return QueuePlan(
        slice_span=timedelta(seconds=int(value["slice_seconds"])), stop=parse_datetime(str(value["stop"]))
    )


def _slice_failure(value: object) -> SliceFailure | None:
    """A queued slice's last failure; absent until one fails."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"slice_failure must be an object, got {value!r}")
    return SliceFailure(
        failures=int(value["failures"]),
        attempt=int(value["attempt"]),
        reason=str(value["reason"]),
        poisoned=bool(value["poisoned"]),
        at=parse_datetime(str(value["at"])),
    )


def _last_run(value: object) -> LastRun | None:
    """The stored summary: known fields kept (newer versions may add some), types checked."""
    if not value:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"last_run must be an object, got {type(value).__name__}")
    summary: dict[str, object] = {}
    for name in LAST_RUN_FIELDS:
        item = value.get(name)
        if item is not None and not isinstance(item, int | str):
            raise TypeError(f"last_run.{name} must be a number or text, got {item!r}")
        summary[name] = item
    return summary


def _decode_progress(document: dict[str, Any]) -> FeedProgress:
    """The progress fields of a format 1 document, a snapshot header or a journal record."""
    range_doc = document.get("range")
    span = document.get("slice_span_seconds")
    pending = document.get("pending_batch")
    return FeedProgress(
        feed=str(document["feed"]),
        high_water_mark=_optional_time(document, "high_water_mark"),
        coverage_start=_optional_time(document, "coverage_start"),
        range_start=None if not range_doc else parse_datetime(range_doc["start"]),
        range_end=None if not range_doc else parse_datetime(range_doc["end"]),
        slice_span=None if span is None else timedelta(seconds=int(span)),
        last_run=_last_run(document.get("last_run")),
        updated=_optional_time(document, "updated"),
        possible_duplicates_total=int(document.get("possible_duplicates_total") or 0),
        stalled_runs=int(document.get("stalled_runs") or 0),
        waiting_for_permission_since=_optional_time(document, "waiting_for_permission_since"),
        discovered_domains=_discovered_domains(document.get("discovered_domains")),
        deep_reread=_deep_reread(document.get("deep_reread")),
        queue_plan=_queue_plan(document.get("queue_plan")),
        slice_failure=_slice_failure(document.get("slice_failure")),
        pending_batch=None if not pending else _decode_pending(pending),
    )


def _json_object(data: bytes | bytearray, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointFormatError(f"checkpoint {where} is not valid JSON: {err}") from err
    if not isinstance(document, dict):
        raise CheckpointFormatError(f"checkpoint {where} is not a JSON object")
    return document


def decode_checkpoint(data: bytes, *, where: str) -> Checkpoint:
    """Parse a stored checkpoint of either format (a journal named by a snapshot is not read here).

    Raises:
        CheckpointFormatError: not JSON, a newer format, or fields of the wrong shape.
    """
    return decode_snapshot(data, where=where)[0]


def decode_snapshot(
    data: bytes | bytearray | Iterable[bytes], *, where: str
) -> tuple[Checkpoint, str | None]:
    """Parse a stored checkpoint: format 1 (one JSON document), or a format 2 snapshot and its journal's name.

    ``data`` may be the blob's bytes or its chunks as they download: a snapshot's ledger
    lines are read as they arrive, so a 33 MB snapshot is never held beside the ledger it
    becomes (a format 1 document is one line, held whole, as it always was).

    Raises:
        CheckpointFormatError: not JSON, a newer format, or fields of the wrong shape.
    """
    lines = _lines(data)
    first = next(lines, b"")
    document = _json_object(first, where)
    del first
    version = document.get("format_version")
    if version not in (FORMAT_VERSION, SNAPSHOT_VERSION):
        raise CheckpointFormatError(
            f"checkpoint {where} has format_version {version!r}; this connector reads versions "
            f"{FORMAT_VERSION} and {SNAPSHOT_VERSION}. "
            "Upgrade the connector, or move the blob aside to start over (rows already stored stay)."
        )
    try:
        ledger: Mapping[str, LedgerEntry]
        if version == FORMAT_VERSION:
            ledger = {
                str(key): LedgerEntry(received_ms=int(value[0]), status=str(value[1]), revision=int(value[2]))
                for key, value in dict(document.get("ledger") or {}).items()
            }
            journal = None
        else:
            ledger = _decode_ledger_lines(lines)
            if len(ledger) != int(document["ledger_entries"]):
                raise ValueError(f"{len(ledger)} ledger lines, the header says {document['ledger_entries']}")
            journal = str(document["journal"]) or None
        progress = _decode_progress(document)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise CheckpointFormatError(f"checkpoint {where} has a malformed field: {err!r}") from err
    return Checkpoint(progress=progress, ledger=ledger), journal


# ---------------------------------------------------------------------------- format 2: snapshot + journal
#
# A format 1 document holds the whole ledger, so every save rewrote it: at 500 k entries
# 33 MB and a second per batch. Format 2 splits the feed's state in two blobs:
#
# * the snapshot ``<feed>.json``: one header line (the progress fields, the journal's
#   name, the number of ledger entries), then one ledger entry per line;
# * the journal ``journal/<feed>/<generation>.jsonl``, an append blob: one line per save,
#   each the progress after that save plus the ledger changes made since the one before.
#
# The state is the snapshot with every journal line applied in order
# (:func:`replay_journal`). A save appends one line, so it writes bytes in proportion to
# the rows it commits; once the journal outgrows the snapshot (:func:`compaction_due`)
# the store writes a new snapshot and starts a new journal, which keeps the amortised
# cost per row within twice the journal's, whatever the ledger's size.
#
# Why this keeps the commit rule (see :mod:`connector.sync`): the intent is a journal line
# (progress holding ``pending_batch``), and the commit is *one* line holding both the
# cleared intent and the accepted rows' ledger entries. An append block is stored whole
# or not at all, so as with one document, a reader sees the intent, or the commit, never
# half of one. When every row of the batch was accepted, the commit names the intent
# (``"commit": "intent"``) instead of listing its rows again: the intent is the state
# just before that line (the previous line's progress, or the snapshot's), so replaying
# the line commits exactly those rows, and the commit stays one block either way. One
# intent may cover several batches sent one after another (``GROUP_MAX_ROWS`` in
# :mod:`connector.sync`): the argument is the same, since the intent lists every row any
# of them carries, and the commit lists (or names) the rows the service accepted.
#
# Lines are appended with an append-position condition: an SDK retry of a block that
# already landed fails instead of appending it twice (the store then finds its own line
# at the tail), and a second writer, whose position is stale, gets a conflict.

SNAPSHOT_VERSION = 2
JOURNAL_PREFIX = "journal/"
JOURNAL_MAX_BLOCKS = 40_000
"""Compact before an append blob's limit of 50,000 blocks."""
JOURNAL_MIN_BYTES = 1 << 20
"""Below this a journal is never compacted for size: small ledgers would be rewritten for nothing
(``CHECKPOINT_JOURNAL_MIN_KIB``)."""
COMMIT_INTENT = "intent"
"""A journal change's ``commit`` when it commits exactly the rows of the intent recorded before its line.

The common commit (every row of the batch accepted) then costs a few bytes instead of
relisting each row's ledger entry, which the intent line just wrote."""
MAX_JOURNAL_LINE = 4 << 20
"""An append block holds at most 4 MiB (older service versions); a longer line is saved as a snapshot."""


def journal_prefix(feed: str) -> str:
    """Where the journals of ``feed`` live (one current, older ones until the store deletes them)."""
    return f"{JOURNAL_PREFIX}{feed}/"


def encode_snapshot(checkpoint: Checkpoint, *, journal: str) -> bytes:
    """The format 2 snapshot: a header line naming ``journal``, then one ledger entry per line."""
    return b"".join(iter_snapshot(checkpoint, journal=journal))


def iter_snapshot(checkpoint: Checkpoint, *, journal: str) -> Iterator[bytes]:
    """:func:`encode_snapshot` in pieces of about 600 KB, so a large ledger is never held twice.

    The store uploads the pieces as they are made: with a 500 k-entry ledger, the 33 MB
    snapshot and the lines it is built from would otherwise sit beside the ledger itself.
    """
    header = _progress_document(checkpoint.progress)
    header["format_version"] = SNAPSHOT_VERSION
    header["journal"] = journal
    header["ledger_entries"] = len(checkpoint.ledger)
    yield _json_bytes(header) + b"\n"
    ledger = checkpoint.ledger
    if isinstance(ledger, PackedEntries):
        values, codes = ledger.packed()
        statuses = [_json_text(status) for status in codes]
    else:
        values, statuses = iter(ledger.items()), []
    quoted: dict[str, str] = {}
    lines: list[str] = []
    for key, value in values:
        if type(value) is int:  # a packed entry: the common case, unpacked here without an object
            ms, status, revision = value >> 24, statuses[(value >> 16) & 0xFF], value & 0xFFFF
        else:
            assert isinstance(value, LedgerEntry)  # noqa: S101 - what PackedEntries holds otherwise
            ms, revision = value.received_ms, value.revision
            status = quoted.get(value.status) or quoted.setdefault(value.status, _json_text(value.status))
        lines.append(f'["{key}",{ms},{status},{revision}]\n')
        if len(lines) >= 8192:
            yield "".join(lines).encode("utf-8", "backslashreplace")
            lines.clear()
    if lines:
        yield "".join(lines).encode("utf-8", "backslashreplace")


def _json_text(text: str) -> str:
    """``text`` as a JSON string literal (statuses are Graph's words, but are written escaped all the same)."""
    return json.dumps(text, ensure_ascii=False)


def _lines(data: bytes | bytearray | Iterable[bytes]) -> Iterator[bytes]:
    """The non-empty lines of ``data`` (bytes, or chunks of them), one at a time.

    Holds at most one chunk and the line it ends in: no list of 500 k lines, and no
    second copy of the whole blob.
    """
    chunks: Iterable[bytes | bytearray] = (data,) if isinstance(data, bytes | bytearray) else data
    tail = b""
    for chunk in chunks:
        piece = tail + chunk if tail else bytes(chunk)
        start = 0
        while True:
            end = piece.find(b"\n", start)
            if end < 0:
                break
            if end > start:
                yield piece[start:end]
            start = end + 1
        tail = piece[start:]
    if tail:
        yield tail


def _decode_ledger_lines(lines: Iterator[bytes]) -> PackedEntries:
    """The ledger entries of a snapshot's lines (those after its header)."""
    ledger = PackedEntries()
    put = ledger._put  # noqa: SLF001 - building the entries a ledger then takes over
    loads = json.loads
    for line in lines:
        key, received_ms, status, revision = loads(line)
        put(str(key), LedgerEntry(received_ms=int(received_ms), status=str(status), revision=int(revision)))
    return ledger


def encode_journal_line(progress: FeedProgress, changes: Sequence[LedgerChange]) -> bytes:
    """One save: the progress after it, and the ledger changes since the save before (in order)."""
    record = {
        "progress": _progress_document(progress),
        "changes": [
            {
                "commit": COMMIT_INTENT
                if change.settles_intent
                else [
                    [decision.key, decision.entry.received_ms, decision.entry.status, decision.entry.revision]
                    for decision in change.committed
                ],
                "prune_before": _iso(change.prune_before),
            }
            for change in changes
            if change.committed or change.prune_before is not None
        ],
    }
    return _json_bytes(record) + b"\n"


def _committed(commit: object, intent: PendingBatch | None) -> tuple[Decision, ...]:
    """The decisions a journal change commits: listed, or the rows of the intent in effect before its line."""
    if commit == COMMIT_INTENT:
        if intent is None:
            raise ValueError("a change commits the batch in flight, but none was recorded before it")
        return tuple(entry.decision() for entry in intent.entries)
    if not isinstance(commit, list):
        raise TypeError(f"commit must be a list of entries or {COMMIT_INTENT!r}, got {commit!r}")
    return tuple(
        Decision(
            key=str(key),
            entry=LedgerEntry(received_ms=int(ms), status=str(status), revision=int(rev)),
            previous_status=None,
        )
        for key, ms, status, rev in commit
    )


def seal_line(next_journal: str) -> bytes:
    """The line a compaction appends to the journal it replaces: any writer still at its old position conflicts."""
    return _json_bytes({"sealed_for": next_journal}) + b"\n"


def replay_journal(
    checkpoint: Checkpoint, data: bytes | bytearray | Iterable[bytes], *, where: str
) -> tuple[Checkpoint, bool]:
    """The state after applying every line of the journal ``data`` (bytes, or chunks) to the snapshot ``checkpoint``.

    Takes over ``checkpoint.ledger`` (the packed entries :func:`decode_snapshot` returns)
    instead of copying it. Also says whether the journal's last line is a seal (a compaction was under way).

    Raises:
        CheckpointFormatError: a line is not a journal record.
    """
    ledger = DedupLedger(checkpoint.ledger)
    progress = checkpoint.progress
    sealed = False
    for number, line in enumerate(_lines(data), start=1):
        record = _json_object(line, f"{where} line {number}")
        sealed = "sealed_for" in record
        if sealed:
            continue
        try:
            # A change may name the intent recorded before its line (the previous line's, or the
            # snapshot's): at most the first change of a line does, so ``progress`` is still that one.
            intent = progress.pending_batch
            for change in record["changes"]:
                prune = change.get("prune_before")
                ledger.apply(
                    LedgerChange(
                        committed=_committed(change["commit"], intent),
                        prune_before=None if prune is None else parse_datetime(str(prune)),
                    )
                )
                intent = None
            progress = _decode_progress(record["progress"])
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise CheckpointFormatError(
                f"checkpoint journal {where} line {number} is malformed: {err!r}"
            ) from err
    return Checkpoint(progress=progress, ledger=ledger.adopted()), sealed


def compaction_due(
    *,
    journal_bytes: int,
    journal_blocks: int,
    snapshot_bytes: int,
    next_line: int,
    minimum_bytes: int = JOURNAL_MIN_BYTES,
) -> bool:
    """Whether the next save writes a new snapshot instead of appending ``next_line`` bytes to the journal.

    Once the journal is as long as the snapshot, rewriting the snapshot costs no more than
    the journal already did, so bytes written per row stay within twice the journal's.
    """
    return (
        journal_blocks + 1 >= JOURNAL_MAX_BLOCKS
        or next_line > MAX_JOURNAL_LINE
        or journal_bytes + next_line > max(snapshot_bytes, minimum_bytes)
    )
