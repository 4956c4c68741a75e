"""Credentials: msal for Graph with an app secret or certificate, azure-identity otherwise.

* Graph, ``client_secret`` / ``client_certificate``: an ``msal.ConfidentialClientApplication``
  (client credentials flow, token cache inside the app object).
* Graph, ``managed_identity``: azure-identity ``ManagedIdentityCredential``.
* Logs Ingestion and Blob: an azure-identity ``TokenCredential`` (managed identity in
  Azure; a secret or certificate credential locally).

Credential objects are cached per process, keyed by the settings that define them,
so the Functions worker reuses tokens across timer runs instead of asking Entra ID
every five minutes. No token or secret is ever logged.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import msal
import requests
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential, ClientSecretCredential, ManagedIdentityCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from connector.errors import AuthenticationError, ConfigError, ErrorKind
from connector.ports import TokenProvider
from connector.settings import AuthMode, Settings
from connector.transport import ConnectorSession, describe_failure, tls_options

logger = logging.getLogger(__name__)

_CACHE: dict[tuple[object, ...], object] = {}
_CACHE_LOCK = threading.Lock()


def unreachable_authority(where: str, err: BaseException) -> AuthenticationError:
    """The error for an Entra ID authority that could not be reached: a setting if its certificate is untrusted."""
    kind, detail = describe_failure(err, default=ErrorKind.TRANSIENT)
    return AuthenticationError(f"cannot reach {where}: {detail}", kind=kind)


class MsalTokenProvider:
    """Client-credentials tokens from an msal confidential client (token cache included)."""

    def __init__(self, app: msal.ConfidentialClientApplication, scope: str) -> None:
        self._app = app
        self._scope = scope

    def token(self, *, force_refresh: bool = False) -> str:
        """Acquire (or reuse) a token for the scope."""
        if force_refresh:
            self._app.remove_tokens_for_client()
        try:
            result: dict[str, Any] = self._app.acquire_token_for_client(scopes=[self._scope])
        except requests.RequestException as err:
            raise unreachable_authority("the Entra ID authority for a Graph token", err) from err
        token = result.get("access_token")
        if isinstance(token, str):
            return token
        description = str(result.get("error_description", "")).splitlines()[0] if result else ""
        raise AuthenticationError(
            f"Entra ID refused a token for {self._scope} (client {self._app.client_id}): "
            f"{result.get('error', 'unknown_error')}: {description}. Check TENANT_ID, CLIENT_ID and the "
            "client secret or certificate (an expired secret shows AADSTS7000222)."
        )


class AzureCredentialTokenProvider:
    """Tokens from an azure-identity credential (managed identity for Graph)."""

    def __init__(self, credential: TokenCredential, scope: str) -> None:
        self._credential = credential
        self._scope = scope

    def token(self, *, force_refresh: bool = False) -> str:
        """Get a token; azure-identity refreshes it before expiry on its own."""
        del force_refresh  # azure-identity has no cache bypass; a refused token fails the retry anyway
        try:
            return self._credential.get_token(self._scope).token
        except ClientAuthenticationError as err:
            kind, detail = describe_failure(err, default=ErrorKind.PERMISSION)
            raise AuthenticationError(
                f"could not get a token for {self._scope}: {detail}", kind=kind
            ) from err


def _secret_digest(secret: str | None) -> str | None:
    return None if secret is None else hashlib.sha256(secret.encode()).hexdigest()


def _cached(key: tuple[object, ...], build: Any, *, fresh: bool = False) -> Any:
    with _CACHE_LOCK:
        if fresh or key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def load_certificate_credential(path: str, password: str | None) -> dict[str, str]:
    """Read a PEM holding the private key and certificate; return msal's credential dict.

    Raises:
        ConfigError: the file holds no usable key and certificate.
    """
    try:
        with open(path, "rb") as handle:
            pem = handle.read()
        key = serialization.load_pem_private_key(pem, password=password.encode() if password else None)
        certificate = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(
            [
                (
                    "CLIENT_CERTIFICATE_PATH",
                    f"must be a PEM file with the private key and the certificate: {err}",
                )
            ]
        ) from err
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "private_key": private_pem,
        "thumbprint": certificate.fingerprint(hashes.SHA1()).hex(),  # noqa: S303 - the x5t header is SHA-1 by spec
        "public_certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
    }


def graph_token_provider(settings: Settings) -> TokenProvider:
    """The Graph token source that ``GRAPH_AUTH_MODE`` selects."""
    creds = settings.credentials
    mode = settings.graph_auth_mode
    if mode is AuthMode.MANAGED_IDENTITY:
        return AzureCredentialTokenProvider(azure_credential(settings, mode), settings.graph_scope)
    key = (
        "msal",
        mode,
        settings.authority_host,
        creds.tenant_id,
        creds.client_id,
        _secret_digest(creds.client_secret),
        creds.certificate_path,
    )

    def build() -> msal.ConfidentialClientApplication:
        credential: str | dict[str, str]
        if mode is AuthMode.CLIENT_SECRET:
            credential = creds.client_secret or ""
        else:
            credential = load_certificate_credential(creds.certificate_path or "", creds.certificate_password)
        return msal.ConfidentialClientApplication(
            creds.client_id,
            client_credential=credential,
            authority=f"{settings.authority_host}/{creds.tenant_id}",
            instance_discovery=False,
            http_client=ConnectorSession(
                ca_bundle=settings.ca_bundle, timeout_seconds=settings.http_timeout_seconds
            ),
        )

    try:
        app: msal.ConfidentialClientApplication = _cached(key, build)
    except requests.RequestException as err:
        raise unreachable_authority(
            f"the Entra ID authority {settings.authority_host} (tenant discovery failed)", err
        ) from err
    except ValueError as err:  # msal refuses a malformed authority or tenant
        raise ConfigError(
            [("TENANT_ID", f"the Entra ID authority {settings.authority_host} refused it: {err}")]
        ) from err
    return MsalTokenProvider(app, settings.graph_scope)


def azure_credential(
    settings: Settings, mode: AuthMode | None = None, *, fresh: bool = False
) -> TokenCredential:
    """The azure-identity credential for ingestion and blob (``AZURE_AUTH_MODE``).

    ``fresh=True`` replaces the cached credential (and so its token cache).
    """
    creds = settings.credentials
    mode = mode or settings.azure_auth_mode
    key = (
        "azure-identity",
        mode,
        settings.authority_host,
        creds.tenant_id,
        creds.client_id,
        _secret_digest(creds.client_secret),
        creds.certificate_path,
        creds.managed_identity_client_id,
    )

    def build() -> TokenCredential:
        if mode is AuthMode.MANAGED_IDENTITY:
            return ManagedIdentityCredential(client_id=creds.managed_identity_client_id)
        common: dict[str, Any] = {
            "authority": settings.authority_host,
            "disable_instance_discovery": True,
            **tls_options(settings.ca_bundle),
        }
        if mode is AuthMode.CLIENT_SECRET:
            return ClientSecretCredential(
                creds.tenant_id, creds.client_id or "", creds.client_secret or "", **common
            )
        return CertificateCredential(
            creds.tenant_id,
            creds.client_id or "",
            certificate_path=creds.certificate_path,
            password=creds.certificate_password,
            **common,
        )

    credential: TokenCredential = _cached(key, build, fresh=fresh)
    return credential


def clear_credential_cache() -> None:
    """Forget cached credentials (tests that rotate secrets)."""
    with _CACHE_LOCK:
        _CACHE.clear()
