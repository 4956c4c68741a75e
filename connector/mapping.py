"""Graph ``exchangeMessageTrace`` record → ``EmailEvents_CL`` row. Pure: no I/O.

Parsing is strict about the fields the pipeline depends on (``id``,
``recipientAddress``, ``receivedDateTime``, ``status``): a record without them
cannot be deduplicated or placed in time, so it raises
:class:`~connector.errors.RecordError` naming the field and the record instead of
being stored wrong or dropped silently. Other fields are optional and become
nulls (omitted keys) in the row.

Hostile text: JSON may carry an escaped lone UTF-16 surrogate (``"\ud83d"``), which
Python decodes to a string that cannot be encoded as UTF-8 (not for the ledger key,
the checkpoint, the request body or the 64 KB cut). In the fields that identify a row
(trace id, recipient) it makes the record unstorable, so it is refused (and
dead-lettered); everywhere else it becomes U+FFFD, the standard replacement
character, and the record is stored. ``size`` must be a Graph Int32 and not negative,
or the Logs Ingestion API would refuse the whole batch for one row.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from connector.domains import normalise_domain
from connector.errors import RecordError
from connector.ledger import row_id, row_id_after
from connector.schema import TableSchema, load_table_schema

if TYPE_CHECKING:  # subjects imports this module's surrogate repair
    from connector.subjects import SubjectPolicy

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
        "RowId",
        "SourceTenantId",
    }
)

# Log Analytics silently truncates a field value over 64 KB. The connector cuts first,
# a little below the limit and on a UTF-8 character boundary, and says so in a column.
MAX_FIELD_BYTES = 64_000

# Graph's exchangeMessageTrace.size is an Int32 byte count: anything else is not a size.
MAX_SIZE = 2**31 - 1
# Trace ids are GUIDs and addresses at most 320 characters; a key longer than this is not
# Graph's and would bloat the checkpoint's intent and the verification query.
MAX_KEY_CHARS = 1024

# Characters the row's columns other than the record's texts can hold at most: two times
# (27 each), Direction, RowId (32 hex digits) and TruncatedFields (empty until a cut), with room.
_FIXED_CHARS = 256
# The row's columns that may be null (left out of the row, in :meth:`RowMapper.to_row`).
_NULLABLE_COLUMNS = ("MessageId", "SenderAddress", "Subject", "Size", "FromIP", "ToIP")

# Bound of the mapper's per-domain caches (cleared when reached: memory stays flat on hostile input).
_CACHE_LIMIT = 10_000

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def replace_lone_surrogates(value: str) -> str:
    """``value`` with every unpaired UTF-16 surrogate replaced by U+FFFD (paired ones are already joined)."""
    if value.isascii():  # a flag on the string, no scan: most fields take this way
        return value
    return _LONE_SURROGATE.sub("\ufffd", value)


def has_lone_surrogate(value: str) -> bool:
    """True when ``value`` cannot be encoded as UTF-8 because of an unpaired surrogate."""
    return not value.isascii() and _LONE_SURROGATE.search(value) is not None


def cut_utf8(value: str, max_bytes: int = MAX_FIELD_BYTES) -> str | None:
    """``value`` cut to at most ``max_bytes`` UTF-8 bytes on a character boundary; None if it fits."""
    if len(value) * 4 <= max_bytes:  # cannot be over: no encoding needed
        return None
    encoded = value.encode("utf-8")
    if len(encoded) <= max_bytes:
        return None
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


# Status texts seen, normalised (a run sees a handful): the plain path normalises each once.
_STATUS_SEEN: dict[str, str] = {}


def normalise_status(raw: str) -> str:
    """Return the PascalCase form of a Graph status, whatever case Graph used.

    Unknown future members keep their spelling with the first letter upper-cased,
    so a new Graph status is stored rather than refused.
    """
    value = raw.strip()
    return _CANONICAL_STATUSES.get(value.lower(), value[:1].upper() + value[1:])


def address_domain(address: str) -> str:
    """Domain of an e-mail address in its canonical form; empty for ``<>`` or an address without ``@``.

    The canonical form (:func:`connector.domains.normalise_domain`) is lower-case ASCII
    with Unicode labels as ``xn--`` and no trailing dot, so the SenderDomain and
    RecipientDomain columns hold one spelling per domain; a domain IDNA 2008 refuses
    is kept lower-cased as written.
    """
    if "@" not in address:
        return ""
    return normalise_domain(address.rsplit("@", 1)[1].strip().strip(">"))


def is_local_domain(domain: str, local_domains: tuple[str, ...]) -> bool:
    """True when ``domain`` is one of ``local_domains`` or a subdomain of one.

    Both sides are compared in their canonical form, so case, a trailing dot, or a
    Unicode versus ``xn--`` spelling of one domain cannot change the answer.
    """
    domain = normalise_domain(domain)
    return any(
        domain == local or domain.endswith("." + local)
        for local in map(normalise_domain, local_domains)
        if local
    )


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


class TraceRecord(NamedTuple):
    """One message trace row from Graph: one message to one recipient, in one status.

    A named tuple rather than a frozen dataclass: as immutable, and built for every record
    read at a fraction of the cost (a frozen dataclass sets each field through
    ``object.__setattr__``).
    """

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
    received_text: str
    """``received`` as the row writes it (:func:`format_datetime`): read off Graph's own text when it can be."""

    @property
    def recipient_key(self) -> str:
        """Recipient as used in the dedup key: case-insensitive, like mail routing."""
        return self.recipient.lower()


# RFC 3339 / ISO 8601 extended date-time. Digits are spelled [0-9] because ``\d`` also
# matches other scripts' digits (fullwidth, Arabic-Indic...), which ``int`` would accept.
_TIMESTAMP = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"[Tt ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:[.,](?P<fraction>[0-9]{1,9}))?)?"
    r"(?P<zone>[Zz]|(?P<sign>[+-])(?P<zone_hour>[0-9]{2})(?::?(?P<zone_minute>[0-9]{2}))?)?"
)
# The shape Graph sends (UTC, ``Z``, 0-9 fraction digits): read by slicing, without the general parser.
_GRAPH_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_LAST_MICROSECOND = 999_999


def parse_datetime(raw: str) -> datetime:
    """Parse an RFC 3339 / ISO 8601 extended timestamp to an aware UTC ``datetime``.

    One parser reads Graph's ``receivedDateTime`` and the connector's own checkpoint
    times, so it must take every shape Graph may send and nothing that only looks like
    a time: ``YYYY-MM-DD``, then ``T``, ``t`` or a space, then ``hh:mm:ss`` (or ``hh:mm``,
    as ISO 8601 allows); an optional fraction after ``.`` or ``,`` of 1 to 9 digits
    (Exchange sends 7), *truncated* to microseconds so it never rounds into the next
    second; then ``Z``/``z``, ``±hh:mm``, ``±hhmm``, ``±hh``, or nothing, which is UTC by
    Graph's contract. Surrounding whitespace is ignored.

    A leap second (``:60``) is a real instant that ``datetime`` cannot hold; it is kept
    as the last microsecond of its minute (``:59.999999``) rather than dead-lettering
    the record, which keeps it in order with its neighbours.

    Raises:
        ValueError: the text is not such a timestamp (a date without a time, garbage, or
            a field out of range); the message says which.
    """
    if _GRAPH_UTC.fullmatch(raw) is not None:
        hour, minute, second = int(raw[11:13]), int(raw[14:16]), int(raw[17:19])
        if hour <= 23 and minute <= 59 and second <= 59:  # else (a leap second, garbage) the general parser
            try:
                return datetime(
                    int(raw[0:4]),
                    int(raw[5:7]),
                    int(raw[8:10]),
                    hour,
                    minute,
                    second,
                    int(raw[20:-1][:6].ljust(6, "0")) if len(raw) > 20 else 0,
                    tzinfo=UTC,
                )
            except ValueError:
                pass  # a date out of range: the general parser says which
    text = raw.strip()
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(_timestamp_problem(raw, text))
    field = match.group
    hour, minute = int(field("hour")), int(field("minute"))
    second = int(field("second") or 0)
    fraction = field("fraction") or ""
    microsecond = int(fraction[:6].ljust(6, "0"))
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"{_shown_time(raw)} has a time of day out of range (hh 00-23, mm 00-59, ss 00-60)")
    if second == 60:
        second, microsecond = 59, _LAST_MICROSECOND
    try:
        # The wall-clock fields, labelled UTC for now; the offset is subtracted below.
        wall = datetime(
            int(field("year")),
            int(field("month")),
            int(field("day")),
            hour,
            minute,
            second,
            microsecond,
            tzinfo=UTC,
        )
    except ValueError as err:
        raise ValueError(f"{_shown_time(raw)} has a date out of range ({err})") from None
    offset = _utc_offset(raw, match)
    try:
        return wall - offset
    except OverflowError:
        raise ValueError(f"{_shown_time(raw)} is outside the years 1-9999 once converted to UTC") from None


def _utc_offset(raw: str, match: re.Match[str]) -> timedelta:
    """The zone's offset from UTC (zero for ``Z`` or no zone)."""
    sign = match.group("sign")
    if sign is None:
        return timedelta(0)
    hours, minutes = int(match.group("zone_hour")), int(match.group("zone_minute") or 0)
    if hours > 23 or minutes > 59:
        raise ValueError(f"{_shown_time(raw)} has a UTC offset out of range (hh 00-23, mm 00-59)")
    offset = timedelta(hours=hours, minutes=minutes)
    return -offset if sign == "-" else offset


def _timestamp_problem(raw: str, text: str) -> str:
    """Why ``text`` is not a timestamp, for the dead letter and the CLI."""
    if _DATE_ONLY.fullmatch(text):
        return f"{_shown_time(raw)} is a date without a time of day; a message trace needs the instant"
    return (
        f"{_shown_time(raw)} is not an ISO 8601 timestamp "
        "(expected YYYY-MM-DDThh:mm:ss[.fraction][Z|+hh:mm|-hh:mm])"
    )


def _shown_time(raw: str) -> str:
    """``raw`` quoted and bounded: a garbage field must not become a huge log line."""
    return repr(raw) if len(raw) <= 64 else repr(raw[:61]) + "..."


def format_datetime(value: datetime) -> str:
    """ISO 8601 UTC with six fractional digits and ``Z`` (what every table plan accepts)."""
    if value.tzinfo is UTC and value.year >= 1000:  # isoformat: same text, a third of strftime's cost
        return value.isoformat(timespec="microseconds")[:-6] + "Z"  # without its "+00:00"
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _hint(raw: Mapping[str, object]) -> str:
    return f"id={_shown(raw.get('id'))}, receivedDateTime={_shown(raw.get('receivedDateTime'))}"


def _required_text(raw: Mapping[str, object], name: str) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        raise RecordError(
            f"field {name!r} is missing or not a non-empty string (got {_shown(value)})", _hint(raw)
        )
    return replace_lone_surrogates(value.strip())


def _key_text(raw: Mapping[str, object], name: str) -> str:
    """A field of the row's identity: refused, not repaired, when it cannot be stored as sent."""
    value = raw.get(name)
    if isinstance(value, str) and has_lone_surrogate(value):
        raise RecordError(
            f"field {name!r} holds an unpaired UTF-16 surrogate, so the row can be neither stored nor "
            "deduplicated as Graph sent it",
            _hint(raw),
        )
    text = _required_text(raw, name)
    if len(text) > MAX_KEY_CHARS:
        raise RecordError(
            f"field {name!r} is {len(text)} characters long, over the {MAX_KEY_CHARS} a message trace key can be",
            _hint(raw),
        )
    return text


def _optional_text(raw: Mapping[str, object], name: str) -> str | None:
    value = raw.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be a string, got {type(value).__name__}", _hint(raw))
    return replace_lone_surrogates(value)


def _shown(value: object) -> str:
    """A bounded repr for error messages (a 200 KB field must not become a 200 KB log line)."""
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def parse_trace_record(raw: Mapping[str, object]) -> TraceRecord:
    """Validate one Graph record and return it typed.

    Almost every record is a plain ``dict`` of well-formed fields, so it is read once by
    :func:`_parse_plain`; anything that path is not sure of (a missing or odd field, a
    key field with non-ASCII text, a timestamp that does not parse) goes through the
    field-by-field checks below, which say what is wrong. Both give the same record for
    the same input: the plain path only skips checks whose outcome it already knows.

    Raises:
        RecordError: a key field is missing, a date does not parse, or a field has the wrong type.
    """
    if type(raw) is dict:
        record = _parse_plain(raw)
        if record is not None:
            return record
    return _parse_checked(raw)


def _parse_plain(raw: dict[str, object]) -> TraceRecord | None:
    """The record, when every field is of the common shape; None sends it to :func:`_parse_checked`.

    Key fields must be ASCII strings (so they hold no lone surrogate) that are not blank
    and at most :data:`MAX_KEY_CHARS` long once stripped; ``receivedDateTime`` and
    ``status`` ASCII and not blank; ``size`` an ``int`` (not ``bool``) in range or
    absent; the other fields strings or absent (non-ASCII ones are repaired exactly as
    :func:`_optional_text` does).

    A receive time in the shape Graph sends (``YYYY-MM-DDThh:mm:ss[.fraction]Z``, year
    from 1000, time of day in range) is read by the C ``datetime.fromisoformat`` (which
    cuts the fraction to microseconds, as :func:`parse_datetime` does) and its row text
    is sliced from it; any other shape goes through :func:`parse_datetime` and
    :func:`format_datetime`. A run's few status texts are normalised once each.
    """
    get = raw.get
    trace_id, recipient, received_text, status = (
        get("id"),
        get("recipientAddress"),
        get("receivedDateTime"),
        get("status"),
    )
    if not (
        type(trace_id) is str
        and type(recipient) is str
        and type(received_text) is str
        and type(status) is str
        and trace_id.isascii()
        and recipient.isascii()
        and received_text.isascii()
        and status.isascii()
    ):
        return None
    trace_id, recipient, received_text = trace_id.strip(), recipient.strip(), received_text.strip()
    if not (
        trace_id
        and recipient
        and received_text
        and len(trace_id) <= MAX_KEY_CHARS
        and len(recipient) <= MAX_KEY_CHARS
    ):
        return None
    normalised = _STATUS_SEEN.get(status)
    if normalised is None:
        normalised = normalise_status(status)
        if not normalised:  # blank: the checked path says so
            return None
        if len(_STATUS_SEEN) > _CACHE_LIMIT:
            _STATUS_SEEN.clear()
        _STATUS_SEEN[status] = normalised
    size = get("size")
    if size is not None and not (type(size) is int and 0 <= size <= MAX_SIZE):
        return None
    sender, message_id, subject, from_ip, to_ip = (
        get("senderAddress"),
        get("messageId"),
        get("subject"),
        get("fromIP"),
        get("toIP"),
    )
    if not (
        (sender is None or (type(sender) is str and sender.isascii()))
        and (message_id is None or (type(message_id) is str and message_id.isascii()))
        and (subject is None or (type(subject) is str and subject.isascii()))
        and (from_ip is None or (type(from_ip) is str and from_ip.isascii()))
        and (to_ip is None or (type(to_ip) is str and to_ip.isascii()))
    ):
        optional: list[str | None] = []
        for value in (sender, message_id, subject, from_ip, to_ip):
            if value is None or (type(value) is str and value.isascii()):
                optional.append(value)
            elif type(value) is str:
                optional.append(_LONE_SURROGATE.sub("\ufffd", value))
            else:
                return None
        sender, message_id, subject, from_ip, to_ip = optional
    if received_text[0] != "0" and _GRAPH_UTC.fullmatch(received_text) is not None:
        try:
            received = _from_iso(received_text)
        except ValueError:
            return None  # not a real date (2026-02-30), hour 24, a leap second: the checked path decides
        size_of_text = len(received_text)
        if size_of_text >= 27:  # six fraction digits or more (Exchange sends seven): cut to six
            text = received_text[:26] + "Z"
        elif size_of_text == 20:  # no fraction
            text = received_text[:19] + ".000000Z"
        else:
            text = received_text[:19] + "." + (received_text[20:-1] + "000000")[:6] + "Z"
    else:
        try:
            received = parse_datetime(received_text)
        except ValueError:
            return None
        text = format_datetime(received)
    return _tuple_new(
        TraceRecord,  # a TraceRecord without its generated __new__'s Python frame
        (
            trace_id,
            recipient,
            received,
            normalised,
            sender,
            message_id,
            subject,
            size,
            from_ip,
            to_ip,
            text,
        ),
    )


_from_iso = datetime.fromisoformat
_tuple_new = tuple.__new__


def _parse_checked(raw: Mapping[str, object]) -> TraceRecord:
    """:func:`parse_trace_record` field by field, raising the first problem found."""
    if not isinstance(raw, Mapping):
        raise RecordError(f"expected a JSON object, got {type(raw).__name__}", repr(raw)[:120])
    trace_id = _key_text(raw, "id")
    recipient = _key_text(raw, "recipientAddress")
    received_text = _required_text(raw, "receivedDateTime")
    try:
        received = parse_datetime(received_text)
    except ValueError as err:
        raise RecordError(
            f"receivedDateTime {_shown(received_text)} is not an ISO 8601 timestamp ({str(err)[:200]})",
            _hint(raw),
        ) from None
    status = normalise_status(_required_text(raw, "status"))
    size = raw.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise RecordError(f"field 'size' must be an integer, got {_shown(size)}", _hint(raw))
    if size is not None and not 0 <= size <= MAX_SIZE:
        raise RecordError(
            f"field 'size' is {size}, outside Graph's Int32 byte count 0..{MAX_SIZE}", _hint(raw)
        )
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
        received_text=format_datetime(received),
    )


class RowMapper:
    """Builds ``EmailEvents_CL`` rows; holds the local domains and checks rows against the schema."""

    def __init__(
        self,
        local_domains: tuple[str, ...],
        schema: TableSchema | None = None,
        subjects: SubjectPolicy | None = None,
        *,
        source_tenant_id: str = "",
    ) -> None:
        self._local_domains = tuple(normalise_domain(domain) for domain in local_domains)
        self._source_tenant_id = source_tenant_id
        # A run sees few distinct domains and many rows: each domain is normalised and classified once.
        self._domains: dict[str, str] = {}
        self._directions: dict[tuple[str, str], str] = {}
        from connector.subjects import SubjectMode  # noqa: PLC0415 - subjects imports this module

        # ``keep`` hands every subject back as it is: the row skips the call.
        self._subjects = None if subjects is None or subjects.mode is SubjectMode.KEEP else subjects
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

    def to_row(
        self,
        record: TraceRecord,
        *,
        revision: int,
        previous_status: str | None,
        key_state: hashlib.blake2b | None = None,
    ) -> dict[str, object]:
        """Return the stream row for ``record``; null values are left out of the row.

        ``revision`` is 0 the first time a (trace id, recipient) is stored and counts
        status changes after that; ``previous_status`` is the status the last stored
        row had.

        ``RowId`` is :func:`connector.ledger.row_id` of the row's own identity fields, so
        the same row sent twice (a crash between the service storing a batch and the
        checkpoint save) carries the same id and a query can drop the copy, while each
        revision, which is a real change, gets an id of its own.

        The subject goes through ``SUBJECT_MODE`` (:mod:`connector.subjects`) *before* the
        64 KB cut: a hash is of the whole subject and never cut, so ``TruncatedFields``
        names ``Subject`` only in ``keep`` mode; a dropped subject is not "truncated".

        ``key_state``, when given, is :func:`connector.ledger.key_state` of the record's
        trace id and recipient (the caller hashed them for the ledger key already): the
        ``RowId`` is carried on from it instead of hashing the identity again.
        """
        trace_id, recipient, _, status, sender, message_id, subject, size, from_ip, to_ip, received = record
        if self._subjects is not None:
            subject = self._subjects.apply(subject)
        domains = self._domains
        if sender is None or "@" not in sender:
            sender_domain = ""
        else:
            known = domains.get(sender[sender.rfind("@") + 1 :])  # the text after the last "@"
            sender_domain = known if known is not None else self._domain(sender)
        if "@" not in recipient:
            recipient_domain = ""
        else:
            known = domains.get(recipient[recipient.rfind("@") + 1 :])
            recipient_domain = known if known is not None else self._domain(recipient)
        direction = self._directions.get((sender_domain, recipient_domain))
        if direction is None:
            if len(self._directions) > _CACHE_LIMIT:
                self._directions.clear()
            direction = classify_direction(sender_domain, recipient_domain, self._local_domains)
            self._directions[(sender_domain, recipient_domain)] = direction
        # Null columns are left out of the row; the keys keep the schema's order either way.
        row: dict[str, object] = {"TimeGenerated": received, "Received": received, "MessageTraceId": trace_id}
        if message_id is not None:
            row["MessageId"] = message_id
        if sender is not None:
            row["SenderAddress"] = sender
        row["RecipientAddress"] = recipient
        if subject is not None:
            row["Subject"] = subject
        row["Status"] = status
        if size is not None:
            row["Size"] = size
        if from_ip is not None:
            row["FromIP"] = from_ip
        if to_ip is not None:
            row["ToIP"] = to_ip
        row["SenderDomain"] = sender_domain
        row["RecipientDomain"] = recipient_domain
        row["Direction"] = direction
        row["StatusRevision"] = revision
        row["PreviousStatus"] = previous_status or ""
        row["TruncatedFields"] = ""
        row["RowId"] = (
            row_id(trace_id, recipient, status, revision)
            if key_state is None
            else row_id_after(key_state, status, revision)
        )
        row["SourceTenantId"] = self._source_tenant_id
        # No text can need the cut when all of it together is under a quarter of the limit
        # (a character is at most 4 UTF-8 bytes): the common row skips the per-field check.
        # The other columns (times, direction, RowId) are short and bounded: _FIXED_CHARS.
        chars = (
            len(trace_id)
            + len(recipient)
            + (len(sender) if sender is not None else 0)
            + (len(message_id) if message_id is not None else 0)
            + (len(subject) if subject else 0)
            + len(status)
            + (len(from_ip) if from_ip is not None else 0)
            + (len(to_ip) if to_ip is not None else 0)
            + len(sender_domain)
            + len(recipient_domain)
            + (len(previous_status) if previous_status else 0)
        )
        if (chars + _FIXED_CHARS) * 4 > MAX_FIELD_BYTES:
            truncated = []
            for name, value in row.items():
                if isinstance(value, str):
                    cut = cut_utf8(value)
                    if cut is not None:
                        row[name] = cut
                        truncated.append(name)
            if truncated:
                row["TruncatedFields"] = ",".join(truncated)
        return row

    def _domain(self, address: str) -> str:
        """:func:`address_domain`, remembered per domain text."""
        if "@" not in address:
            return ""
        text = address[address.rfind("@") + 1 :]  # as to_row looks it up
        domain = self._domains.get(text)
        if domain is None:
            if len(self._domains) > _CACHE_LIMIT:
                self._domains.clear()
            domain = self._domains[text] = address_domain(address)
        return domain
