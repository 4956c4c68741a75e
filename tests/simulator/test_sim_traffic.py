"""The traffic generator is deterministic and contains the awkward cases on purpose."""

from __future__ import annotations

import ipaddress
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from connector.simulator import ManualClock, MessageTraceStore, generate_traffic, plan_status_changes
from connector.simulator.graph import STATUSES, parse_graph_datetime
from connector.simulator.traffic import realistic_visibility

START = datetime(2026, 1, 20, tzinfo=UTC)
END = datetime(2026, 1, 22, tzinfo=UTC)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, object]]:
    return generate_traffic(START, END, 2000, seed=42)


def test_same_seed_same_rows_other_seed_other_rows(rows: list[dict[str, object]]) -> None:
    assert generate_traffic(START, END, 2000, seed=42) == rows
    assert generate_traffic(START, END, 2000, seed=43) != rows


def test_rows_have_graph_shape(rows: list[dict[str, object]]) -> None:
    keys = {
        "id",
        "senderAddress",
        "recipientAddress",
        "messageId",
        "receivedDateTime",
        "subject",
        "size",
        "fromIP",
        "toIP",
        "status",
    }
    assert all(set(r) == keys for r in rows)
    assert len({(r["id"], str(r["recipientAddress"]).lower()) for r in rows}) == len(rows)
    for row in rows:
        text = str(row["receivedDateTime"])
        assert len(text) == 24
        assert text.endswith("Z")
        assert text[19] == "."
        assert START <= parse_graph_datetime(text) < END
        assert 1024 <= int(str(row["size"])) <= 30 * 1024 * 1024
        assert row["status"] in STATUSES


def test_awkward_cases_are_present(rows: list[dict[str, object]]) -> None:
    by_id = Counter(str(r["id"]) for r in rows)
    multi = [trace_id for trace_id, count in by_id.items() if count > 1]
    assert multi
    same = [r for r in rows if r["id"] == multi[0]]
    assert len({r["messageId"] for r in same}) == 1
    assert any(r["senderAddress"] == "<>" for r in rows)
    assert any(any(c.isupper() for c in str(r["recipientAddress"]).split("@")[-1]) for r in rows)
    subjects = {str(r["subject"]) for r in rows}
    assert any(any(ord(c) > 0xFFFF for c in s) for s in subjects)  # emoji
    assert any(any("\u3040" <= c <= "\u9fff" for c in s) for s in subjects)  # CJK
    assert any("é" in s for s in subjects)
    from_ips = [str(r["fromIP"]) for r in rows if r["fromIP"]]
    versions = {ipaddress.ip_address(ip).version for ip in from_ips}
    assert versions == {4, 6}
    inbound = [
        r for r in rows if not str(r["senderAddress"]).lower().endswith(("contoso.com", "fabrikam.com"))
    ]
    assert inbound
    assert all(r["toIP"] == "" for r in inbound)
    statuses = Counter(str(r["status"]) for r in rows)
    assert statuses["delivered"] > len(rows) * 0.6
    assert statuses["pending"]
    assert statuses["gettingStatus"]
    sizes = [int(str(r["size"])) for r in rows]
    assert min(sizes) < 10_000
    assert max(sizes) > 5_000_000


def test_pending_rows_settle_later(rows: list[dict[str, object]]) -> None:
    clock = ManualClock(END)
    store = MessageTraceStore(clock)
    store.add(rows)
    changes = plan_status_changes(rows, seed=1)
    unsettled = [r for r in rows if r["status"] in ("pending", "gettingStatus")]
    assert len({(c.id, c.recipient) for c in changes}) == len(unsettled)
    store.schedule(changes)
    clock.set(START - timedelta(days=1))
    assert Counter(r["status"] for r in store.rows())["gettingStatus"] > 0
    clock.set(END + timedelta(hours=2))
    final = Counter(r["status"] for r in store.rows())
    assert final["pending"] == 0
    assert final["gettingStatus"] == 0


def test_realistic_visibility_is_5_to_10_minutes_and_per_message(rows: list[dict[str, object]]) -> None:
    visible_at = realistic_visibility(seed=3)
    for row in rows[:200]:
        delay = visible_at(row) - parse_graph_datetime(str(row["receivedDateTime"]))
        assert timedelta(minutes=5) <= delay <= timedelta(minutes=10)
    first = rows[0]
    assert visible_at(first) == visible_at(dict(first))
