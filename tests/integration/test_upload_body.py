"""The Logs Ingestion sink sends each batch as one request whose body is the batcher's own bytes, gzipped once."""

from __future__ import annotations

import gzip
import json
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest

from connector.batching import DEFAULT_BATCH_BUDGET_BYTES, Batch, Batcher
from connector.errors import SinkError
from connector.mapping import RowMapper, parse_trace_record
from connector.ports import Deadline
from connector.refusal import Refusal, classify_refusal
from connector.runner import build_sink
from connector.settings import Settings
from connector.simulator import generate_traffic

pytestmark = pytest.mark.integration

NOW = datetime(2026, 1, 23, 12, 0, 0, tzinfo=UTC)


def _batches(messages: int, budget: int = DEFAULT_BATCH_BUDGET_BYTES) -> list[Batch[int]]:
    mapper = RowMapper(("contoso.com",))
    batcher: Batcher[int] = Batcher(budget)
    batches = []
    records = generate_traffic(NOW - timedelta(hours=6), NOW, messages, seed=5)
    for index, raw in enumerate(records):
        full = batcher.add(mapper.to_row(parse_trace_record(raw), revision=0, previous_status=None), index)
        if full is not None:
            batches.append(full)
    last = batcher.flush()
    if last is not None:
        batches.append(last)
    return batches


@pytest.fixture
def sink(connector_env):
    with ExitStack() as resources:
        yield build_sink(Settings.from_env(connector_env), Deadline(timedelta(minutes=2)), resources)


def _posts(sim):
    return sim.ingestion.requests(method="POST", path="/streams/")


def test_the_request_body_is_the_batchers_bytes_gzipped_once(sim, sink):
    batch = _batches(40)[0]

    result = sink.upload(batch.payload())

    assert result.error is None
    (post,) = _posts(sim)
    assert post.headers["content-encoding"] == "gzip"
    assert gzip.decompress(post.body) == batch.payload().body()
    assert len(gzip.decompress(post.body)) == batch.size_bytes


def test_a_batch_filled_to_the_budget_goes_in_one_request(sim, sink):
    batches = _batches(3000)
    full = batches[0]
    assert len(batches) > 1
    assert full.size_bytes > DEFAULT_BATCH_BUDGET_BYTES - 2000  # as full as the next row allowed

    result = sink.upload(full.payload())

    assert result.error is None
    assert len(_posts(sim)) == 1
    assert [row["RowId"] for row in sim.ingestion.rows()] == [row["RowId"] for row in full.rows]


def test_a_retried_request_resends_the_same_body_and_stores_the_rows_once(sim, sink):
    batch = _batches(40)[0]
    sim.ingestion.inject(503, headers={"Retry-After": "0"})

    result = sink.upload(batch.payload())

    assert result.error is None
    first, second = _posts(sim)
    assert first.body == second.body
    assert len(sim.ingestion.rows()) == len(batch)


def test_a_refused_request_reports_every_row_failed_as_a_content_refusal(sim, sink):
    batch = _batches(40)[0]
    bad = batch.select(range(len(batch)))
    bad.rows[3] = {**bad.rows[3], "Size": "not a number"}
    bad.encoded[3] = json.dumps(bad.rows[3], separators=(",", ":")).encode()

    result = sink.upload(bad.payload())

    assert result.failed_indexes == frozenset(range(len(batch)))
    assert isinstance(result.error, SinkError)
    assert result.error.status == 400
    assert classify_refusal(result.error) is not Refusal.NOT_ROWS  # about the rows: the run splits it
    assert sim.ingestion.rows() == []
