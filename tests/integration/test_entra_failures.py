"""What a run does when Entra ID (or the managed identity endpoint) answers badly.

Over the simulator's real HTTPS, with the real msal and azure-identity code: a 429
or 5xx, a dropped connection, a timeout or a page that is not Entra's JSON is
retried; if it outlasts the retries the run exits 6 (the next run tries again)
with a message quoting what the service said, never a traceback, and never the
page itself in the logs. A refusal without ``error_description`` is still the
documented "Entra ID refused a token" (exit 3).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest

from connector.auth import clear_credential_cache
from connector.cli import main
from connector.errors import ErrorKind
from connector.mapping import format_datetime
from connector.simulator import Simulator
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration

TOKEN_PATH = r"/oauth2/v2\.0/token"
DISCOVERY_PATH = r"/\.well-known/openid-configuration"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
PAGE_TEXT = "served by a proxy"  # a sentence of the simulator's HTML page, which must never be logged
ATTEMPTS = 4  # connector_env sets HTTP_MAX_RETRIES=3
HTML_502 = {
    "body": f"<html><title>Bad gateway</title>{PAGE_TEXT}</html>",
    "headers": {"Content-Type": "text/html"},
}


@pytest.fixture(autouse=True)
def fresh_credentials() -> Iterator[None]:
    """Each test starts without cached msal apps, credentials or tokens (they live per process)."""
    clear_credential_cache()
    yield
    clear_credential_cache()


def run_cli(monkeypatch, env: dict[str, str], capsys, caplog) -> tuple[int, str]:
    """Run ``python -m connector run``; return the exit code and everything it printed or logged."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = io.StringIO()
    code = main(["--no-progress", "run"], out=out)
    return code, out.getvalue() + capsys.readouterr().err + caplog.text


def one_mail(sim: Simulator) -> None:
    sim.graph.add([trace("mail-1", "bob@contoso.com", format_datetime(sim.now() - timedelta(minutes=10)))])


def graph_by_managed_identity(sim: Simulator) -> dict[str, str]:
    """Graph through the managed identity endpoint, so only azure-identity (ingestion) asks Entra ID."""
    return {
        "GRAPH_AUTH_MODE": "managed_identity",
        "MANAGED_IDENTITY_CLIENT_ID": sim.managed_identity_client_id,
    }


def assert_no_leak(output: str, sim: Simulator) -> None:
    assert "Traceback" not in output, output
    assert PAGE_TEXT not in output, output
    assert sim.client_secret not in output, output


# --------------------------------------------------------------------------- msal (Graph token)


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        (503, {"times": 2}),
        (500, {"times": 3}),
        (429, {"times": 2, "headers": {"Retry-After": "0"}}),
        ("reset", {"times": 2}),
        ("timeout", {"times": 2, "seconds": 3.0}),
        ("html", {"times": 2}),
    ],
)
@pytest.mark.parametrize("endpoint", [TOKEN_PATH, DISCOVERY_PATH])
def test_a_passing_entra_failure_is_retried_and_the_run_succeeds(
    sim, connector_env, monkeypatch, capsys, caplog, endpoint, fault, options
):
    sim.entra.inject(fault, path=endpoint, **options)

    code, output = run_cli(monkeypatch, {**connector_env, "HTTP_TIMEOUT_SECONDS": "1"}, capsys, caplog)

    assert code == 0, output
    assert not sim.entra.pending_faults()
    assert sim.entra.requests(path=TOKEN_PATH)[-1].status == 200
    assert_no_leak(output, sim)
    if fault == "timeout":
        # Let the simulator finish the requests the client gave up on, so their log entries land
        # in this test and not in the next one's request counts.
        time.sleep(float(options["seconds"]))


@pytest.mark.parametrize("endpoint", [TOKEN_PATH, DISCOVERY_PATH])
def test_entra_still_answering_503_exits_6_quoting_entra(
    sim, connector_env, monkeypatch, capsys, caplog, endpoint
):
    sim.entra.inject(503, path=endpoint, times=None)

    code, output = run_cli(monkeypatch, connector_env, capsys, caplog)

    assert code == ErrorKind.TRANSIENT.exit_code, output
    assert "cannot reach the Entra ID authority" in output
    assert f"still failing after {ATTEMPTS} attempts: HTTP 503 temporarily_unavailable: AADSTS90033" in output
    # Counted by answer: a request the previous test's "timeout" fault held open is logged when the
    # simulator finally answers it, which can be after this test's reset.
    assert len([r for r in sim.entra.requests(path=endpoint) if r.status == 503]) == ATTEMPTS
    assert_no_leak(output, sim)


def test_retry_after_from_entra_is_honoured(sim, connector_env, monkeypatch, capsys, caplog):
    sim.entra.inject(429, path=TOKEN_PATH, headers={"Retry-After": "1"})

    code, output = run_cli(monkeypatch, connector_env, capsys, caplog)

    assert code == 0, output
    first, second = sim.entra.requests(path=TOKEN_PATH)[:2]
    assert (first.status, second.status) == (429, 200)
    assert second.time - first.time >= 0.9


def test_retry_after_longer_than_a_run_waits_for_entra_exits_6_at_once(
    sim, connector_env, monkeypatch, capsys, caplog
):
    sim.entra.inject(429, path=TOKEN_PATH, headers={"Retry-After": "600"}, times=None)
    started = time.monotonic()

    code, output = run_cli(monkeypatch, connector_env, capsys, caplog)

    assert code == ErrorKind.TRANSIENT.exit_code, output
    assert time.monotonic() - started < 30
    assert len(sim.entra.requests(path=TOKEN_PATH)) == 1
    assert "HTTP 429 temporarily_unavailable" in output
    assert "asked to retry after 600 s" in output


def test_a_refusal_without_error_description_exits_3_with_the_documented_message(
    sim, connector_env, monkeypatch, capsys, caplog
):
    sim.entra.inject(401, path=TOKEN_PATH, body={"error": "invalid_client"}, times=None)

    code, output = run_cli(monkeypatch, connector_env, capsys, caplog)

    assert code == ErrorKind.PERMISSION.exit_code, output
    assert (
        f"Entra ID refused a token for {GRAPH_SCOPE} (client {sim.client_id}): invalid_client. Check"
        in output
    )
    assert len(sim.entra.requests(path=TOKEN_PATH)) == 1  # a refusal is not retried
    assert_no_leak(output, sim)


@pytest.mark.parametrize(
    ("fault", "options"),
    [
        ("html", {}),
        (502, HTML_502),
        (200, {"body": "[]"}),
    ],
)
@pytest.mark.parametrize("endpoint", [TOKEN_PATH, DISCOVERY_PATH])
def test_a_page_that_is_not_entra_json_exits_6_without_logging_it(
    sim, connector_env, monkeypatch, capsys, caplog, endpoint, fault, options
):
    sim.entra.inject(fault, path=endpoint, times=None, **options)

    code, output = run_cli(monkeypatch, connector_env, capsys, caplog)

    assert code == ErrorKind.TRANSIENT.exit_code, output
    assert f"still failing after {ATTEMPTS} attempts" in output
    assert "not Entra ID's JSON" in output
    assert_no_leak(output, sim)


# --------------------------------------------------------------------------- azure-identity (ingestion token)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        (503, "HTTP 503 temporarily_unavailable: AADSTS90033"),
        ("html", "not Entra ID's JSON"),
    ],
)
def test_ingestion_token_from_a_failing_entra_exits_6_quoting_entra(
    sim, connector_env, monkeypatch, capsys, caplog, fault, words
):
    one_mail(sim)
    sim.entra.inject(fault, path=TOKEN_PATH, times=None)

    code, output = run_cli(monkeypatch, {**connector_env, **graph_by_managed_identity(sim)}, capsys, caplog)

    assert code == ErrorKind.TRANSIENT.exit_code, output
    assert "could not get a Logs Ingestion token" in output
    assert words in output
    assert len(sim.entra.requests(path=TOKEN_PATH)) == ATTEMPTS  # our retries, not multiplied by azure-core's
    assert not sim.ingestion.rows()
    assert_no_leak(output, sim)


def test_ingestion_token_after_a_passing_entra_outage_is_retried_and_rows_arrive(
    sim, connector_env, monkeypatch, capsys, caplog
):
    one_mail(sim)
    sim.entra.inject("html", path=TOKEN_PATH, times=2)

    code, output = run_cli(monkeypatch, {**connector_env, **graph_by_managed_identity(sim)}, capsys, caplog)

    assert code == 0, output
    assert len(sim.ingestion.rows()) == 1
    assert_no_leak(output, sim)


# --------------------------------------------------------------------------- managed identity endpoint


@pytest.mark.parametrize(("fault", "options"), [("html", {}), ("reset", {}), (502, HTML_502)])
def test_managed_identity_endpoint_failing_for_graph_exits_6_without_a_traceback(
    sim, connector_env, monkeypatch, capsys, caplog, fault, options
):
    sim.managed_identity.inject(fault, times=None, **options)

    code, output = run_cli(monkeypatch, {**connector_env, **graph_by_managed_identity(sim)}, capsys, caplog)

    assert code == ErrorKind.TRANSIENT.exit_code, output
    assert f"could not get a token for {GRAPH_SCOPE}" in output
    assert "Traceback" not in output, output


def test_managed_identity_page_for_ingestion_exits_6_without_a_traceback(
    sim, connector_env, monkeypatch, capsys, caplog
):
    one_mail(sim)
    env = {
        **connector_env,
        "AZURE_AUTH_MODE": "managed_identity",
        "MANAGED_IDENTITY_CLIENT_ID": sim.managed_identity_client_id,
    }
    sim.managed_identity.inject("html", times=None)

    code, output = run_cli(monkeypatch, env, capsys, caplog)

    assert code == ErrorKind.TRANSIENT.exit_code, output
    assert "the managed identity endpoint (IDENTITY_ENDPOINT) answered with a body that is not JSON" in output
    assert_no_leak(output, sim)
    assert not sim.ingestion.rows()
