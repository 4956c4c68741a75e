"""Enrichment, pure: chosen messages' detail events as ``MessageTraceDetail_CL`` rows.

Why a detail table: ``EmailEvents_CL`` says *what* became of a message (Quarantined,
Failed); the journey (which spam verdict, which transport rule, which SMTP answer)
is only in Graph's ``getDetailsByRecipient``, one request per (trace id, recipient)
from the tenant's 100-requests-per-5-minutes quota. So only *chosen* rows are
enriched (``python -m connector enrich``: pairs an analyst or a playbook hands over,
or the rows of chosen final statuses), under a cap, and each event becomes one row.

This module holds what needs no service: the targets and the ids file a playbook
writes (:func:`parse_ids_file`, refusing a bad line by its number before any network
call), the plan under the cap (:func:`plan`), the rows (:func:`detail_rows`, every text
cut and made valid Unicode like the mail mapping's, ``RowId`` stable across fetches) and
the *pending* document that makes a re-run add nothing twice (:class:`PendingDetail`).

Re-runs and crashes. A pair is skipped when the detail table already holds rows of it
(the workspace is asked before a Graph request is spent). A row becomes queryable
minutes after its upload, so the pairs uploaded recently are remembered in the pending
document, by digest only (never a trace id or address), until the workspace shows them
(``VERIFY_INGESTION_DELAY_MINUTES``). An entry is written *before* its upload and marked
sent after it; an entry left unmarked (a killed or failed upload) is settled by asking
the workspace for its ``RowId`` values once it is old enough, before anything is sent
again. One pair's rows go in one request, so a pair is stored whole or not at all.

Refused rows. When the service refuses a pair's request for its content (not the
caller, the moment or the deployment: :mod:`connector.refusal`), the pair is not split:
splitting would store part of a journey, and a crash between the parts would leave
the rest unsent with no way back, since this document keeps digests, not pairs. The
whole pair is dead-lettered with the service's reason and remembered as *refused* (by
digest) for :data:`REFUSED_MEMORY`, so later runs neither fetch it again nor stall on
it. As for mail rows, content is blamed only with evidence that the deployment takes
rows (a pair of the same run was stored); see :mod:`connector.enrich_command`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from connector.detail import MAX_RECIPIENT_CHARS, TraceEvent
from connector.ledger import ledger_key
from connector.mapping import (
    cut_utf8,
    format_datetime,
    normalise_status,
    parse_datetime,
    replace_lone_surrogates,
)
from connector.subjects import KEEP_SUBJECTS, SubjectMode, SubjectPolicy

REQUESTED = "requested"
"""``Reason`` of a pair named on the command line or in an ids file."""
STATUS_REASON_PREFIX = "status:"

MAX_DESCRIPTION_BYTES = 16_000
MAX_PROPERTIES = 64
MAX_PROPERTY_NAME_BYTES = 128
MAX_PROPERTY_VALUE_BYTES = 1_000
"""Caps that keep one event's row far below the 64 KB field limit and one pair's rows in one request."""

MAX_IDS_FILE_LINES = 100_000
FINAL_STATUSES = ("Delivered", "Failed", "Quarantined", "FilteredAsSpam", "Expanded", "Recalled", "Pending")
"""Statuses ``--status`` accepts (a message's newest status in EmailEvents_CL)."""

_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_SUBJECT_NAME = re.compile("subject", re.IGNORECASE)
_HEADER_TRACE = "messagetraceid"
_HEADER_RECIPIENT = "recipientaddress"


@dataclass(frozen=True, slots=True)
class Target:
    """One (trace id, recipient) to enrich, and why."""

    trace_id: str
    """Lower case, as Graph and ``EmailEvents_CL`` write it."""
    recipient: str
    reason: str = REQUESTED

    @property
    def key(self) -> str:
        """The pair's digest (:func:`connector.ledger.ledger_key`): what the pending document keeps."""
        return ledger_key(self.trace_id, self.recipient)


@dataclass(frozen=True, slots=True)
class EnrichRequest:
    """What to enrich, checked before any setting is read or network call made."""

    pairs: tuple[tuple[str, str | None], ...] = ()
    """(trace id, recipient); a None recipient means every recipient EmailEvents_CL holds for it."""
    statuses: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    max_requests: int | None = None
    """None: ``DETAIL_MAX_REQUESTS``."""


def check_trace_id(text: str, where: str = "--trace-id") -> str:
    """A message trace id (a GUID), lower-cased; a ValueError names ``where``."""
    value = text.strip()
    if not _GUID.fullmatch(value):
        raise ValueError(
            f"{where}: must be a message trace id (a GUID, the MessageTraceId column), got {value[:80]!r}"
        )
    return value.lower()


def check_recipient(text: str, where: str = "--recipient") -> str:
    """One recipient address (kept as written: Graph compares without case); a ValueError names ``where``."""
    value = text.strip()
    if "@" not in value or len(value) > MAX_RECIPIENT_CHARS or _CONTROL.search(value):
        raise ValueError(f"{where}: must be one recipient address (the RecipientAddress column)")
    return value


def parse_statuses(text: str, where: str = "--status") -> tuple[str, ...]:
    """``Quarantined,Failed`` (any case) as canonical statuses; empty text is none. ValueError names ``where``."""
    statuses: list[str] = []
    for part in text.split(","):
        if not part.strip():
            continue
        status = normalise_status(part)
        if status not in FINAL_STATUSES:
            raise ValueError(f"{where}: {part.strip()[:40]!r} is not one of {', '.join(FINAL_STATUSES)}")
        if status not in statuses:
            statuses.append(status)
    return tuple(statuses)


def parse_ids_file(text: str, where: str = "--ids-file") -> list[tuple[str, str | None]]:
    """The (trace id, recipient or None) pairs of an ids file, in order.

    What a playbook hands over: one ``trace id[,recipient]`` per line, or a CSV whose
    header names ``MessageTraceId`` (and optionally ``RecipientAddress``; other columns
    are ignored), e.g. a query result exported as is. Blank lines and lines starting
    with ``#`` are skipped. A line without a recipient means every recipient
    ``EmailEvents_CL`` holds for that trace id.

    Raises:
        ValueError: the first bad line, by its number (nothing is read from the network
            before the whole file is good).
    """
    rows = list(csv.reader(io.StringIO(replace_lone_surrogates(text.lstrip("\ufeff")))))
    if len(rows) > MAX_IDS_FILE_LINES:
        raise ValueError(f"{where}: more than {MAX_IDS_FILE_LINES:,} lines; split the file")
    pairs: list[tuple[str, str | None]] = []
    trace_column, recipient_column = 0, 1
    header_seen = False
    for number, cells in enumerate(rows, start=1):
        cells = [cell.strip() for cell in cells]
        if not any(cells) or cells[0].startswith("#"):
            continue
        lowered = [cell.lower() for cell in cells]
        if not header_seen and not pairs and _HEADER_TRACE in lowered:
            header_seen = True
            trace_column = lowered.index(_HEADER_TRACE)
            recipient_column = lowered.index(_HEADER_RECIPIENT) if _HEADER_RECIPIENT in lowered else -1
            continue
        line = f"{where} line {number}"
        if not header_seen and len(cells) > 2:
            raise ValueError(
                f"{line}: expected 'trace id' or 'trace id,recipient', got {len(cells)} fields "
                "(or give a header line naming MessageTraceId and RecipientAddress)"
            )
        if trace_column >= len(cells):
            raise ValueError(f"{line}: has no MessageTraceId field")
        trace_id = check_trace_id(cells[trace_column], line)
        recipient_text = cells[recipient_column] if 0 <= recipient_column < len(cells) else ""
        pairs.append((trace_id, check_recipient(recipient_text, line) if recipient_text else None))
    return pairs


def detail_row_id(trace_id: str, recipient: str, index: int, event: str, at: datetime | None) -> str:
    """The identity of one detail row: digest of (trace id, lower-cased recipient, index, event, time).

    The same event fetched again gets the same ``RowId``: Graph answers a journey in
    the same order each time, and an event's time does not change. A journey that grew
    (Pending, later Delivered) keeps its first events' ids and adds new ones.
    """
    when = "" if at is None else format_datetime(at)
    material = f"{trace_id}\x1f{recipient.lower()}\x1f{index}\x1f{event}\x1f{when}"
    return hashlib.blake2b(material.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _text(value: str, max_bytes: int) -> str:
    """Valid Unicode (a lone surrogate becomes U+FFFD) cut to ``max_bytes`` UTF-8 bytes."""
    clean = replace_lone_surrogates(value)
    cut = cut_utf8(clean, max_bytes)
    return clean if cut is None else cut


def event_data(
    properties: Sequence[tuple[str, str]], subjects: SubjectPolicy = KEEP_SUBJECTS
) -> dict[str, str]:
    """The ``Data`` column: the event's properties, capped, a subject-like one under ``SUBJECT_MODE``.

    A name seen twice keeps its first value (Graph's XML could repeat one).
    """
    data: dict[str, str] = {}
    for name, value in properties:
        if len(data) >= MAX_PROPERTIES:
            break
        key = _text(name, MAX_PROPERTY_NAME_BYTES)
        if not key or key in data:
            continue
        text = value
        if subjects.mode is not SubjectMode.KEEP and _SUBJECT_NAME.search(key):
            text = subjects.apply(value) or ""
        data[key] = _text(text, MAX_PROPERTY_VALUE_BYTES)
    return data


def detail_rows(
    target: Target,
    events: Sequence[TraceEvent],
    *,
    fetched: datetime,
    source_tenant_id: str = "",
    subjects: SubjectPolicy = KEEP_SUBJECTS,
) -> list[dict[str, object]]:
    """One ``MessageTraceDetail_CL`` row per event of ``target``'s journey, ``events`` in their order."""
    fetched_text = format_datetime(fetched)
    recipient = replace_lone_surrogates(target.recipient)
    rows: list[dict[str, object]] = []
    for index, event in enumerate(events):
        name = _text(event.event, MAX_PROPERTY_NAME_BYTES)
        at = None if event.at is None else format_datetime(event.at)
        rows.append(
            {
                "TimeGenerated": at or fetched_text,
                "MessageTraceId": target.trace_id,
                "RecipientAddress": recipient,
                "EventTime": at,
                "EventIndex": index,
                "Event": name,
                "Action": _text(event.action, MAX_PROPERTY_NAME_BYTES),
                "Description": _text(event.description, MAX_DESCRIPTION_BYTES),
                "Data": event_data(event.properties, subjects),
                "RowId": detail_row_id(target.trace_id, target.recipient, index, event.event, event.at),
                "Reason": target.reason,
                "FetchedTime": fetched_text,
                "SourceTenantId": source_tenant_id,
            }
        )
    return rows


def unique_targets(targets: Iterable[Target]) -> list[Target]:
    """Each (trace id, lower-cased recipient) once, in order; the first reason wins."""
    seen: set[str] = set()
    unique: list[Target] = []
    for target in targets:
        if target.key not in seen:
            seen.add(target.key)
            unique.append(target)
    return unique


@dataclass(frozen=True, slots=True)
class Plan:
    """What an enrich run does: the pairs to fetch (one Graph request each, at least), the rest counted."""

    todo: tuple[Target, ...]
    already: int
    """Pairs the detail table holds already (or uploaded moments ago): skipped, no request spent."""
    over_cap: int
    """Pairs left for a later run by the request cap."""
    refused_earlier: int = 0
    """Pairs whose rows the service refused in an earlier run (dead-lettered): not fetched again."""


def plan(
    targets: Sequence[Target],
    enriched: set[str],
    max_requests: int,
    refused: Set[str] = frozenset(),
) -> Plan:
    """The pairs to fetch: not yet enriched (``enriched`` holds pair digests) nor ``refused``, at most ``max_requests``."""
    unique = unique_targets(targets)
    fresh = [target for target in unique if target.key not in enriched and target.key not in refused]
    refused_earlier = sum(1 for target in unique if target.key in refused and target.key not in enriched)
    return Plan(
        todo=tuple(fresh[:max_requests]),
        already=len(unique) - len(fresh) - refused_earlier,
        over_cap=max(0, len(fresh) - max_requests),
        refused_earlier=refused_earlier,
    )


# ---- the pending document ------------------------------------------------------------

PENDING_VERSION = 1
REFUSED_MEMORY = timedelta(days=90)
"""How long a refused pair is skipped: Graph keeps message trace 90 days, so a later fetch finds nothing."""


@dataclass(frozen=True, slots=True)
class PendingPair:
    """One pair's upload, remembered until the workspace shows it: digests and times only."""

    key: str
    row_ids: tuple[str, ...]
    created: datetime
    sent: bool
    """True once the service accepted the upload; False while (or if) its outcome is unknown."""
    oldest: datetime
    """The earliest ``TimeGenerated`` of its rows (where a workspace query must start looking)."""


@dataclass(frozen=True, slots=True)
class RefusedPair:
    """A pair whose rows the service refused (dead-lettered with its reason): skipped by later runs."""

    key: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PendingDetail:
    """The enrich document next to the checkpoints (``enrich/pending.json``).

    ``refused`` was added after the first release: a document without it has none, and
    an older version keeps it untouched (an unknown field goes to ``extra``).
    """

    pairs: tuple[PendingPair, ...] = ()
    refused: tuple[RefusedPair, ...] = ()
    extra: Mapping[str, object] = field(default_factory=dict)
    """Fields this version does not know (kept on save, so a newer version's state survives)."""

    def encode(self) -> bytes:
        """The document as JSON bytes."""
        document: dict[str, object] = dict(self.extra)
        document["version"] = PENDING_VERSION
        document["pairs"] = [
            {
                "key": pair.key,
                "rowIds": list(pair.row_ids),
                "created": format_datetime(pair.created),
                "sent": pair.sent,
                "oldest": format_datetime(pair.oldest),
            }
            for pair in self.pairs
        ]
        if self.refused:
            document["refused"] = [{"key": pair.key, "at": format_datetime(pair.at)} for pair in self.refused]
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> PendingDetail:
        """Read a stored document; a ValueError says what is malformed."""
        try:
            document = json.loads(data.decode("utf-8"))
            if not isinstance(document, dict) or not isinstance(document.get("pairs"), list):
                raise ValueError("not an object with a 'pairs' list")
            pairs = tuple(
                PendingPair(
                    key=str(item["key"]),
                    row_ids=tuple(str(row_id) for row_id in item["rowIds"]),
                    created=parse_datetime(str(item["created"])),
                    sent=bool(item["sent"]),
                    oldest=parse_datetime(str(item["oldest"])),
                )
                for item in document["pairs"]
            )
            refused = tuple(
                RefusedPair(key=str(item["key"]), at=parse_datetime(str(item["at"])))
                for item in document.get("refused", [])
            )
        except (UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"the enrich document is malformed ({err})") from None
        extra = {
            name: value for name, value in document.items() if name not in ("version", "pairs", "refused")
        }
        return cls(pairs=pairs, refused=refused, extra=extra)

    def with_pair(self, pair: PendingPair) -> PendingDetail:
        """The document with ``pair`` recorded (replacing an entry of the same key)."""
        return replace(self, pairs=(*[p for p in self.pairs if p.key != pair.key], pair))

    def marked_sent(self, key: str) -> PendingDetail:
        """The document with the pair ``key``'s upload accepted."""
        return replace(self, pairs=tuple(replace(p, sent=True) if p.key == key else p for p in self.pairs))

    def without(self, keys: Iterable[str]) -> PendingDetail:
        """The document without the pairs ``keys``."""
        gone = set(keys)
        return replace(self, pairs=tuple(p for p in self.pairs if p.key not in gone))

    def with_refused(self, key: str, at: datetime) -> PendingDetail:
        """The document with the pair ``key`` refused (and no longer pending: nothing of it was stored)."""
        return replace(
            self,
            pairs=tuple(p for p in self.pairs if p.key != key),
            refused=(*[r for r in self.refused if r.key != key], RefusedPair(key, at)),
        )

    def refused_keys(self) -> frozenset[str]:
        """Digests of the pairs later runs skip."""
        return frozenset(pair.key for pair in self.refused)

    def forgetting_refusals_before(self, moment: datetime) -> PendingDetail:
        """The document without refusals older than ``moment`` (so it stays bounded)."""
        return replace(self, refused=tuple(r for r in self.refused if r.at >= moment))


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the pending document says before new work: what to forget, verify, wait for, or skip."""

    visible: tuple[str, ...]
    """Accepted uploads old enough for the workspace to show them: forgotten (the table answers for them)."""
    to_verify: tuple[PendingPair, ...]
    """Uploads whose outcome is unknown, old enough to ask the workspace which rows arrived."""
    wait_until: datetime | None
    """An unknown upload too young to verify: nothing may be sent before this time."""
    recent: frozenset[str]
    """Pairs accepted moments ago (not queryable yet): skipped as already enriched."""


def settle(pending: PendingDetail, now: datetime, verify_delay: timedelta) -> Settlement:
    """Sort the pending document's pairs by what can be known about them at ``now``."""
    visible: list[str] = []
    to_verify: list[PendingPair] = []
    recent: set[str] = set()
    young: list[datetime] = []
    for pair in pending.pairs:
        old_enough = now - pair.created >= verify_delay
        if pair.sent:
            (visible.append(pair.key) if old_enough else recent.add(pair.key))
        elif old_enough:
            to_verify.append(pair)
        else:
            young.append(pair.created + verify_delay)
    return Settlement(
        visible=tuple(visible),
        to_verify=tuple(to_verify),
        wait_until=max(young) if young else None,
        recent=frozenset(recent),
    )
