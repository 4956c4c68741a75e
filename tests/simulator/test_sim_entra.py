"""The fake Entra and managed identity endpoints work with the real msal and azure-identity."""

from __future__ import annotations

import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential, ClientSecretCredential, ManagedIdentityCredential

from connector.simulator import Claims, Simulator

pytestmark = pytest.mark.integration

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MONITOR_SCOPE = "https://monitor.azure.com/.default"


def _msal_app(
    sim: Simulator, credential: object, client_id: str | None = None
) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id or sim.client_id,
        client_credential=credential,
        authority=sim.authority,
        instance_discovery=False,
    )


def test_msal_client_secret_gets_a_valid_graph_token_and_caches_it(sim: Simulator) -> None:
    app = _msal_app(sim, sim.client_secret)

    first = app.acquire_token_for_client([GRAPH_SCOPE])
    second = app.acquire_token_for_client([GRAPH_SCOPE])

    assert first["token_type"] == "Bearer"
    assert first["token_source"] == "identity_provider"
    assert second["token_source"] == "cache"
    assert sim.entra.token_request_count(sim.client_id) == 1
    claims = sim.entra.validate_bearer("Bearer " + first["access_token"], "https://graph.microsoft.com")
    assert isinstance(claims, Claims)
    assert claims.tid == sim.tenant_id
    assert claims.appid == sim.client_id
    assert claims.raw["iss"] == f"https://sts.windows.net/{sim.tenant_id}/"
    assert "ExchangeMessageTrace.Read.All" in claims.roles
    assert (
        sim.entra.validate_bearer("Bearer " + first["access_token"], "https://monitor.azure.com")
        == "wrong_audience"
    )
    record = sim.entra.token_requests()[0]
    assert record.grant_type == "client_credentials"
    assert record.scope == GRAPH_SCOPE
    assert record.credential == "secret"
    # The discovery document msal asked for is the v2.0 one.
    assert sim.entra.requests(path=r"/v2\.0/\.well-known/openid-configuration")


def test_msal_wrong_and_expired_secret_get_aadsts_errors(sim: Simulator) -> None:
    wrong = _msal_app(sim, "not-the-secret").acquire_token_for_client([GRAPH_SCOPE])
    assert wrong["error"] == "invalid_client"
    assert wrong["error_description"].startswith("AADSTS7000215: Invalid client secret provided.")
    assert wrong["error_codes"] == [7000215]

    sim.entra.app(sim.client_id).secret_expired = True
    expired = _msal_app(sim, sim.client_secret).acquire_token_for_client([GRAPH_SCOPE])
    assert expired["error"] == "invalid_client"
    assert expired["error_description"].startswith(
        f"AADSTS7000222: The provided client secret keys for app '{sim.client_id}' are expired."
    )


def test_msal_unknown_client_and_bad_scope(sim: Simulator) -> None:
    unknown = _msal_app(sim, "x", client_id="00000000-0000-0000-0000-000000000bad").acquire_token_for_client(
        [GRAPH_SCOPE]
    )
    assert unknown["error"] == "unauthorized_client"
    assert "AADSTS700016" in unknown["error_description"]

    bad_scope = _msal_app(sim, sim.client_secret).acquire_token_for_client(
        ["https://graph.microsoft.com/User.Read"]
    )
    assert bad_scope["error"] == "invalid_scope"
    assert "AADSTS1002012" in bad_scope["error_description"]


def test_msal_unknown_tenant_fails_discovery(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="Unable to get authority configuration"):
        msal.ConfidentialClientApplication(
            sim.client_id,
            client_credential=sim.client_secret,
            authority=f"{sim.entra.url}/11111111-2222-3333-4444-555555555555",
            instance_discovery=False,
        )


def test_msal_certificate_with_sha1_thumbprint_rs256(sim: Simulator) -> None:
    cert = sim.client_certificate
    app = _msal_app(
        sim,
        {"private_key": cert.private_key_pem.decode(), "thumbprint": cert.thumbprint},
        client_id=sim.cert_client_id,
    )
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert "access_token" in result, result
    assert sim.entra.token_requests()[-1].credential == "assertion"
    claims = sim.entra.validate_bearer("Bearer " + result["access_token"], "https://graph.microsoft.com")
    assert isinstance(claims, Claims)
    assert claims.raw["appidacr"] == "2"


def test_msal_certificate_with_public_certificate_ps256(sim: Simulator) -> None:
    cert = sim.client_certificate
    app = _msal_app(
        sim,
        {"private_key": cert.private_key_pem.decode(), "public_certificate": cert.certificate_pem.decode()},
        client_id=sim.cert_client_id,
    )
    result = app.acquire_token_for_client([MONITOR_SCOPE])
    assert "access_token" in result, result


def test_msal_unregistered_certificate_is_rejected(sim: Simulator) -> None:
    other = sim.ca.create_client_certificate("someone-else")
    app = _msal_app(
        sim,
        {"private_key": other.private_key_pem.decode(), "thumbprint": other.thumbprint},
        client_id=sim.cert_client_id,
    )
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert result["error"] == "invalid_client"
    assert "AADSTS700027" in result["error_description"]


def test_msal_certificate_signed_by_the_wrong_key_is_rejected(sim: Simulator) -> None:
    other = sim.ca.create_client_certificate("impostor")
    app = _msal_app(
        sim,
        # Right thumbprint, wrong private key: the signature cannot verify.
        {"private_key": other.private_key_pem.decode(), "thumbprint": sim.client_certificate.thumbprint},
        client_id=sim.cert_client_id,
    )
    result = app.acquire_token_for_client([GRAPH_SCOPE])
    assert result["error"] == "invalid_client"
    assert "AADSTS7000274" in result["error_description"]


def test_azure_identity_client_secret_credential(sim: Simulator) -> None:
    credential = ClientSecretCredential(
        sim.tenant_id,
        sim.client_id,
        sim.client_secret,
        authority=sim.entra.url,
        disable_instance_discovery=True,
    )
    token = credential.get_token(MONITOR_SCOPE)
    again = credential.get_token(MONITOR_SCOPE)
    assert token.token == again.token
    assert sim.entra.token_request_count(sim.client_id) == 1
    assert isinstance(sim.entra.validate_bearer("Bearer " + token.token, "https://monitor.azure.com"), Claims)

    bad = ClientSecretCredential(
        sim.tenant_id, sim.client_id, "wrong", authority=sim.entra.url, disable_instance_discovery=True
    )
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        bad.get_token(MONITOR_SCOPE)


def test_azure_identity_certificate_credential(sim: Simulator) -> None:
    credential = CertificateCredential(
        sim.tenant_id,
        sim.cert_client_id,
        certificate_path=str(sim.client_certificate.pem_path),
        authority=sim.entra.url,
        disable_instance_discovery=True,
    )
    token = credential.get_token(GRAPH_SCOPE)
    claims = sim.entra.validate_bearer("Bearer " + token.token, "https://graph.microsoft.com")
    assert isinstance(claims, Claims)
    assert claims.appid == sim.cert_client_id


def test_managed_identity_credential_app_service(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    env = sim.connector_env()
    monkeypatch.setenv("IDENTITY_ENDPOINT", env["IDENTITY_ENDPOINT"])
    monkeypatch.setenv("IDENTITY_HEADER", env["IDENTITY_HEADER"])

    credential = ManagedIdentityCredential()
    token = credential.get_token(MONITOR_SCOPE)
    credential.get_token(MONITOR_SCOPE)

    claims = sim.entra.validate_bearer("Bearer " + token.token, "https://monitor.azure.com")
    assert isinstance(claims, Claims)
    assert claims.appid == sim.managed_identity_client_id
    assert sim.managed_identity.request_count() == 1  # cached by msal
    record = sim.managed_identity.requests()[0]
    assert record.query == {"api-version": "2019-08-01", "resource": "https://monitor.azure.com"}
    assert record.headers["metadata"] == "true"


def test_managed_identity_wrong_header_and_unknown_user_assigned(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_ENDPOINT", sim.managed_identity.endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", "wrong")
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential().get_token(MONITOR_SCOPE)

    monkeypatch.setenv("IDENTITY_HEADER", sim.managed_identity.identity_header)
    with pytest.raises(ClientAuthenticationError, match="No User Assigned"):
        ManagedIdentityCredential(client_id="99999999-9999-9999-9999-999999999999").get_token(MONITOR_SCOPE)


def test_short_token_lifetime_makes_msal_fetch_again(sim: Simulator) -> None:
    # msal treats a token with < 5 minutes left as expired, so 120 s means "always refresh".
    sim.entra.token_lifetime = 120
    app = _msal_app(sim, sim.client_secret)
    app.acquire_token_for_client([GRAPH_SCOPE])
    second = app.acquire_token_for_client([GRAPH_SCOPE])
    assert second["token_source"] == "identity_provider"
    assert sim.entra.token_request_count(sim.client_id) == 2


def test_expired_and_missing_tokens_are_rejected(sim: Simulator, graph_token: str) -> None:
    assert sim.entra.validate_bearer(None, "https://graph.microsoft.com") == "missing"
    assert sim.entra.validate_bearer("Bearer abc.def", "https://graph.microsoft.com") == "malformed"
    assert isinstance(
        sim.entra.validate_bearer("Bearer " + graph_token, "https://graph.microsoft.com/"), Claims
    )
    old, _ = sim.entra.issue_token(sim.client_id, "https://graph.microsoft.com", lifetime=-10)
    assert sim.entra.validate_bearer("Bearer " + old, "https://graph.microsoft.com") == "expired"
    sim.entra.expire_all_tokens()
    assert sim.entra.validate_bearer("Bearer " + graph_token, "https://graph.microsoft.com") == "expired"


def test_token_endpoint_rejects_other_grants(sim: Simulator) -> None:
    response = requests.post(
        f"{sim.authority}/oauth2/v2.0/token",
        data={"grant_type": "password", "client_id": sim.client_id},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


def test_token_endpoint_accepts_the_client_secret_as_http_basic(sim: Simulator) -> None:
    response = requests.post(
        f"{sim.authority}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": GRAPH_SCOPE},
        auth=(sim.client_id, sim.client_secret),
        timeout=5,
    )
    assert response.status_code == 200, response.text
    assert isinstance(
        sim.entra.validate_bearer("Bearer " + response.json()["access_token"], "https://graph.microsoft.com"),
        Claims,
    )
    assert sim.entra.token_requests()[-1].credential == "secret"


@pytest.mark.parametrize("status", [429, 503])
def test_injected_throttling_and_outages_answer_in_entras_error_shape(sim: Simulator, status: int) -> None:
    sim.entra.inject(status, path="token", headers={"Retry-After": "3"})

    response = requests.post(
        f"{sim.authority}/oauth2/v2.0/token",
        data={"grant_type": "client_credentials", "scope": GRAPH_SCOPE},
        auth=(sim.client_id, sim.client_secret),
        timeout=5,
    )

    assert response.status_code == status
    assert response.headers["Retry-After"] == "3"
    body = response.json()
    assert body["error"] == "temporarily_unavailable"
    assert body["error_description"].startswith("AADSTS90033: A transient error has occurred.")
    assert body["error_codes"] == [90033]
