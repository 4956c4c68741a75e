"""Deterministic, realistic message trace traffic for the Graph simulator.

Why: row-mapping and dedup bugs hide in the awkward records, so generated
traffic deliberately contains them at realistic rates: several recipients per
message (same ``id`` and ``messageId``, one row each), null senders (``<>``),
upper-case domains, emoji/CJK/accented subjects, IPv6 ``fromIP``, empty
``toIP`` for inbound mail, sizes from 1 KB to 30 MB, and rows still in
``pending``/``gettingStatus`` whose status changes later
(:func:`plan_status_changes`). Everything comes from one seeded
``random.Random`` so a failing test can be replayed exactly.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from .graph import (
    DEFAULT_LOCAL_DOMAINS,
    StatusChange,
    format_graph_datetime,
    normalise_status,
    parse_graph_datetime,
)

LOCAL_USERS: tuple[str, ...] = (
    "adele.vance",
    "alex.wilber",
    "megan.bowen",
    "lee.gu",
    "nestor.wilke",
    "patti.fernandez",
    "diego.siciliani",
    "lynne.robbins",
    "isaiah.langer",
    "johanna.lorenz",
    "grady.archie",
    "pradeep.gupta",
    "joni.sherman",
    "miriam.graham",
    "henrietta.mueller",
)
DISTRIBUTION_LISTS: tuple[str, ...] = ("all-staff", "sales-team", "it-alerts")
EXTERNAL_DOMAINS: tuple[str, ...] = (
    "example.net",
    "example.org",
    "adatum.com",
    "tailspintoys.com",
    "wingtiptoys.com",
    "northwindtraders.com",
    "woodgrovebank.com",
    "gmail.com",
    "outlook.com",
    "mail.proseware.com",
)
EXTERNAL_USERS: tuple[str, ...] = (
    "j.smith",
    "billing",
    "newsletter",
    "support",
    "maria.garcia",
    "wei.zhang",
    "o.brien",
    "noreply",
    "ceo",
    "hr",
)
SUBJECTS: tuple[str, ...] = (
    "Monthly report",
    "Weekly digest",
    "RE: Invoice #48213",
    "FW: Quarterly numbers",
    "Réunion d'équipe – ordre du jour",
    "Überweisung bestätigt: Grüße aus München",
    "会議の議事録 (2026年1月)",
    "请查收附件中的报价单",
    "🎉 Launch day! 🚀",
    "Your order has shipped 📦",
    "Ñandú 🐦 — señal recibida",
    "Привет! Как дела?",
    "ملخص الاجتماع",
    "Undeliverable: Project kickoff",
    "Action required: password expires in 3 days",
    "",
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip",
    "Quotes \"double\" and 'single' and back\\slash",
)
# Final statuses (weights roughly as seen in tenants: mostly delivered).
STATUS_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("delivered", 0.80),
    ("filteredAsSpam", 0.05),
    ("quarantined", 0.025),
    ("failed", 0.04),
    ("expanded", 0.02),
    ("pending", 0.035),
    ("gettingStatus", 0.02),
    ("recalled", 0.01),
)
FINAL_AFTER_PENDING: tuple[tuple[str, float], ...] = (
    ("delivered", 0.85),
    ("failed", 0.08),
    ("quarantined", 0.04),
    ("filteredAsSpam", 0.03),
)
DIRECTION_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("inbound", 0.45),
    ("outbound", 0.25),
    ("internal", 0.25),
    ("external", 0.05),  # relayed: neither side local
)
RECIPIENT_COUNT_WEIGHTS: tuple[tuple[int, float], ...] = (
    (1, 0.72),
    (2, 0.12),
    (3, 0.07),
    (5, 0.06),
    (12, 0.03),
)


def _pick(rng: random.Random, weighted: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([item for item, _ in weighted], weights=[w for _, w in weighted], k=1)[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _ipv4(rng: random.Random) -> str:
    prefix = rng.choice(("203.0.113", "198.51.100", "192.0.2", "40.107.22", "52.101.73"))
    return f"{prefix}.{rng.randint(1, 254)}"


def _ipv6(rng: random.Random) -> str:
    network = ipaddress.IPv6Network(rng.choice(("2001:db8::/32", "2a01:111:f403::/48")))
    host_bits = 128 - network.prefixlen
    # Keep some zero groups so addresses are compressed ("::") like real ones.
    host = rng.getrandbits(16) << 64 | rng.getrandbits(min(32, host_bits))
    return str(network[host % network.num_addresses])


def _ip(rng: random.Random) -> str:
    return _ipv6(rng) if rng.random() < 0.3 else _ipv4(rng)


def _shout(rng: random.Random, address: str) -> str:
    """Upper-case the domain (or the whole address) of ~5% of addresses."""
    roll = rng.random()
    if roll < 0.04:
        local, _, domain = address.partition("@")
        return f"{local}@{domain.upper()}"
    if roll < 0.05:
        return address.upper()
    return address


def _local_address(rng: random.Random, domains: Sequence[str]) -> str:
    return f"{rng.choice(LOCAL_USERS)}@{rng.choice(domains)}"


def _external_address(rng: random.Random) -> str:
    return f"{rng.choice(EXTERNAL_USERS)}@{rng.choice(EXTERNAL_DOMAINS)}"


def _size(rng: random.Random) -> int:
    """Log-uniform between 1 KB and 30 MB, so most messages are small."""
    low, high = 1024, 30 * 1024 * 1024
    return int(round(low * (high / low) ** rng.random()))


def generate_traffic(
    start: datetime,
    end: datetime,
    messages: int,
    local_domains: Sequence[str] = DEFAULT_LOCAL_DOMAINS,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Generate Graph ``exchangeMessageTrace`` rows for ``messages`` messages.

    Args:
        start, end: receive times are uniform in ``[start, end)`` (aware UTC).
        messages: number of messages; rows >= messages (one per recipient).
        local_domains: the tenant's accepted domains.
        seed: seed of the private ``random.Random``.

    Returns:
        Rows sorted by ``receivedDateTime`` then recipient, as Graph dicts.
    """
    if end <= start:
        raise ValueError("end must be after start")
    if not local_domains:
        raise ValueError("need at least one local domain")
    rng = random.Random(seed)
    span_ms = int((end - start).total_seconds() * 1000)
    rows: list[dict[str, Any]] = []
    for _ in range(messages):
        received = start + timedelta(milliseconds=rng.randrange(max(1, span_ms)))
        direction = _pick(rng, DIRECTION_WEIGHTS)
        if direction in ("outbound", "internal"):
            sender = _local_address(rng, local_domains)
        else:
            sender = "<>" if rng.random() < 0.03 else _external_address(rng)
        count = _pick(rng, RECIPIENT_COUNT_WEIGHTS)
        recipients: list[str] = []
        while len(recipients) < count:
            if direction in ("inbound", "internal"):
                candidate = _local_address(rng, local_domains)
            elif direction == "outbound":
                candidate = _external_address(rng)
            else:
                candidate = _external_address(rng)
            if candidate not in recipients:
                recipients.append(candidate)
        trace_id = _uuid(rng)
        host = rng.choice(("namprd00.prod.outlook.com", "eurprd04.prod.outlook.com", "mail.example.net"))
        message_id = f"<{rng.getrandbits(64):016X}{rng.getrandbits(32):08x}@{host}>"
        subject = rng.choice(SUBJECTS)
        size = _size(rng)
        inbound_like = direction in ("inbound", "external")
        from_ip = _ip(rng) if inbound_like or rng.random() < 0.5 else ""
        for recipient in recipients:
            status = _pick(rng, STATUS_WEIGHTS)
            if status == "expanded":
                local = rng.choice(local_domains)
                recipient = f"{rng.choice(DISTRIBUTION_LISTS)}@{local}"  # the DL row; repeats are dropped
            if status == "recalled" and direction == "inbound":
                status = "delivered"  # only internal senders can recall
            to_ip = _ip(rng) if direction == "outbound" else ""
            rows.append(
                {
                    "id": trace_id,
                    "senderAddress": sender if sender == "<>" else _shout(rng, sender),
                    "recipientAddress": _shout(rng, recipient),
                    "messageId": message_id,
                    "receivedDateTime": format_graph_datetime(received),
                    "subject": subject,
                    "size": size,
                    "fromIP": from_ip,
                    "toIP": to_ip,
                    "status": status,
                }
            )
    rows = _dedupe(rows)
    rows.sort(key=lambda r: (r["receivedDateTime"], r["id"], r["recipientAddress"].lower()))
    return rows


def _dedupe(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop rows that repeat an (id, recipient) pair (e.g. two DL expansions)."""
    seen: set[tuple[str, str]] = set()
    result: list[dict[str, Any]] = []
    for row in rows:
        key = (row["id"], row["recipientAddress"].lower())
        if key not in seen:
            seen.add(key)
            result.append(row)
    return result


def plan_status_changes(
    rows: Iterable[Mapping[str, Any]],
    seed: int = 0,
    delay: tuple[timedelta, timedelta] = (timedelta(minutes=2), timedelta(minutes=45)),
) -> list[StatusChange]:
    """Decide when and how ``pending``/``gettingStatus`` rows settle.

    Apply the result with ``GraphServer.schedule(changes)``. ``gettingStatus``
    rows first become ``pending`` half-way, then settle, so a connector sees up
    to two revisions.

    Args:
        rows: generated (or hand-written) Graph rows.
        seed: seed of the private ``random.Random``.
        delay: min/max time after ``receivedDateTime`` when the row settles.
    """
    rng = random.Random(seed)
    low, high = delay
    changes: list[StatusChange] = []
    for row in rows:
        status = normalise_status(str(row["status"]))
        if status not in ("pending", "gettingStatus"):
            continue
        received = parse_graph_datetime(str(row["receivedDateTime"]))
        settle = received + low + (high - low) * rng.random()
        if status == "gettingStatus":
            midway = received + (settle - received) / 2
            changes.append(StatusChange(str(row["id"]), str(row["recipientAddress"]), "pending", midway))
        final = _pick(rng, FINAL_AFTER_PENDING)
        changes.append(StatusChange(str(row["id"]), str(row["recipientAddress"]), final, settle))
    return changes


def realistic_visibility(
    seed: int = 0,
    low: timedelta = timedelta(minutes=5),
    high: timedelta = timedelta(minutes=10),
) -> Callable[[Mapping[str, Any]], datetime]:
    """A ``visible_at`` function: received + 5..10 min, stable per message id.

    Deterministic by hashing (seed, id), so the result does not depend on the
    order rows are added; all recipients of one message appear together.
    """

    def visible_at(row: Mapping[str, Any]) -> datetime:
        digest = hashlib.sha256(f"{seed}:{row['id']}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        received = parse_graph_datetime(str(row["receivedDateTime"]))
        return received + low + (high - low) * fraction

    return visible_at
