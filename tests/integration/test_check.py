"""``python -m connector check`` over the simulator and Azurite: one line per check, exit by the worst failure."""

from __future__ import annotations

import io

import pytest

from connector.auth import clear_credential_cache
from connector.cli import main
from connector.errors import ErrorKind
from connector.quota import Caller, QuotaBudget
from connector.quota_store import BlobBudgetStore, FileBudgetStore
from connector.runner import build_lock, build_quota_gate, build_store
from connector.settings import Settings
from connector.store import BlobCheckpointStore

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def environment(monkeypatch, connector_env):
    clear_credential_cache()
    for name, value in connector_env.items():
        monkeypatch.setenv(name, value)
    yield connector_env
    clear_credential_cache()


def check(*args: str) -> tuple[int, dict[str, str]]:
    out = io.StringIO()
    code = main(["--no-progress", "check", *args], out=out)
    lines = {line[5:23].strip(): line for line in out.getvalue().splitlines()}
    return code, lines


def test_a_working_deployment_passes_every_check_and_sends_one_graph_request(sim):
    code, lines = check()

    assert code == 0, lines
    assert set(lines) == {
        "graph token",
        "ingestion token",
        "graph permission",
        "graph domains",
        "storage writable",
        "lock free",
    }
    assert all(line.startswith("ok ") for line in lines.values())
    assert len(sim.graph.requests(path="messageTraces")) == 1
    assert "4 verified domains (contoso.com, fabrikam.com" in lines["graph domains"]
    assert sim.ingestion.rows() == []


def budget_of(settings: Settings) -> QuotaBudget:
    store = build_store(settings)
    budget = (
        BlobBudgetStore(store.container, settings.graph_tenant_id)
        if isinstance(store, BlobCheckpointStore)
        else FileBudgetStore(store.directory, settings.graph_tenant_id)
    )
    return budget.update(lambda stored: (None, stored))  # read, write nothing


def test_the_graph_request_is_paid_from_the_tenant_s_quota_budget_as_another_caller(sim, environment):
    code, lines = check()

    assert code == 0, lines
    budget = budget_of(Settings.from_env(environment))
    assert len(budget.sent) == 1
    assert set(budget.next_due) == {Caller.OTHER.value}
    assert "not counted" not in lines["graph permission"]


def test_a_quota_budget_with_no_slot_in_the_check_s_time_stops_the_graph_check_not_the_others(
    sim, environment
):
    settings = Settings.from_env(environment)
    store = build_store(settings)
    # Another caller was told by Graph to wait ten minutes: every caller of the budget honours it.
    build_quota_gate(store, settings, Caller.LIVE).throttled(600)

    code, lines = check()

    assert code == ErrorKind.TRANSIENT.exit_code, lines
    assert lines["graph permission"].startswith("FAIL")
    assert lines["storage writable"].startswith("ok")
    assert sim.graph.requests(path="messageTraces") == []


def test_an_unreachable_budget_does_not_hide_the_graph_answer_and_the_line_says_it_was_not_counted(
    sim, monkeypatch, tmp_path
):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the state directory should be")
    monkeypatch.setenv("CHECKPOINT_STORE", "file")
    monkeypatch.setenv("CHECKPOINT_DIRECTORY", str(blocked))

    code, lines = check()

    assert lines["graph permission"].startswith("ok"), lines
    assert "not counted in the quota budget" in lines["graph permission"]
    assert lines["storage writable"].startswith("FAIL")
    assert code != 0
    assert len(sim.graph.requests(path="messageTraces")) == 1


def test_a_missing_domain_permission_fails_the_check_only_when_local_domains_is_empty(sim, monkeypatch):
    sim.graph.domains_permission_granted = False
    code, lines = check()
    assert code == 0, lines
    assert lines["graph domains"].startswith("ok ")
    assert "runs use LOCAL_DOMAINS alone (2)" in lines["graph domains"]

    monkeypatch.delenv("LOCAL_DOMAINS")
    code, lines = check()
    assert code == 3, lines
    assert lines["graph domains"].startswith("FAIL")
    assert "permission Domain.Read.All missing; fix: grant" in lines["graph domains"]


def test_a_missing_graph_permission_fails_that_check_with_the_grant_to_give(sim):
    sim.graph.permission_granted = False

    code, lines = check()

    assert code == 3
    assert lines["graph permission"].startswith("FAIL")
    assert "ExchangeMessageTrace.Read.All" in lines["graph permission"]
    assert lines["storage writable"].startswith("ok")


def test_the_service_principal_401_names_both_a_missing_and_an_activating_principal(sim):
    sim.graph.service_principal_missing = True

    code, lines = check()

    assert code == 3
    assert "is missing or was created recently and is still activating" in lines["graph permission"]
    assert "New-MgServicePrincipal" in lines["graph permission"]


def test_a_held_lock_fails_the_lock_check_with_exit_5(sim, environment):
    settings = Settings.from_env(environment)
    with build_lock(build_store(settings), settings).hold("live"):
        code, lines = check()

    assert code == 5
    assert lines["lock free"].startswith("FAIL")
    assert lines["graph permission"].startswith("ok")


def test_write_test_row_uploads_one_row_marked_connector_test(sim):
    code, lines = check("--write-test-row")

    assert code == 0, lines
    assert lines["dcr write"].startswith("ok")
    (row,) = sim.ingestion.rows()
    assert row["Status"] == "ConnectorTest"
    assert row["MessageTraceId"].startswith("connector-check-")


def test_a_refused_token_is_a_permission_failure_and_the_worst_kind_sets_the_exit_code(sim, monkeypatch):
    monkeypatch.setenv("CLIENT_SECRET", "wrong-secret")

    code, lines = check()

    assert code == 3
    assert lines["graph token"].startswith("FAIL")
    assert lines["ingestion token"].startswith("FAIL")
