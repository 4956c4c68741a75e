"""Message trace detail: the events of one message's journey to one recipient. Pure.

Graph's ``getDetailsByRecipient`` answers, for one (trace id, recipient), the events
Exchange Online recorded: received, spam-filter verdicts, transport rules, delivered,
quarantined, failed. Seed 000 names ``Get-MessageTraceDetail`` among the tools of a
phishing investigation; ``python -m connector detail`` shows it from the command line,
paid from the tenant's Graph quota budget like any backfill (the live feed's reserve is
left alone).

Each event's ``data`` is a small XML document of ``<MEP Name="..." String="..."/>``
elements (message event properties). They are read with a pattern, not an XML parser:
the text comes from a service, only flat name/value pairs are wanted, and no entity or
DTD of it is ever expanded. Every text shown passes :func:`printable`, so a hostile
description cannot move a terminal's cursor or forge a line.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from connector.mapping import format_datetime, parse_datetime

MAX_RECIPIENT_CHARS = 320
"""An address longer than this is not one (RFC 5321: 64 + 1 + 255)."""

_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_MEP = re.compile(r"<MEP\b([^<>]*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_VALUE_ATTRIBUTES = ("String", "Integer", "Long", "Boolean", "Double", "DateTime", "Blob")
_NEVER = datetime.min.replace(tzinfo=UTC)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One event of a message's journey, as Graph's ``exchangeMessageTraceDetail`` gives it."""

    at: datetime | None
    """When (UTC); None when Graph's ``dateTime`` is missing or not a time (the event is kept)."""
    event: str
    action: str
    description: str
    properties: tuple[tuple[str, str], ...]
    """The ``data`` XML's ``MEP`` name/value pairs, in their order."""

    def fields(self) -> dict[str, object]:
        """The event as JSON-ready fields (``detail --json``)."""
        return {
            "time": None if self.at is None else format_datetime(self.at),
            "event": self.event,
            "action": self.action,
            "description": self.description,
            "data": dict(self.properties),
        }


def check_detail_request(trace_id: str, recipient: str) -> tuple[str, str]:
    """The (trace id, recipient) of a detail request, checked; a ValueError names what is wrong.

    The trace id is a GUID (what ``MessageTraceId`` holds); the recipient an address
    of at most 320 characters without control characters.
    """
    trace_id = trace_id.strip()
    recipient = recipient.strip()
    if not _GUID.fullmatch(trace_id):
        raise ValueError(
            f"--trace-id: must be a message trace id (a GUID, the MessageTraceId column), got {trace_id!r}"
        )
    if "@" not in recipient or len(recipient) > MAX_RECIPIENT_CHARS or _CONTROL.search(recipient):
        raise ValueError("--recipient: must be one recipient address (the RecipientAddress column)")
    return trace_id.lower(), recipient


def event_properties(data: str) -> tuple[tuple[str, str], ...]:
    """The ``MEP`` name/value pairs of an event's ``data`` XML (empty when it has none)."""
    pairs: list[tuple[str, str]] = []
    for element in _MEP.finditer(data):
        attributes = {name: html.unescape(value) for name, value in _ATTRIBUTE.findall(element.group(1))}
        name = attributes.get("Name")
        if not name:
            continue
        value = next((attributes[key] for key in _VALUE_ATTRIBUTES if key in attributes), "")
        pairs.append((name, value))
    return tuple(pairs)


def parse_events(records: Iterable[Mapping[str, object]]) -> list[TraceEvent]:
    """Graph's detail records as events, oldest first (events without a time last, in Graph's order)."""
    events: list[TraceEvent] = []
    for record in records:
        raw_time = record.get("dateTime")
        try:
            at = parse_datetime(raw_time) if isinstance(raw_time, str) else None
        except ValueError:
            at = None
        data = record.get("data")
        events.append(
            TraceEvent(
                at=at,
                event=_text(record.get("event")),
                action=_text(record.get("action")),
                description=_text(record.get("description")),
                properties=event_properties(data) if isinstance(data, str) else (),
            )
        )
    timed = [e for e in events if e.at is not None]
    timed.sort(key=lambda e: e.at or _NEVER)
    return timed + [e for e in events if e.at is None]


def printable(text: str) -> str:
    r"""``text`` with control characters, line separators and lone surrogates shown as escapes (``\u001b``)."""
    return _CONTROL.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def render_events(trace_id: str, recipient: str, events: list[TraceEvent]) -> list[str]:
    """The detail as lines for a terminal: one line per event, its properties indented below it."""
    if not events:
        return [
            f"message trace {trace_id}, recipient {printable(recipient)}: no events (Graph knows no such "
            "message for that recipient in the last 90 days, or has not published it yet)"
        ]
    lines = [f"message trace {trace_id}, recipient {printable(recipient)}: {len(events)} events"]
    width = max(len(printable(event.event)) for event in events)
    for event in events:
        when = "(no time)           " if event.at is None else format_datetime(event.at)[:19] + "Z"
        action = f" [{printable(event.action)}]" if event.action else ""
        lines.append(f"  {when}  {printable(event.event):<{width}}{action}  {printable(event.description)}")
        lines.extend(f"      {printable(name)}: {printable(value)}" for name, value in event.properties)
    return lines


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
