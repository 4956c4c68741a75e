"""Many tenants, one simulator: Entra per tenant, Graph per token tenant, a DCR and workspace per tenant.

Everything goes through the real msal / azure-identity / azure-monitor code over HTTPS.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientAssertionCredential, ClientSecretCredential
from azure.monitor.ingestion import LogsIngestionClient
from azure.monitor.query import LogsQueryClient, LogsQueryResult

from connector.simulator import Claims, SimulatedTenant, Simulator, generate_traffic
from connector.simulator.entra import TOKEN_EXCHANGE_APP_ID
from connector.simulator.graph import DOMAINS_PATH, MESSAGE_TRACES_PATH
from connector.workspace import stored_query

pytestmark = pytest.mark.integration

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MONITOR_SCOPE = "https://monitor.azure.com/.default"


def _secret_app(sim: Simulator, tenant: SimulatedTenant) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        sim.client_id,
        client_credential=sim.client_secret,
        authority=tenant.authority,
        instance_discovery=False,
    )


def _graph_token(sim: Simulator, tenant: SimulatedTenant) -> str:
    result = _secret_app(sim, tenant).acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result
    return str(result["access_token"])


def _traces(sim: Simulator, token: str, hours: int = 3) -> requests.Response:
    now = sim.now()
    window = (
        f"receivedDateTime ge {(now - timedelta(hours=hours)):%Y-%m-%dT%H:%M:%SZ} and "
        f"receivedDateTime le {now:%Y-%m-%dT%H:%M:%SZ}"
    )
    return requests.get(
        sim.graph.url + MESSAGE_TRACES_PATH,
        params={"$filter": window},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _traffic(sim: Simulator, tenant: SimulatedTenant, messages: int, seed: int) -> list[dict[str, Any]]:
    now = sim.now()
    return generate_traffic(
        now - timedelta(hours=2),
        now - timedelta(minutes=5),
        messages,
        seed=seed,
        local_domains=tenant.local_domains,
    )


def _ids(response: requests.Response) -> set[tuple[str, str]]:
    assert response.status_code == 200, response.text
    return {(row["id"], row["recipientAddress"]) for row in response.json()["value"]}


@pytest.fixture
def other(sim: Simulator) -> SimulatedTenant:
    return sim.add_tenant(domains=("tailspin.example",))


# --------------------------------------------------------------------------- Entra


def test_each_tenant_issues_its_own_tokens_to_the_same_app(sim: Simulator, other: SimulatedTenant) -> None:
    seen = {}
    for tenant in sim.tenants:
        claims = sim.entra.validate_bearer(
            "Bearer " + _graph_token(sim, tenant), "https://graph.microsoft.com"
        )
        assert isinstance(claims, Claims)
        assert claims.tid == tenant.tenant_id
        assert claims.raw["iss"] == f"https://sts.windows.net/{tenant.tenant_id}/"
        assert claims.appid == sim.client_id
        assert "ExchangeMessageTrace.Read.All" in claims.roles
        seen[tenant.tenant_id] = claims.raw["oid"]
    # One service principal per tenant: same app, another object id.
    assert len(set(seen.values())) == 2
    discovery = requests.get(f"{other.authority}/v2.0/.well-known/openid-configuration", timeout=5).json()
    assert discovery["token_endpoint"] == f"{other.authority}/oauth2/v2.0/token"
    assert discovery["issuer"] == f"{other.authority}/v2.0"


def test_an_unknown_tenant_still_fails_discovery(sim: Simulator, other: SimulatedTenant) -> None:
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal.ConfidentialClientApplication(
            sim.client_id,
            client_credential=sim.client_secret,
            authority=f"{sim.entra.url}/11111111-2222-3333-4444-555555555555",
            instance_discovery=False,
        )


def test_the_certificate_app_signs_in_to_an_added_tenant(sim: Simulator, other: SimulatedTenant) -> None:
    cert = sim.client_certificate
    app = msal.ConfidentialClientApplication(
        sim.cert_client_id,
        client_credential={"private_key": cert.private_key_pem.decode(), "thumbprint": cert.thumbprint},
        authority=other.authority,
        instance_discovery=False,
    )
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result
    claims = sim.entra.validate_bearer("Bearer " + result["access_token"], "https://graph.microsoft.com")
    assert isinstance(claims, Claims)
    assert claims.tid == other.tenant_id


def test_withdrawn_consent_refuses_one_tenant_only(sim: Simulator, other: SimulatedTenant) -> None:
    other.withdraw_consent()

    refused = _secret_app(sim, other).acquire_token_for_client([GRAPH_SCOPE])
    assert refused["error"] == "unauthorized_client"
    assert refused["error_codes"] == [700016]
    assert refused["error_description"].startswith(
        f"AADSTS700016: Application with identifier '{sim.client_id}' was not found in the directory "
        f"'{other.tenant_id}'."
    )
    assert "access_token" in _secret_app(sim, sim.default_tenant).acquire_token_for_client([GRAPH_SCOPE])

    other.grant_consent()
    assert "access_token" in _secret_app(sim, other).acquire_token_for_client([GRAPH_SCOPE])
    assert sim.entra.token_request_count(sim.client_id, tenant=other.tenant_id) == 2
    assert sim.entra.token_request_count(sim.client_id, tenant=sim.tenant_id) == 1


def test_the_home_tenant_can_lose_consent_too_and_reset_restores_it(sim: Simulator) -> None:
    sim.default_tenant.withdraw_consent(sim.client_id)
    assert _secret_app(sim, sim.default_tenant).acquire_token_for_client([GRAPH_SCOPE])["error_codes"] == [
        700016
    ]
    sim.reset()
    assert "access_token" in _secret_app(sim, sim.default_tenant).acquire_token_for_client([GRAPH_SCOPE])


# --------------------------------------------------------------------------- federated credential


@pytest.fixture
def identity_env(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.managed_identity.endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", sim.managed_identity.identity_header)


def _exchange_token(sim: Simulator) -> str:
    from azure.identity import ManagedIdentityCredential

    return str(ManagedIdentityCredential().get_token("api://AzureADTokenExchange/.default").token)


def test_the_managed_identity_token_for_token_exchange_is_what_entra_issues(
    sim: Simulator, identity_env: None
) -> None:
    token = _exchange_token(sim)

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == TOKEN_EXCHANGE_APP_ID
    assert claims["iss"] == f"{sim.entra.url}/{sim.tenant_id}/v2.0" == sim.entra.exchange_issuer()
    assert claims["sub"] == claims["oid"] == sim.managed_identity_object_id
    assert claims["azp"] == sim.managed_identity_client_id
    assert claims["ver"] == "2.0"
    assert sim.managed_identity.requests()[-1].query["resource"] == "api://AzureADTokenExchange"
    # Only a client assertion: no resource takes it as a bearer token.
    assert sim.entra.validate_bearer("Bearer " + token, TOKEN_EXCHANGE_APP_ID) == "wrong_issuer"


def test_a_federated_assertion_signs_the_app_in_to_every_tenant(
    sim: Simulator, other: SimulatedTenant, identity_env: None
) -> None:
    for tenant in sim.tenants:
        app = msal.ConfidentialClientApplication(
            sim.federated_client_id,
            client_credential={"client_assertion": lambda: _exchange_token(sim)},
            authority=tenant.authority,
            instance_discovery=False,
        )
        result = app.acquire_token_for_client([GRAPH_SCOPE])
        assert "access_token" in result, result
        claims = sim.entra.validate_bearer("Bearer " + result["access_token"], "https://graph.microsoft.com")
        assert isinstance(claims, Claims)
        assert (claims.tid, claims.appid, claims.raw["appidacr"]) == (tenant.tenant_id, sim.client_id, "2")
    record = sim.entra.token_requests()[-1]
    assert (record.credential, record.status) == ("assertion", 200)
    form = dict(pair.split("=", 1) for pair in sim.entra.requests(path="token")[-1].body.decode().split("&"))
    assert form["client_assertion_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"


def test_azure_identity_client_assertion_credential_works_too(
    sim: Simulator, other: SimulatedTenant, identity_env: None
) -> None:
    credential = ClientAssertionCredential(
        other.tenant_id,
        sim.federated_client_id,
        lambda: _exchange_token(sim),
        authority=sim.entra.url,
        disable_instance_discovery=True,
    )
    token = credential.get_token(MONITOR_SCOPE)
    claims = sim.entra.validate_bearer("Bearer " + token.token, "https://monitor.azure.com")
    assert isinstance(claims, Claims)
    assert claims.tid == other.tenant_id


def _assert_with(sim: Simulator, assertion: str, client_id: str | None = None) -> dict[str, Any]:
    app = msal.ConfidentialClientApplication(
        client_id or sim.federated_client_id,
        client_credential={"client_assertion": lambda: assertion},
        authority=sim.authority,
        instance_discovery=False,
    )
    result: dict[str, Any] = app.acquire_token_for_client([GRAPH_SCOPE])
    return result


def test_an_app_without_a_federated_credential_gets_aadsts70021(sim: Simulator, identity_env: None) -> None:
    result = _assert_with(sim, _exchange_token(sim), client_id=sim.cert_client_id)

    assert result["error"] == "invalid_request"
    assert result["error_codes"] == [70021]
    assert result["error_description"].startswith(
        "AADSTS70021: No matching federated identity record found for presented assertion. "
        f"Assertion Issuer: '{sim.entra.exchange_issuer()}'. Assertion Subject: '{sim.managed_identity_object_id}'."
    )


def test_another_identity_gets_aadsts700213_for_its_subject(sim: Simulator, identity_env: None) -> None:
    stranger = sim.entra.register_managed_identity()
    token, _ = sim.entra.issue_exchange_token(stranger.client_id, stranger.object_id)

    result = _assert_with(sim, token)

    assert result["error"] == "invalid_client"
    assert result["error_codes"] == [700213]
    assert f"presented assertion subject '{stranger.object_id}'" in result["error_description"]


def test_an_upper_cased_subject_does_not_match(sim: Simulator) -> None:
    token, _ = sim.entra.issue_exchange_token("x", sim.managed_identity_object_id.upper())
    assert _assert_with(sim, token)["error_codes"] == [700213]  # matching is case-sensitive


def test_other_issuer_audience_signature_and_expiry_are_refused(sim: Simulator, identity_env: None) -> None:
    good = _exchange_token(sim)
    # A v1 token of the same identity (another issuer).
    monitor_token, _ = sim.entra.issue_token(
        sim.managed_identity_client_id, "https://monitor.azure.com", object_id=sim.managed_identity_object_id
    )
    assert _assert_with(sim, monitor_token)["error_codes"] == [700211]

    forged = jwt.encode(jwt.decode(good, options={"verify_signature": False}), "not-entras-key-" * 3, "HS256")
    assert _assert_with(sim, forged)["error_codes"] == [700027]

    expired, _ = sim.entra.issue_exchange_token(
        sim.managed_identity_client_id, sim.managed_identity_object_id, lifetime=-3600
    )
    result = _assert_with(sim, expired)
    assert result["error_codes"] == [700024]
    assert "Client assertion is not within its valid time range." in result["error_description"]

    app = sim.entra.register_app(secret="s")
    sim.entra.add_federated_credential(
        app.client_id,
        issuer=sim.entra.exchange_issuer(),
        subject=sim.managed_identity_object_id,
        audiences=("api://other",),
    )
    assert _assert_with(sim, good, client_id=app.client_id)["error_codes"] == [700212]


# --------------------------------------------------------------------------- Graph


def test_a_token_of_each_tenant_reads_only_that_tenants_records(
    sim: Simulator, other: SimulatedTenant
) -> None:
    home_rows = _traffic(sim, sim.default_tenant, 20, seed=1)
    other_rows = _traffic(sim, other, 30, seed=2)
    sim.graph.add(home_rows)
    other.graph.add(other_rows)

    home = _ids(_traces(sim, _graph_token(sim, sim.default_tenant)))
    theirs = _ids(_traces(sim, _graph_token(sim, other)))

    assert home == {(r["id"], r["recipientAddress"]) for r in home_rows}
    assert theirs == {(r["id"], r["recipientAddress"]) for r in other_rows}
    assert len(other.graph.rows()) == len(other_rows)
    assert len(sim.graph.rows()) == len(home_rows)
    assert len(sim.graph.requests(path="messageTraces")) == 1
    assert len(other.graph.requests(path="messageTraces")) == 1
    assert len(sim.graph.all_requests(path="messageTraces")) == 2


def test_each_tenant_lists_its_own_domains(sim: Simulator, other: SimulatedTenant) -> None:
    response = requests.get(
        sim.graph.url + DOMAINS_PATH,
        headers={"Authorization": "Bearer " + _graph_token(sim, other)},
        timeout=5,
    )
    assert response.status_code == 200
    names = [(d["id"], d["isDefault"], d["isInitial"]) for d in response.json()["value"]]
    assert names == [("tailspin.example", True, False), (f"{other.name}.onmicrosoft.com", False, True)]


def test_one_tenants_quota_never_throttles_another(sim: Simulator) -> None:
    tight = sim.add_tenant(graph_quota=(2, 300.0))
    token, home_token = _graph_token(sim, tight), _graph_token(sim, sim.default_tenant)

    statuses = [_traces(sim, token).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    throttled = _traces(sim, token)
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert "allows 2 requests per 300 seconds per tenant" in throttled.json()["error"]["message"]
    assert [_traces(sim, home_token).status_code for _ in range(3)] == [200, 200, 200]
    assert (tight.graph.quota.limit, sim.graph.quota.limit) == (2, 100)


def test_faults_and_permissions_stay_with_their_tenant(sim: Simulator, other: SimulatedTenant) -> None:
    token, home_token = _graph_token(sim, other), _graph_token(sim, sim.default_tenant)
    other.graph.inject(503, times=2)

    assert _traces(sim, home_token).status_code == 200
    assert [_traces(sim, token).status_code for _ in range(3)] == [503, 503, 200]
    assert other.graph.pending_faults() == []
    assert sim.graph.pending_faults() == []

    other.graph.permission_granted = False
    assert _traces(sim, token).status_code == 403
    assert _traces(sim, home_token).status_code == 200
    other.graph.service_principal_missing = True
    assert _traces(sim, token).status_code == 401
    sim.graph.inject(500)
    assert _traces(sim, home_token).status_code == 500
    assert [r.fault for r in other.graph.requests()] == ["503", "503", None, None, None]


def test_publication_delay_is_per_tenant(sim: Simulator) -> None:
    slow = sim.add_tenant(publication_delay=timedelta(days=1))
    slow.graph.add(_traffic(sim, slow, 5, seed=3))
    sim.graph.add(_traffic(sim, sim.default_tenant, 5, seed=4))

    assert _ids(_traces(sim, _graph_token(sim, slow))) == set()
    assert _ids(_traces(sim, _graph_token(sim, sim.default_tenant)))
    slow.graph.publish_all()
    assert _ids(_traces(sim, _graph_token(sim, slow)))


def test_reset_forgets_added_tenants_and_their_tokens(sim: Simulator) -> None:
    gone = sim.add_tenant()
    token = _graph_token(sim, gone)
    sim.reset()

    assert sim.tenants == (sim.default_tenant,)
    assert sim.entra.validate_bearer("Bearer " + token, "https://graph.microsoft.com") == "wrong_issuer"
    refused = _traces(sim, token)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "InvalidAuthenticationToken"


# --------------------------------------------------------------------------- ingestion and query


def _mail_row(sim: Simulator, row_id: str, **extra: Any) -> dict[str, Any]:
    now = sim.now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "TimeGenerated": now,
        "Received": now,
        "MessageTraceId": row_id,
        "RecipientAddress": "user@contoso.com",
        "Status": "Delivered",
        "RowId": row_id,
        **extra,
    }


def _upload(sim: Simulator, credential: ClientSecretCredential, dcr: str, rows: list[dict[str, Any]]) -> None:
    with LogsIngestionClient(sim.ingestion.url, credential, connection_verify=sim.ca_bundle_path) as client:
        client.upload(dcr, sim.stream_name, rows)  # type: ignore[arg-type]


def _stored(
    client: LogsQueryClient, workspace: str, row_ids: list[str], query: str | None = None
) -> set[str]:
    window = (datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1))
    result = client.query_workspace(
        workspace, query or stored_query("EmailEvents_CL", row_ids), timespan=window
    )
    assert isinstance(result, LogsQueryResult)
    return {str(row[0]) for table in result.tables for row in table.rows}


def test_rows_sent_to_a_tenants_dcr_appear_in_its_workspace_only(
    sim: Simulator, other: SimulatedTenant, credential: ClientSecretCredential, query_client: LogsQueryClient
) -> None:
    _upload(sim, credential, other.dcr_immutable_id, [_mail_row(sim, "theirs")])
    _upload(sim, credential, sim.dcr_immutable_id, [_mail_row(sim, "ours")])

    assert [r["RowId"] for r in other.ingestion.rows()] == ["theirs"]
    assert [r["RowId"] for r in sim.ingestion.rows()] == ["ours"]
    assert (other.ingestion.request_count, sim.ingestion.request_count) == (1, 1)
    assert other.ingestion.batches()[0].dcr == other.dcr_immutable_id
    assert _stored(query_client, other.workspace_id, ["theirs", "ours"]) == {"theirs"}
    assert _stored(query_client, sim.workspace_id, ["theirs", "ours"]) == {"ours"}
    assert len(sim.logs_query.workspace_requests(other.workspace_id)) == 1
    assert len(sim.logs_query.requests()) == 1


def test_ingestion_faults_and_roles_stay_with_their_dcr(
    sim: Simulator, other: SimulatedTenant, credential: ClientSecretCredential
) -> None:
    other.ingestion.inject(400, times=None)
    _upload(sim, credential, sim.dcr_immutable_id, [_mail_row(sim, "ours")])
    with pytest.raises(HttpResponseError):
        _upload(sim, credential, other.dcr_immutable_id, [_mail_row(sim, "theirs")])
    other.ingestion.clear_faults()
    sim.ingestion.role_assigned = False
    _upload(sim, credential, other.dcr_immutable_id, [_mail_row(sim, "theirs")])

    assert [r["RowId"] for r in other.ingestion.rows()] == ["theirs"]
    assert [r.status for r in other.ingestion.requests(path="dataCollectionRules")] == [400, 204]
    assert [r.status for r in sim.ingestion.requests(path="dataCollectionRules")] == [204]


def test_the_shared_table_is_filtered_by_an_equality_where(
    sim: Simulator, credential: ClientSecretCredential, query_client: LogsQueryClient
) -> None:
    _upload(
        sim,
        credential,
        sim.dcr_immutable_id,
        [
            _mail_row(sim, "a", RecipientAddress="x@one.example"),
            _mail_row(sim, "b", RecipientAddress="y@two.example"),
        ],
    )
    ids = '"a", "b"'

    separate = f'EmailEvents_CL\n| where RecipientAddress == "x@one.example"\n| where RowId in ({ids})\n| project RowId'
    joined = (
        f'EmailEvents_CL\n| where RowId in ({ids}) and RecipientAddress == "y@two.example"\n| project RowId'
    )
    assert _stored(query_client, sim.workspace_id, [], separate) == {"a"}
    assert _stored(query_client, sim.workspace_id, [], joined) == {"b"}
    with pytest.raises(HttpResponseError, match="SemanticError"):
        _stored(
            query_client,
            sim.workspace_id,
            [],
            f'EmailEvents_CL | where Nope == "x" | where RowId in ({ids}) | project RowId',
        )


def test_shared_table_rows_of_several_tenants_are_told_apart_by_source_tenant_id(
    sim: Simulator, other: SimulatedTenant, credential: ClientSecretCredential, query_client: LogsQueryClient
) -> None:
    _upload(
        sim,
        credential,
        sim.dcr_immutable_id,
        [
            _mail_row(sim, "h", SourceTenantId=sim.tenant_id),
            _mail_row(sim, "o", SourceTenantId=other.tenant_id),
        ],
    )
    # The connector's own verification query for a shared table, and the filter before the ids.
    assert _stored(
        query_client, sim.workspace_id, [], stored_query("EmailEvents_CL", ["h", "o"], other.tenant_id)
    ) == {"o"}
    query = f'EmailEvents_CL\n| where SourceTenantId == "{sim.tenant_id}"\n| where RowId in ("h", "o")\n| project RowId'
    assert _stored(query_client, sim.workspace_id, [], query) == {"h"}


# --------------------------------------------------------------------------- TENANTS entries


def test_tenant_entries_follow_the_tenants_setting(sim: Simulator, other: SimulatedTenant) -> None:
    assert other.name == "t-" + other.tenant_id.replace("-", "")[:8]
    assert other.tenant_entry() == {
        "name": other.name,
        "tenantId": other.tenant_id,
        "ingestionEndpoint": sim.ingestion.url,
        "dcrImmutableId": other.dcr_immutable_id,
        "workspaceId": other.workspace_id,
        "localDomains": ["tailspin.example"],
    }
    assert other.tenant_entry(own_destination=False) == {
        "name": other.name,
        "tenantId": other.tenant_id,
        "localDomains": ["tailspin.example"],
    }
    setting = json.loads(sim.tenants_setting(own_destination=False))
    assert [e["tenantId"] for e in setting] == [sim.tenant_id, other.tenant_id]
    assert sim.tenant(other.name) is other
    assert sim.tenant(other.tenant_id.upper()) is other


def test_names_and_ids_are_checked(sim: Simulator, other: SimulatedTenant) -> None:
    named = sim.add_tenant(name="fabrikam-eu")
    assert named.name == "fabrikam-eu"
    for bad in ("Upper", "two--dashes", "-edge", "x" * 25):
        with pytest.raises(ValueError, match="TENANTS rules"):
            sim.add_tenant(name=bad)
    with pytest.raises(ValueError, match="named"):
        sim.add_tenant(name="fabrikam-eu")
    with pytest.raises(ValueError, match="exists"):
        sim.add_tenant(other.tenant_id)


def test_dcrs_and_workspaces_refuse_a_customer_tenants_token(
    sim: Simulator, other: SimulatedTenant, query_client: LogsQueryClient
) -> None:
    # The deployment identity (home tenant) writes everywhere; a customer tenant's credential must not.
    customer = ClientSecretCredential(
        other.tenant_id,
        sim.client_id,
        sim.client_secret,
        authority=sim.entra.url,
        disable_instance_discovery=True,
    )
    for dcr in (sim.dcr_immutable_id, other.dcr_immutable_id):
        with pytest.raises(HttpResponseError) as refused:
            _upload(sim, customer, dcr, [_mail_row(sim, "x")])
        assert refused.value.status_code == 401
    assert other.ingestion.rows() == []
    with (
        LogsQueryClient(
            customer,
            endpoint=sim.logs_query.url,
            credential_scopes=["https://api.loganalytics.io/.default"],
            connection_verify=sim.ca_bundle_path,
            retry_total=0,
        ) as client,
        pytest.raises(HttpResponseError, match="InvalidTokenError"),
    ):
        _stored(client, other.workspace_id, ["x"])
