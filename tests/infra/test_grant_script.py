"""infra/scripts/grant-graph-permission.sh against a fake `az`: it grants once and is idempotent."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA
from tests.infra.test_roles import (
    DOMAIN_READ_ROLE_ID,
    GRAPH_APP_ID,
    MESSAGE_TRACE_APP_ID,
    MESSAGE_TRACE_ROLE_ID,
)

SCRIPT = INFRA / "scripts" / "grant-graph-permission.sh"
FAKE_AZ = Path(__file__).with_name("fake_az.py")
GRAPH_SP = "00000000-1111-2222-3333-444444444444"
IDENTITY = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@pytest.fixture
def tenant(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_AZ} "$@"\n')
    az.chmod(0o755)
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "servicePrincipals": [{"id": GRAPH_SP, "appId": GRAPH_APP_ID}],
                "assignments": [],
                "identities": {
                    "rg-msgtrace": [
                        {"principalId": IDENTITY, "tags": {"application": "message-trace-connector"}},
                        {
                            "principalId": "99999999-9999-9999-9999-999999999999",
                            "tags": {"application": "other"},
                        },
                    ]
                },
            }
        )
    )
    log = tmp_path / "az.log"
    log.touch()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env.update(FAKE_AZ_STATE=str(state), FAKE_AZ_LOG=str(log))
    return env, state, log


def _run(env, *args):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def _posts(log: Path) -> list[list[str]]:
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    return [call for call in calls if "POST" in call]


def test_grants_both_roles_and_creates_the_service_principal_once(tenant):
    env, state, log = tenant
    first = _run(env, IDENTITY)
    assert first.returncode == 0, first.stderr
    tenant_state = json.loads(state.read_text())
    assert {sp["appId"] for sp in tenant_state["servicePrincipals"]} == {GRAPH_APP_ID, MESSAGE_TRACE_APP_ID}
    assert [(a["principalId"], a["resourceId"], a["appRoleId"]) for a in tenant_state["assignments"]] == [
        (IDENTITY, GRAPH_SP, MESSAGE_TRACE_ROLE_ID),
        (IDENTITY, GRAPH_SP, DOMAIN_READ_ROLE_ID),
    ]
    assert len(_posts(log)) == 3

    second = _run(env, IDENTITY)
    assert second.returncode == 0, second.stderr
    assert "already granted" in second.stdout
    assert "exists" in second.stdout
    assert len(_posts(log)) == 3, "a second run must change nothing"
    assert json.loads(state.read_text()) == tenant_state


def test_finds_the_identity_by_resource_group(tenant):
    env, state, _ = tenant
    result = _run(env, "--resource-group", "rg-msgtrace")
    assert result.returncode == 0, result.stderr
    assert json.loads(state.read_text())["assignments"][0]["principalId"] == IDENTITY


def test_refuses_a_resource_group_without_the_identity(tenant):
    env, state, log = tenant
    result = _run(env, "--resource-group", "rg-empty")
    assert result.returncode == 1
    assert "expected exactly one managed identity" in result.stderr
    assert _posts(log) == []


@pytest.mark.parametrize("args", [(), ("not-a-guid",), ("--resource-group",)])
def test_bad_arguments(tenant, args):
    env, _, log = tenant
    result = _run(env, *args)
    assert result.returncode == 2
    assert _posts(log) == []
