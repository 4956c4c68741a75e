"""The exit code is the error's kind, whichever service failed.

For every service the connector talks to, over the simulator and Azurite: a refusal
(401/403) exits 3, an unreachable host exits 6 (the next run resumes), and a TLS
certificate the machine does not trust exits 2 (a setting: the CA bundle).
"""

from __future__ import annotations

import io
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from azure.storage.blob import ContainerClient

from connector.cli import main
from connector.errors import ErrorKind
from connector.ledger import epoch_ms, ledger_key, row_id
from connector.mapping import format_datetime
from connector.simulator import SimulatedHttpServer, Simulator, TestCertificateAuthority
from connector.simulator.azurite import ACCOUNT, ACCOUNT_KEY
from connector.state import Checkpoint, FeedProgress, IntentEntry, PendingBatch
from connector.store import BlobCheckpointStore
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def closed_url() -> str:
    """An https URL on a loopback port nothing listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"https://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def untrusted_url() -> Iterator[str]:
    """An HTTPS server whose certificate comes from a CA the connector's bundle does not hold."""
    authority = TestCertificateAuthority()
    server = SimulatedHttpServer("untrusted", authority.server_ssl_context()).start()
    yield server.url
    server.stop()
    authority.close()


@dataclass(frozen=True)
class Case:
    """A way to break one service: settings to override and simulator state to change."""

    env: dict[str, str]
    arrange: Callable[[Simulator], None] = lambda sim: None


def run_cli(monkeypatch, env: dict[str, str], capsys) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    code = main(["--no-progress", "run"], out=out)
    return code, out.getvalue() + capsys.readouterr().err


def one_mail(sim: Simulator) -> None:
    sim.graph.add([trace("mail-1", "bob@contoso.com", format_datetime(sim.now() - timedelta(minutes=10)))])


def expected(kind: ErrorKind) -> int:
    return kind.exit_code


def test_every_services_refusal_exits_3(sim, connector_env, azurite, monkeypatch, capsys):
    def refused_graph(sim: Simulator) -> None:
        sim.graph.permission_granted = False

    def refused_ingestion(sim: Simulator) -> None:
        one_mail(sim)
        sim.ingestion.role_assigned = False

    wrong_key = azurite.connection_string.replace(ACCOUNT_KEY, "d3Jvbmcta2V5LW5vdC10aGUtYWNjb3VudHM=")
    cases = {
        "entra": Case({"CLIENT_SECRET": "wrong-secret"}),
        "graph": Case({}, refused_graph),
        "ingestion": Case({}, refused_ingestion),
        "blob": Case({"STORAGE_CONNECTION_STRING": wrong_key}),
    }
    assert ACCOUNT in azurite.connection_string

    codes = {}
    for service, case in cases.items():
        sim.reset()
        case.arrange(sim)
        codes[service], _ = run_cli(monkeypatch, {**connector_env, **case.env}, capsys)

    assert codes == dict.fromkeys(cases, expected(ErrorKind.PERMISSION))


def test_every_unreachable_service_exits_6(sim, connector_env, closed_url, monkeypatch, capsys):
    graph_by_managed_identity = {
        "GRAPH_AUTH_MODE": "managed_identity",
        "MANAGED_IDENTITY_CLIENT_ID": sim.managed_identity_client_id,
    }
    cases = {
        "entra": Case({"AUTHORITY_HOST": closed_url}),
        "entra-azure-identity": Case({**graph_by_managed_identity, "AUTHORITY_HOST": closed_url}, one_mail),
        "graph": Case({"GRAPH_BASE_URL": closed_url}),
        "ingestion": Case({"INGESTION_ENDPOINT": closed_url}, one_mail),
    }
    fast = {"HTTP_MAX_RETRIES": "1"}

    codes, messages = {}, {}
    for service, case in cases.items():
        sim.reset()
        case.arrange(sim)
        codes[service], messages[service] = run_cli(
            monkeypatch, {**connector_env, **fast, **case.env}, capsys
        )

    assert codes == dict.fromkeys(cases, expected(ErrorKind.TRANSIENT)), messages
    assert "cannot reach the Entra ID authority" in messages["entra"]
    assert "could not get a Logs Ingestion token" in messages["entra-azure-identity"]
    assert "still failing after 2 attempts" in messages["graph"]
    assert "cannot reach the Logs Ingestion endpoint" in messages["ingestion"]


def test_every_untrusted_certificate_exits_2_naming_the_ca_bundle(
    sim, connector_env, untrusted_url, monkeypatch, capsys
):
    cases = {
        "entra": Case({"AUTHORITY_HOST": untrusted_url}),
        "graph": Case({"GRAPH_BASE_URL": untrusted_url}),
        "ingestion": Case({"INGESTION_ENDPOINT": untrusted_url}, one_mail),
    }

    codes, messages = {}, {}
    for service, case in cases.items():
        sim.reset()
        case.arrange(sim)
        codes[service], messages[service] = run_cli(monkeypatch, {**connector_env, **case.env}, capsys)

    assert codes == dict.fromkeys(cases, expected(ErrorKind.SETTING)), messages
    assert all("REQUESTS_CA_BUNDLE" in message for message in messages.values()), messages


class TestWorkspaceVerification:
    """The Log Analytics query runs only to resolve a batch a killed run left unconfirmed."""

    @pytest.fixture
    def unconfirmed_batch(self, sim, blob_store):
        received = sim.now() - timedelta(minutes=30)
        entry = IntentEntry(
            ledger_key("mail-1", "bob@contoso.com"),
            epoch_ms(received),
            "Delivered",
            0,
            row_id("mail-1", "bob@contoso.com", "Delivered", 0),
        )
        progress = FeedProgress(
            feed="live",
            coverage_start=received,
            pending_batch=PendingBatch(created=received, entries=(entry,)),
        )
        blob_store.save(Checkpoint(progress=progress, ledger={}), None)

    @pytest.mark.parametrize(
        ("break_it", "kind"),
        [
            ("refused", ErrorKind.PERMISSION),
            ("unreachable", ErrorKind.TRANSIENT),
            ("untrusted", ErrorKind.SETTING),
        ],
    )
    def test_query_failure_exits_with_its_kind_and_keeps_the_batch_recorded(
        self,
        sim,
        connector_env,
        blob_store,
        unconfirmed_batch,
        closed_url,
        untrusted_url,
        monkeypatch,
        capsys,
        break_it,
        kind,
    ):
        env = {
            **connector_env,
            "WORKSPACE_ID": sim.workspace_id,
            "VERIFY_INGESTION_DELAY_MINUTES": "0",
            "HTTP_MAX_RETRIES": "1",
        }
        if break_it == "refused":
            sim.logs_query.read_access = False
        else:
            env["LOGS_QUERY_ENDPOINT"] = closed_url if break_it == "unreachable" else untrusted_url

        code, message = run_cli(monkeypatch, env, capsys)

        assert code == kind.exit_code, message
        assert "workspace verification query failed" in message
        assert blob_store.load("live").checkpoint.progress.pending_batch is not None


@pytest.mark.parametrize(
    ("where", "kind"), [("closed", ErrorKind.TRANSIENT), ("untrusted", ErrorKind.SETTING)]
)
def test_blob_storage_out_of_reach_is_sorted_by_cause(closed_url, untrusted_url, where, kind):
    endpoint = closed_url if where == "closed" else untrusted_url
    container = ContainerClient.from_connection_string(
        f"DefaultEndpointsProtocol=https;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint}/{ACCOUNT};",
        "checkpoints",
        retry_total=0,
    )

    with pytest.raises(Exception) as raised:
        BlobCheckpointStore(container).load("live")

    assert getattr(raised.value, "kind", None) is kind, raised.value
