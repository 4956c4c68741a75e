"""A real SIGKILL after the service accepted a batch, before the checkpoint recorded it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from connector.runner import run_feed, unlock
from connector.simulator import generate_traffic
from connector.sync import GROUP_MAX_ROWS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def killed_after_first_accepted_batch(sim, env, command: tuple[str, ...] = ("run",)) -> None:
    """Run the connector (``command``) as a process; SIGKILL it the moment the service stores its first batch."""
    child = subprocess.Popen(
        [sys.executable, "-m", "connector", "--no-progress", *command],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sim.ingestion.on_accepted = lambda batch: os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=120) == -signal.SIGKILL
    sim.ingestion.on_accepted = None
    # The dead run's lease, renewed moments before the kill (so --force); waiting it out would also do.
    assert unlock("live", env, force=True).startswith("lock on live broken")


def stored(sim) -> Counter:
    return Counter(
        (r["MessageTraceId"], r["RecipientAddress"].lower(), r["Status"]) for r in sim.ingestion.rows()
    )


@pytest.fixture
def traffic(sim):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=3), now - timedelta(minutes=5), messages=2000, seed=21)
    )
    return {(r["id"], r["recipientAddress"].lower()) for r in sim.graph.rows()}


def test_with_workspace_verification_the_rerun_sends_no_duplicate_and_leaves_no_gap(
    sim, connector_env, traffic
):
    env = {**connector_env, "WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0.05"}
    sim.logs_query.latency_seconds = 1.0
    killed_after_first_accepted_batch(sim, env)
    first_batch = len(sim.ingestion.rows())
    assert 0 < first_batch < len(traffic)

    report = run_feed(env)

    assert report.ok, report.error
    assert report.intent_rows_found == first_batch
    assert report.possible_duplicates == 0
    counts = stored(sim)
    assert max(counts.values()) == 1
    assert {(i, r) for i, r, _ in counts} == traffic
    assert len(sim.logs_query.requests()) >= 1


def test_verification_waits_out_the_ingestion_latency_before_it_reads(sim, connector_env, traffic):
    env = {**connector_env, "WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0.1"}
    sim.logs_query.latency_seconds = 4.0  # rows show up 4 s after they were accepted
    killed_after_first_accepted_batch(sim, env)

    report = run_feed(env)

    assert report.ok, report.error
    assert max(stored(sim).values()) == 1


def test_without_verification_the_rerun_resends_and_counts_possible_duplicates(
    sim, connector_env, traffic, blob_store
):
    killed_after_first_accepted_batch(sim, connector_env)
    first_batch = len(sim.ingestion.rows())
    # The intent lists every row of its group of batches; only the first batch had gone out.
    in_doubt = len(blob_store.load("live").checkpoint.progress.pending_batch.entries)
    assert first_batch <= in_doubt <= GROUP_MAX_ROWS + first_batch

    report = run_feed(connector_env)

    assert report.ok, report.error
    assert report.possible_duplicates == in_doubt  # an upper bound: the rows actually stored twice are fewer
    counts = stored(sim)
    assert {(i, r) for i, r, _ in counts} == traffic
    assert sum(n - 1 for n in counts.values()) == first_batch


def test_verification_without_read_access_stops_with_the_role_to_grant(
    sim, connector_env, traffic, blob_store
):
    env = {**connector_env, "WORKSPACE_ID": sim.workspace_id, "VERIFY_INGESTION_DELAY_MINUTES": "0"}
    killed_after_first_accepted_batch(sim, env)
    sim.logs_query.read_access = False

    report = run_feed(env)

    assert report.error is not None
    assert "Log Analytics Reader" in str(report.error)
    assert blob_store.load("live").checkpoint.progress.pending_batch is not None
