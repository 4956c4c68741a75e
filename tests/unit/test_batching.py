import json

import pytest

from connector.batching import SERVICE_MAX_REQUEST_BYTES, Batcher, body_size
from connector.errors import RecordError


def rows(count, subject_len=100):
    return [{"MessageTraceId": f"id-{i}", "Subject": "é" * subject_len} for i in range(count)]


class TestBodySize:
    def test_body_size_equals_the_sdk_serialisation(self):
        sample = rows(7)

        assert body_size(sample) == len(json.dumps(sample).encode("utf-8"))

    def test_unicode_is_measured_escaped_as_sent(self):
        sample = [{"Subject": "日本語"}]

        assert body_size(sample) == len(json.dumps(sample))


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
        assert body_size(full.rows) < SERVICE_MAX_REQUEST_BYTES * 0.96

    def test_row_larger_than_the_budget_is_refused_with_a_clear_error(self):
        with pytest.raises(RecordError, match="over the 1000-byte request budget"):
            Batcher(budget_bytes=1000).add({"Subject": "x" * 2000}, 0)

    def test_flush_of_an_empty_batcher_is_none(self):
        assert Batcher().flush() is None
