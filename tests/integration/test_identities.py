"""Which identity runs where: the developer's own `az login`, and no managed identity on a laptop."""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connector.auth import clear_credential_cache
from connector.cli import main
from connector.errors import ErrorKind
from connector.runner import run_feed
from connector.simulator.entra import MONITOR_RESOURCE
from tests.fakes.memory import trace

pytestmark = pytest.mark.integration


def fake_az(directory: Path, tokens: dict[str, str]) -> Path:
    """An ``az`` that answers ``az account get-access-token --resource R`` as the real one does.

    AzureCliCredential shells out to it, so the SDK's own parsing and error paths run.
    """
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "az"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"tokens = {json.dumps(tokens)}\n"
        "args = sys.argv[1:]\n"
        "resource = args[args.index('--resource') + 1].rstrip('/')\n"
        "if resource not in tokens:\n"
        "    sys.stderr.write('ERROR: no token for ' + resource + '\\n'); sys.exit(1)\n"
        "print(json.dumps({'accessToken': tokens[resource], 'expires_on': 4102444800, "
        "'expiresOn': '2100-01-01 00:00:00.000000', 'tokenType': 'Bearer'}))\n"
    )
    script.chmod(0o755)
    return directory


def at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def fresh_credentials():
    clear_credential_cache()
    yield
    clear_credential_cache()


def test_developer_mode_uploads_with_the_az_login_token(sim, connector_env, tmp_path, monkeypatch):
    token, _ = sim.entra.issue_token("developer@contoso.com", MONITOR_RESOURCE, object_id="dev-user")
    bin_dir = fake_az(tmp_path / "bin", {MONITOR_RESOURCE: token})
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])

    report = run_feed({**connector_env, "AZURE_AUTH_MODE": "developer"})

    assert report.ok, report.error
    assert len(sim.ingestion.rows()) == 1


def test_developer_mode_without_az_says_to_sign_in(sim, connector_env, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])

    report = run_feed({**connector_env, "AZURE_AUTH_MODE": "developer"})

    assert report.error is not None
    assert "Azure CLI not found" in str(report.error)


def test_a_missing_managed_identity_fails_at_once_with_the_laptop_hint(sim, connector_env, monkeypatch):
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{closed_port()}")
    sim.graph.add([trace("mail-1", "bob@contoso.com", at(sim.now() - timedelta(minutes=10)))])
    started = time.monotonic()

    report = run_feed({**connector_env, "AZURE_AUTH_MODE": "managed_identity"})

    assert time.monotonic() - started < 10
    assert report.error is not None
    assert report.error.kind is ErrorKind.SETTING
    assert "no managed identity on this machine" in str(report.error)
    assert "AZURE_AUTH_MODE=developer" in str(report.error)


def test_status_from_a_laptop_without_a_managed_identity_says_so_at_once(connector_env, monkeypatch, capsys):
    env = {k: v for k, v in connector_env.items() if k != "STORAGE_CONNECTION_STRING"}
    # https (a token credential needs it) on a closed port: nothing is sent before the token anyway.
    storage = f"https://127.0.0.1:{closed_port()}/devstoreaccount1"
    env.update({"STORAGE_ACCOUNT_URL": storage, "AZURE_AUTH_MODE": "managed_identity"})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("STORAGE_CONNECTION_STRING", raising=False)
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()

    code = main(["--no-progress", "status"], out=io.StringIO())

    assert time.monotonic() - started < 10
    assert code == 2
    assert "no managed identity on this machine" in capsys.readouterr().err
