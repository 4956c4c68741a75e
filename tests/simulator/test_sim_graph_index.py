"""The simulator's time index answers exactly what a scan of every stored row would."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from connector.simulator.graph import MessageTraceStore

NOW = datetime(2026, 1, 23, 12, 0, 0, tzinfo=UTC)


def _rows(rng: random.Random, count: int) -> list[dict[str, Any]]:
    rows = []
    for index in range(count):
        received = NOW - timedelta(minutes=rng.randrange(0, 600), seconds=rng.choice([0, 0, 30]))
        rows.append(
            {
                "id": f"{rng.randrange(0, count // 2 + 1):08d}-Id",  # shared ids: several recipients a message
                "recipientAddress": f"User{index}@contoso.com",
                "senderAddress": "a@example.net",
                "messageId": f"<{index}@example.net>",
                "receivedDateTime": received.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "subject": "s",
                "size": 1,
                "fromIP": "192.0.2.1",
                "toIP": "",
                "status": "delivered",
            }
        )
    return rows


def _scan(
    rows: list[dict[str, Any]], visible: dict[str, datetime], start: datetime, end: datetime, now: datetime
) -> list[str]:
    """The answer by definition: visible rows in range, newest first, ties by (id, recipient lower-cased)."""

    def received(row: dict[str, Any]) -> datetime:
        return datetime.strptime(row["receivedDateTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

    hits = [row for row in rows if visible[row["recipientAddress"]] <= now and start <= received(row) <= end]
    hits.sort(key=lambda row: (-received(row).timestamp(), row["id"], row["recipientAddress"].lower()))
    return [row["recipientAddress"] for row in hits]


def test_every_page_equals_the_same_slice_of_a_full_scan_with_hidden_rows_in_between():
    rng = random.Random(7)
    rows = _rows(rng, 600)
    visible = {row["recipientAddress"]: NOW - timedelta(minutes=rng.randrange(-60, 600)) for row in rows}
    store = MessageTraceStore(lambda: NOW)
    store.add(rows[:300], visible_at=lambda row: visible[row["recipientAddress"]])
    store.add(
        rows[300:], visible_at=lambda row: visible[row["recipientAddress"]]
    )  # unsorted again after a read

    for _ in range(60):
        start = NOW - timedelta(minutes=rng.randrange(0, 700))
        end = start + timedelta(minutes=rng.randrange(0, 300))
        now = NOW - timedelta(minutes=rng.randrange(-60, 400))
        expected = _scan(rows, visible, start, end, now)
        offset, top = rng.randrange(0, len(expected) + 3), rng.randrange(1, 40)

        page, total = store.page(start, end, now, offset=offset, top=top)

        assert total == len(expected)
        assert [data["recipientAddress"] for data, _ in page] == expected[offset : offset + top]


def test_publishing_every_row_makes_the_hidden_ones_count():
    rows = _rows(random.Random(3), 50)
    store = MessageTraceStore(lambda: NOW)
    store.add(rows, visible_at=NOW + timedelta(days=1))
    window = (NOW - timedelta(days=1), NOW)
    assert store.page(*window, NOW, offset=0, top=None) == ([], 0)

    store.publish_all()

    page, total = store.page(*window, NOW, offset=0, top=None)
    assert total == len(page) == 50
