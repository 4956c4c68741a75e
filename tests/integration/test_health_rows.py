"""Health rows: one MessageTraceHealth_CL row per run, through the DCR's second stream, never harmful."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest

from connector.errors import AuthenticationError, GraphPermissionError, SinkError
from connector.report import RunReport
from connector.runner import run_feed, write_health_row
from connector.settings import Settings
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration

HEALTH = "MessageTraceHealth_CL"


def at(sim, minutes_ago: int) -> str:
    return (sim.now() - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def test_every_run_sends_one_health_row_that_says_what_the_run_did(sim, connector_env):
    sim.graph.add(
        [trace("mail-1", "bob@contoso.com", at(sim, 30)), trace("mail-2", "al@contoso.com", at(sim, 20))]
    )

    first = run_feed(connector_env)
    second = run_feed(connector_env)

    health = sim.ingestion.rows(HEALTH)
    assert [row["Feed"] for row in health] == ["live", "live"]
    assert [row["Outcome"] for row in health] == [first.outcome, second.outcome]
    assert health[0]["RowsStored"] == first.rows_uploaded == 2
    assert health[0]["HighWaterMark"] == health[1]["HighWaterMarkBefore"]
    assert health[0]["LagMinutes"] >= 0
    assert "Error" not in health[0]
    assert (first.health_row, second.health_row) == ("sent", "sent")
    # The mail table holds mail only: the health rows are not EmailEvents_CL rows.
    assert len(sim.ingestion.rows()) == 2
    assert all("MessageTraceId" in row for row in sim.ingestion.rows())


def test_a_failed_run_sends_its_error_and_kind_without_addresses(sim, connector_env):
    sim.graph.permission_granted = False

    report = run_feed(connector_env)

    assert isinstance(report.error, GraphPermissionError)
    (row,) = sim.ingestion.rows(HEALTH)
    assert (row["Outcome"], row["ErrorKind"]) == ("failed", "permission")
    assert "ExchangeMessageTrace.Read.All" in row["Error"]
    assert "@" not in row["Error"]


def test_a_refused_health_row_changes_nothing_of_the_run_and_logs_one_warning(sim, connector_env, caplog):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim, 30))])
    sim.ingestion.inject(403, path="MessageTraceHealth", times=None)

    with caplog.at_level(logging.WARNING, logger="connector.runner"):
        report = run_feed(connector_env)

    assert report.ok
    assert report.outcome == "completed"
    assert report.health_row == "failed"
    assert len(sim.ingestion.rows()) == 1
    assert sim.ingestion.rows(HEALTH) == []
    (warning,) = [r for r in caplog.records if r.name == "connector.runner" and r.levelno == logging.WARNING]
    assert "health row for feed live not written" in warning.getMessage()
    assert "Bearer" not in warning.getMessage()


def test_an_unreachable_health_stream_costs_the_run_nothing(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim, 30))])

    report = run_feed({**connector_env, "HEALTH_STREAM_NAME": "Custom-NotDeclared"})

    assert report.ok
    assert report.health_row == "failed"
    assert len(sim.ingestion.rows()) == 1
    assert run_feed(connector_env).outcome in ("completed", "up_to_date")


def test_health_rows_off_sends_none(sim, connector_env):
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim, 30))])

    report = run_feed({**connector_env, "HEALTH_ROWS": "off"})

    assert report.ok
    assert report.health_row == "off"
    assert sim.ingestion.rows(HEALTH) == []
    assert not any("MessageTraceHealth" in r.path for r in sim.ingestion.requests())


@pytest.mark.parametrize(
    "stopped_by",
    [
        AuthenticationError("could not get a Logs Ingestion token: Entra answered 503"),
        SinkError("Logs Ingestion API answered 503 for 3 rows", rows_failed=3, status=503),
    ],
    ids=["entra", "ingestion"],
)
def test_a_run_stopped_by_entra_or_ingestion_does_not_ask_again_for_its_health_row(
    sim, connector_env, stopped_by
):
    failed = RunReport(feed="live", started=sim.now())
    failed.fail(stopped_by)
    requests_before = len(sim.entra.requests())

    write_health_row(failed, Settings.from_env(connector_env))

    assert failed.health_row == "skipped"
    assert len(sim.entra.requests()) == requests_before
    assert sim.ingestion.requests() == []
