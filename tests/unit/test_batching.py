import json

import pytest

from connector.batching import DEFAULT_BATCH_BUDGET_BYTES, SERVICE_MAX_REQUEST_BYTES, Batcher, body_size
from connector.errors import RecordError


def rows(count, subject_len=100):
    return [{"MessageTraceId": f"id-{i}", "Subject": "é" * subject_len} for i in range(count)]


class TestBodySize:
    def test_body_size_is_the_compact_json_array_sent(self):
        sample = rows(7)

        assert body_size(sample) == len(json.dumps(sample, separators=(",", ":")).encode("utf-8"))

    def test_unicode_is_measured_escaped_as_sent(self):
        sample = [{"Subject": "日本語"}]

        assert body_size(sample) == len(json.dumps(sample, separators=(",", ":")))


class TestEncodedOnce:
    def test_the_body_is_the_bytes_each_row_was_sized_by(self):
        batcher = Batcher()
        for index, row in enumerate(rows(3)):
            batcher.add(row, index)
        batch = batcher.flush()
        assert batch is not None
        batch.rows[0] = {
            "MessageTraceId": "changed after batching"
        }  # not serialised again: still the old bytes

        body = batch.payload().body()

        assert json.loads(body) == rows(3)
        assert len(body) == batch.size_bytes

    def test_a_selected_sub_batch_keeps_its_rows_bytes_and_exact_size(self):
        batcher = Batcher()
        for index, row in enumerate(rows(5)):
            batcher.add(row, index)
        batch = batcher.flush()
        assert batch is not None

        part = batch.select([3, 1])

        assert json.loads(part.payload().body()) == [rows(5)[1], rows(5)[3]]
        assert part.tags == [1, 3]
        assert len(part.payload().body()) == part.size_bytes

    def test_rows_sized_to_the_budget_fill_one_batch_exactly(self):
        row = {"MessageTraceId": "x" * 80}
        per_row = body_size([row]) - 2
        budget = 2 + 10 * per_row + 9
        batcher = Batcher(budget_bytes=budget)

        fulls = [batcher.add(dict(row), index) for index in range(10)]
        last = batcher.flush()

        assert fulls == [None] * 10
        assert last is not None
        assert len(last) == 10
        assert last.size_bytes == budget


class TestBatcher:
    def test_every_batch_stays_within_the_budget_and_no_row_is_lost(self):
        batcher = Batcher(budget_bytes=10_000)
        batches = []
        for index, row in enumerate(rows(500)):
            full = batcher.add(row, index)
            if full:
                batches.append(full)
        last = batcher.flush()
        if last:
            batches.append(last)

        assert all(body_size(b.rows) == b.size_bytes <= 10_000 for b in batches)
        assert [tag for b in batches for tag in b.tags] == list(range(500))
        assert len(batches) > 1

    def test_default_budget_keeps_a_margin_under_the_service_limit(self):
        batcher = Batcher()
        full = None
        for index, row in enumerate(rows(5000, subject_len=200)):
            full = full or batcher.add(row, index)

        assert full is not None
        assert body_size(full.rows) <= DEFAULT_BATCH_BUDGET_BYTES < SERVICE_MAX_REQUEST_BYTES

    def test_row_larger_than_the_budget_is_refused_with_a_clear_error(self):
        with pytest.raises(RecordError, match="over the 1000-byte request budget"):
            Batcher(budget_bytes=1000).add({"Subject": "x" * 2000}, 0)

    def test_flush_of_an_empty_batcher_is_none(self):
        assert Batcher().flush() is None
