"""Graph ``exchangeMessageTrace`` record → ``EmailEvents_CL`` row. Pure: no I/O.

Parsing is strict about the fields the pipeline depends on (``id``,
``recipientAddress``, ``receivedDateTime``, ``status``): a record without them
cannot be deduplicated or placed in time, so it raises
:class:`~connector.errors.RecordError` naming the field and the record instead of
being stored wrong or dropped silently. Other fields are optional and become
nulls (omitted keys) in the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from connector.errors import RecordError
from connector.schema import TableSchema, load_table_schema

# Graph's exchangeMessageTraceStatus members (v1.0 and beta), keyed by their lower-case
# form so "delivered", "Delivered" and "DELIVERED" all normalise to one PascalCase value
# (PascalCase matches the legacy Reporting Web Service data and the seed KQL).
_CANONICAL_STATUSES = {
    name.lower(): name
    for name in (
        "GettingStatus",
        "Pending",
        "Failed",
        "Delivered",
        "Expanded",
        "Quarantined",
        "FilteredAsSpam",
        "Recalled",
        "UnknownFutureValue",
        "None",
    )
}

NULL_SENDER = "<>"

# The columns ``RowMapper.to_row`` fills; must equal the schema file's columns.
ROW_COLUMNS = frozenset(
    {
        "TimeGenerated",
        "Received",
        "MessageTraceId",
        "MessageId",
        "SenderAddress",
        "RecipientAddress",
        "Subject",
        "Status",
        "Size",
        "FromIP",
        "ToIP",
        "SenderDomain",
        "RecipientDomain",
        "Direction",
        "StatusRevision",
        "PreviousStatus",
        "TruncatedFields",
    }
)

# Log Analytics silently truncates a field value over 64 KB. The connector cuts first,
# a little below the limit and on a UTF-8 character boundary, and says so in a column.
MAX_FIELD_BYTES = 64_000


def cut_utf8(value: str, max_bytes: int = MAX_FIELD_BYTES) -> str | None:
    """``value`` cut to at most ``max_bytes`` UTF-8 bytes on a character boundary; None if it fits."""
    if len(value) * 4 <= max_bytes:  # cannot be over: no encoding needed
        return None
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return None
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def normalise_status(raw: str) -> str:
    """Return the PascalCase form of a Graph status, whatever case Graph used.

    Unknown future members keep their spelling with the first letter upper-cased,
    so a new Graph status is stored rather than refused.
    """
    value = raw.strip()
    return _CANONICAL_STATUSES.get(value.lower(), value[:1].upper() + value[1:])


def address_domain(address: str) -> str:
    """Lower-cased domain of an e-mail address; empty for ``<>`` or an address without ``@``."""
    if "@" not in address:
        return ""
    return address.rsplit("@", 1)[1].strip().strip(">").lower()


def is_local_domain(domain: str, local_domains: tuple[str, ...]) -> bool:
    """True when ``domain`` is one of ``local_domains`` or a subdomain of one (case-insensitive)."""
    domain = domain.lower()
    return any(domain == local or domain.endswith("." + local) for local in local_domains)


def classify_direction(sender_domain: str, recipient_domain: str, local_domains: tuple[str, ...]) -> str:
    """Inbound, Outbound, Internal or External, seen from the organisation's own domains."""
    sender_local = is_local_domain(sender_domain, local_domains) if sender_domain else False
    recipient_local = is_local_domain(recipient_domain, local_domains)
    if sender_local and recipient_local:
        return "Internal"
    if sender_local:
        return "Outbound"
    if recipient_local:
        return "Inbound"
    return "External"


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One message trace row from Graph: one message to one recipient, in one status."""

    trace_id: str
    recipient: str
    received: datetime
    status: str
    sender: str | None
    message_id: str | None
    subject: str | None
    size: int | None
    from_ip: str | None
    to_ip: str | None

    @property
    def recipient_key(self) -> str:
        """Recipient as used in the dedup key: case-insensitive, like mail routing."""
        return self.recipient.lower()


def parse_datetime(raw: str) -> datetime:
    """Parse an ISO 8601 UTC timestamp; values without an offset are UTC by Graph's contract.

    Raises:
        ValueError: the text is not an ISO 8601 timestamp.
    """
    text = raw.strip()
    if "." in text:
        # Python keeps microseconds; Exchange sometimes sends 7 fractional digits.
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """ISO 8601 UTC with six fractional digits and ``Z`` (what every table plan accepts)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hint(raw: Mapping[str, object]) -> str:
    trace_id = raw.get("id")
    received = raw.get("receivedDateTime")
    return f"id={trace_id!r}, receivedDateTime={received!r}"


def _required_text(raw: Mapping[str, object], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(f"field {name!r} is missing or not a non-empty string (got {value!r})", _hint(raw))
    return value.strip()


def _optional_text(raw: Mapping[str, object], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be a string, got {type(value).__name__}", _hint(raw))
    return value


def parse_trace_record(raw: Mapping[str, object]) -> TraceRecord:
    """Validate one Graph record and return it typed.

    Raises:
        RecordError: a key field is missing, a date does not parse, or a field has the wrong type.
    """
    if not isinstance(raw, Mapping):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}", repr(raw)[:120])
    trace_id = _required_text(raw, "id")
    recipient = _required_text(raw, "recipientAddress")
    received_text = _required_text(raw, "receivedDateTime")
    try:
        received = parse_datetime(received_text)
    except ValueError:
        raise RecordError(
            f"receivedDateTime {received_text!r} is not an ISO 8601 timestamp", _hint(raw)
        ) from None
    status = normalise_status(_required_text(raw, "status"))
    size = raw.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise RecordError(f"field 'size' must be an integer, got {size!r}", _hint(raw))
    return TraceRecord(
        trace_id=trace_id,
        recipient=recipient,
        received=received,
        status=status,
        sender=_optional_text(raw, "senderAddress"),
        message_id=_optional_text(raw, "messageId"),
        subject=_optional_text(raw, "subject"),
        size=size,
        from_ip=_optional_text(raw, "fromIP"),
        to_ip=_optional_text(raw, "toIP"),
    )


class RowMapper:
    """Builds ``EmailEvents_CL`` rows; holds the local domains and checks rows against the schema."""

    def __init__(self, local_domains: tuple[str, ...], schema: TableSchema | None = None) -> None:
        self._local_domains = tuple(domain.lower() for domain in local_domains)
        self._schema = schema or load_table_schema()
        self._columns = frozenset(self._schema.column_names)
        if self._columns != ROW_COLUMNS:
            # The schema file and this mapping drifted apart; refuse before sending anything.
            raise ValueError(
                f"table schema and row mapping disagree: schema-only {sorted(self._columns - ROW_COLUMNS)}, "
                f"mapping-only {sorted(ROW_COLUMNS - self._columns)}"
            )

    @property
    def columns(self) -> frozenset[str]:
        """Names of the table's columns."""
        return self._columns

    def to_row(self, record: TraceRecord, *, revision: int, previous_status: str | None) -> dict[str, object]:
        """Return the stream row for ``record``; null values are left out of the row.

        ``revision`` is 0 the first time a (trace id, recipient) is stored and counts
        status changes after that; ``previous_status`` is the status the last stored
        row had.
        """
        sender = record.sender or ""
        sender_domain = address_domain(sender) if sender != NULL_SENDER else ""
        recipient_domain = address_domain(record.recipient)
        received = format_datetime(record.received)
        row: dict[str, object] = {
            "TimeGenerated": received,
            "Received": received,
            "MessageTraceId": record.trace_id,
            "MessageId": record.message_id,
            "SenderAddress": record.sender,
            "RecipientAddress": record.recipient,
            "Subject": record.subject,
            "Status": record.status,
            "Size": record.size,
            "FromIP": record.from_ip,
            "ToIP": record.to_ip,
            "SenderDomain": sender_domain,
            "RecipientDomain": recipient_domain,
            "Direction": classify_direction(sender_domain, recipient_domain, self._local_domains),
            "StatusRevision": revision,
            "PreviousStatus": previous_status or "",
            "TruncatedFields": "",
        }
        truncated = []
        for name, value in row.items():
            if isinstance(value, str):
                cut = cut_utf8(value)
                if cut is not None:
                    row[name] = cut
                    truncated.append(name)
        if truncated:
            row["TruncatedFields"] = ",".join(truncated)
        return {name: value for name, value in row.items() if value is not None}
