"""Credentials: msal for Graph with an app secret or certificate, azure-identity otherwise.

* Graph, ``client_secret`` / ``client_certificate``: an ``msal.ConfidentialClientApplication``
  (client credentials flow, token cache inside the app object).
* Graph, ``managed_identity``: azure-identity ``ManagedIdentityCredential``.
* Logs Ingestion and Blob: an azure-identity ``TokenCredential`` (managed identity in
  Azure; a secret or certificate credential locally, or ``developer``: the operator's
  own ``az login`` through ``AzureCliCredential``).

A managed identity exists only where Azure provides one: App Service/Functions set
``IDENTITY_ENDPOINT`` (older hosts ``MSI_ENDPOINT``), a VM answers at the IMDS address.
On a laptop azure-identity would retry IMDS for about 90 s and then blame a role
assignment; :class:`ReadableManagedIdentity` looks first (one short TCP probe per
process) and fails at once, saying to use ``AZURE_AUTH_MODE=developer``.

Every call to Entra ID (tenant discovery and the token endpoint, from msal and from
azure-identity alike) goes through :class:`AuthoritySession`, which retries a 429, a
5xx, a dropped connection, a timeout and a page that is not Entra's JSON, and raises
:class:`AuthorityUnavailableError` quoting Entra's words once the retries are used up
(exit 6). msal never sees such an answer, because on its own it would replay a 429/5xx
from its throttle cache without asking again, raise a bare ``MsalServiceError`` for a
5xx, and log a non-JSON body in full with a traceback.

Credential objects are cached per process, keyed by the settings that define them,
so the Functions worker reuses tokens across timer runs instead of asking Entra ID
every five minutes. No token, secret or token-endpoint body is ever logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from azure.core.credentials import AccessToken, AccessTokenInfo, TokenCredential, TokenRequestOptions
from azure.core.exceptions import AzureError, ServiceResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import (
    AzureCliCredential,
    CertificateCredential,
    ClientSecretCredential,
    ManagedIdentityCredential,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from tenacity import RetryCallState, Retrying, retry_if_exception

from connector.errors import (
    AuthenticationError,
    ConfigError,
    ErrorKind,
    HttpDisposition,
    classify_http_status,
)
from connector.ports import TokenProvider
from connector.redact import safe_url, scrub
from connector.settings import AuthMode, Settings
from connector.transport import (
    CONNECT_RETRIES,
    ConnectorSession,
    connection_cause,
    describe_failure,
    parse_retry_after,
    timeouts,
    tls_options,
    untrusted_certificate,
)

logger = logging.getLogger(__name__)

_CACHE: dict[tuple[object, ...], object] = {}
# Re-entrant: building the Graph credential of federated_identity builds the managed identity credential.
_CACHE_LOCK = threading.RLock()

# The longest a run waits between two calls to Entra ID. The session lives as long as the
# cached msal app or credential (many runs), so it cannot see a run's Deadline; a small
# cap keeps HTTP_MAX_RETRIES waits well inside any run budget. A Retry-After longer
# than this ends the attempts at once: the next run asks again.
MAX_AUTHORITY_WAIT_SECONDS = 10.0
_TITLE = re.compile(rb"<title[^>]*>([^<]{1,200})</title>", re.IGNORECASE)


class AuthorityUnavailableError(requests.RequestException):
    """Entra ID answered 429/5xx or something that is not its JSON through every retry.

    A ``requests`` exception so that msal passes it through untouched (and falls back
    to a still-valid cached token if it has one) and azure-core wraps it as a
    ``ServiceResponseError``: both then read as TRANSIENT, since an outage or a proxy's
    page is not a credential problem.
    """


class _UnusableAnswer(Exception):
    """One answer from Entra ID that another attempt may fix."""

    def __init__(self, what: str, retry_after: float | None) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


def _first_line(text: object, limit: int = 300) -> str:
    return next(iter(str(text).splitlines()), "").strip()[:limit]


def _entra_words(body: dict[str, Any]) -> str:
    """What Entra said, for a message: ``error`` and the first line of ``error_description``; never the body."""
    error: object = body.get("error")
    description: object = body.get("error_description")
    if isinstance(error, dict):  # not Entra's shape, but say what it said
        description = error.get("message")
        error = error.get("code")
    return ": ".join(_first_line(part) for part in (error, description) if part)


def _page(response: requests.Response) -> str:
    """A body that is not a JSON object, described by type, size and HTML title (never quoted whole)."""
    content_type = response.headers.get("Content-Type", "no Content-Type").split(";")[0]
    title = _TITLE.search(response.content[:4096])
    named = f" titled {_first_line(title.group(1).decode('utf-8', 'replace'), 100)!r}" if title else ""
    return (
        f"with a {content_type} body of {len(response.content)} bytes{named}, "
        "not Entra ID's JSON (a proxy's or an outage page?)"
    )


class AuthoritySession(ConnectorSession):
    """The session for Entra ID's discovery and token endpoints: retries what another attempt may fix.

    Retried (tenacity, ``HTTP_MAX_RETRIES`` times): 429/408/5xx, a body that is not a
    JSON object (a proxy's or an outage page), a dropped connection and a timeout;
    ``Retry-After`` is honoured and every wait is capped at
    :data:`MAX_AUTHORITY_WAIT_SECONDS`. An untrusted certificate is not retried (it is
    the CA bundle setting). A 4xx with Entra's JSON (a refusal) goes to the caller
    at once. Once the attempts are used up, an answer raises
    :class:`AuthorityUnavailableError` naming the status and Entra's ``error`` and
    description; a connection failure raises the last ``requests`` error as it was.
    Only the status, error code and description are logged, never a body.
    """

    def __init__(
        self,
        *,
        ca_bundle: str | None,
        timeout_seconds: float,
        max_retries: int,
        backoff_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(ca_bundle=ca_bundle, timeout_seconds=timeout_seconds, connection_retries=0)
        self._max_retries = max_retries
        self._backoff = backoff_seconds
        self._sleep = sleep

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Send, retrying what another attempt may fix; raise instead of returning an unusable answer."""
        retrying = Retrying(
            stop=lambda state: state.attempt_number > self._max_retries or _connect_retries_used(state),
            wait=self._wait,
            retry=retry_if_exception(_worth_retrying),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        where = safe_url(url)
        try:
            for attempt in retrying:
                with attempt:
                    return _usable(super().request(method, url, *args, **kwargs))
        except _UnusableAnswer as err:
            attempts = retrying.statistics.get("attempt_number", 1)
            raise AuthorityUnavailableError(
                f"{where} still failing after {attempts} attempt{'s' if attempts != 1 else ''}: {err.what}"
            ) from err
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    def _wait(self, retry_state: RetryCallState) -> float:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failure, _UnusableAnswer) and failure.retry_after is not None:
            if failure.retry_after > MAX_AUTHORITY_WAIT_SECONDS:
                failure.what += (
                    f"; it asked to retry after {failure.retry_after:.0f} s, longer than a run waits for "
                    f"Entra ID ({MAX_AUTHORITY_WAIT_SECONDS:.0f} s)"
                )
                raise failure
            return float(failure.retry_after)
        exponential: float = self._backoff * (2 ** (retry_state.attempt_number - 1))
        return min(MAX_AUTHORITY_WAIT_SECONDS, exponential) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter

    @staticmethod
    def _log_retry(retry_state: RetryCallState) -> None:
        failure = retry_state.outcome.exception() if retry_state.outcome else None
        what = failure.what if isinstance(failure, _UnusableAnswer) else type(failure).__name__
        wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
        logger.warning(
            "Entra ID request failed (%s); retry %d in %.1f s", what, retry_state.attempt_number, wait
        )


def _connect_retries_used(retry_state: RetryCallState) -> bool:
    """Stop when Entra ID could not even be connected to and ``CONNECT_RETRIES`` retries are used."""
    failure = retry_state.outcome.exception() if retry_state.outcome else None
    return (
        failure is not None
        and connection_cause(failure) is not None
        and retry_state.attempt_number > CONNECT_RETRIES
    )


def _worth_retrying(error: BaseException) -> bool:
    if isinstance(error, _UnusableAnswer):
        return True
    return isinstance(error, requests.ConnectionError | requests.Timeout) and not untrusted_certificate(error)


def _usable(response: requests.Response) -> requests.Response:
    """``response`` if msal can use it: Entra's JSON object, not a 429/5xx; else :class:`_UnusableAnswer`."""
    status = response.status_code
    try:
        body: object = response.json()
    except ValueError:
        body = None
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if classify_http_status(status) is HttpDisposition.RETRY:
        said = _entra_words(body) if isinstance(body, dict) else _page(response)
        raise _UnusableAnswer(f"HTTP {status} {said}".rstrip(), retry_after)
    if not isinstance(body, dict):
        raise _UnusableAnswer(f"HTTP {status} {_page(response)}", retry_after)
    return response


def unreachable_authority(where: str, err: BaseException) -> AuthenticationError:
    """The error for an Entra ID authority that could not be reached or kept failing (TRANSIENT).

    A setting instead if its certificate is untrusted (the CA bundle).
    """
    kind, detail = describe_failure(err, default=ErrorKind.TRANSIENT)
    hint = "; the next run tries again" if kind is ErrorKind.TRANSIENT else ""
    return AuthenticationError(f"cannot reach {where}: {detail}{hint}", kind=kind)


class MsalTokenProvider:
    """Client-credentials tokens from an msal confidential client (token cache included)."""

    def __init__(
        self, app: msal.ConfidentialClientApplication, scope: str, *, tenant: str | None = None
    ) -> None:
        self._app = app
        self._scope = scope
        self._tenant = tenant

    def token(self, *, force_refresh: bool = False) -> str:
        """Acquire (or reuse) a token for the scope."""
        if force_refresh:
            self._app.remove_tokens_for_client()
        try:
            result: dict[str, Any] = self._app.acquire_token_for_client(scopes=[self._scope]) or {}
        except requests.RequestException as err:
            raise unreachable_authority("the Entra ID authority for a Graph token", err) from err
        token = result.get("access_token")
        if isinstance(token, str):
            return token
        error = _first_line(result.get("error") or "unknown_error")
        description = _first_line(result.get("error_description") or "")
        said = f"{error}: {description}" if description else error
        if self._tenant is not None:
            # A customer tenant of TENANTS: the app must be consented there (AADSTS700016 when it is not).
            raise AuthenticationError(
                f"Entra ID refused a token for {self._scope} in tenant {self._tenant} (client "
                f"{self._app.client_id}): {said}. Check that an admin of that tenant consented to CLIENT_ID "
                "(ExchangeMessageTrace.Read.All) and its tenantId in TENANTS, then the certificate or federated "
                "credential"
            )
        raise AuthenticationError(
            f"Entra ID refused a token for {self._scope} (client {self._app.client_id}): {said}. "
            "Check TENANT_ID, CLIENT_ID and the client secret or certificate (an expired secret shows AADSTS7000222)."
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
        except AzureError as err:  # refused, unreachable, or an answer azure-core could not decode
            kind, detail = describe_failure(err, default=ErrorKind.PERMISSION)
            raise AuthenticationError(
                f"could not get a token for {self._scope}: {_first_line(detail, 600)}", kind=kind
            ) from err


IMDS_ADDRESS = "http://169.254.169.254"
IMDS_PROBE_SECONDS = 1.0
_IDENTITY_VARIABLES = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_FEDERATED_TOKEN_FILE")
NO_MANAGED_IDENTITY = (
    "no managed identity on this machine (no IDENTITY_ENDPOINT or MSI_ENDPOINT, and nothing answers at the "
    "IMDS address {imds}): in Azure, enable the function app's identity; on a laptop run `az login` and set "
    "AZURE_AUTH_MODE=developer (storage, ingestion, query), and for Graph use GRAPH_AUTH_MODE=client_secret "
    "or client_certificate with the app registration"
)
_identity_probe: dict[str, bool] = {}


def managed_identity_available(
    env: Mapping[str, str] | None = None, timeout: float = IMDS_PROBE_SECONDS
) -> bool:
    """True if azure-identity can find a managed identity here; the IMDS answer is remembered per process.

    The endpoint variables are read from ``os.environ`` (default), where azure-identity
    itself reads them. IMDS is probed with one TCP connect to its address
    (``AZURE_POD_IDENTITY_AUTHORITY_HOST`` if set, as azure-identity does).
    """
    source = os.environ if env is None else env
    if any(source.get(name) for name in _IDENTITY_VARIABLES):
        return True
    imds = source.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or IMDS_ADDRESS
    with _CACHE_LOCK:
        known = _identity_probe.get(imds)
    if known is None:
        parts = urlsplit(imds)
        try:
            with socket.create_connection((parts.hostname or "", parts.port or 80), timeout=timeout):
                known = True
        except OSError:
            known = False
        with _CACHE_LOCK:
            _identity_probe[imds] = known
    return known


def _require_managed_identity() -> None:
    if not managed_identity_available():
        imds = os.environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST") or IMDS_ADDRESS
        raise AuthenticationError(NO_MANAGED_IDENTITY.format(imds=imds), kind=ErrorKind.SETTING)


class ReadableManagedIdentity:
    """A ``ManagedIdentityCredential`` that fails fast where there is none, with readable errors.

    Where no managed identity exists (:func:`managed_identity_available`) it raises
    :class:`~connector.errors.AuthenticationError` (SETTING) before azure-identity's
    90 s of IMDS retries.

    msal reads the managed identity endpoint's body with ``json.loads`` and lets a
    ``JSONDecodeError`` out for a page that is not JSON (a proxy's or an outage page);
    the Azure SDK clients and this module handle only ``AzureError``, so that would end
    a run in a traceback. As a ``ServiceResponseError`` it is TRANSIENT like any
    unusable answer. (The endpoint's 429/5xx are retried by azure-identity itself.)
    """

    def __init__(self, credential: ManagedIdentityCredential) -> None:
        self._credential = credential

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        """``ManagedIdentityCredential.get_token``, with a non-JSON answer as ``ServiceResponseError``."""
        _require_managed_identity()
        try:
            token: AccessToken = self._credential.get_token(
                *scopes, claims=claims, tenant_id=tenant_id, enable_cae=enable_cae, **kwargs
            )
        except json.JSONDecodeError as err:
            raise _unreadable_identity_answer(err) from err
        return token

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        """``ManagedIdentityCredential.get_token_info`` (what azure-core prefers), same translation."""
        _require_managed_identity()
        try:
            info: AccessTokenInfo = self._credential.get_token_info(*scopes, options=options)
        except json.JSONDecodeError as err:
            raise _unreadable_identity_answer(err) from err
        return info

    def close(self) -> None:
        """Close the wrapped credential's transport."""
        self._credential.close()


def _unreadable_identity_answer(err: json.JSONDecodeError) -> ServiceResponseError:
    return ServiceResponseError(
        "the managed identity endpoint (IDENTITY_ENDPOINT) answered with a body that is not JSON "
        f"(a proxy's or an outage page?): {err.msg}",
        error=err,
    )


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
    tenant = settings.graph_tenant_id
    key = (
        "msal",
        mode,
        settings.authority_host,
        tenant,
        creds.client_id,
        _secret_digest(creds.client_secret),
        creds.certificate_path,
        creds.managed_identity_client_id,
    )

    def build() -> msal.ConfidentialClientApplication:
        credential: str | dict[str, Any]
        if mode is AuthMode.CLIENT_SECRET:
            credential = creds.client_secret or ""
        elif mode is AuthMode.FEDERATED_IDENTITY:
            credential = {"client_assertion": federated_assertion(settings)}
        else:
            credential = load_certificate_credential(creds.certificate_path or "", creds.certificate_password)
        return msal.ConfidentialClientApplication(
            creds.client_id,
            client_credential=credential,
            authority=f"{settings.authority_host}/{tenant}",
            instance_discovery=False,
            http_client=authority_session(settings),
        )

    try:
        app: msal.ConfidentialClientApplication = _cached(key, build)
    except requests.RequestException as err:
        raise unreachable_authority(
            f"the Entra ID authority {settings.authority_host} (tenant discovery failed)", err
        ) from err
    except ValueError as err:  # msal refuses a malformed authority or tenant
        if settings.tenant is not None:
            problem = (
                "TENANTS",
                f"tenant {settings.tenant.name}: the Entra ID authority {settings.authority_host} refused its "
                f"tenantId {settings.tenant.tenant_id}: {scrub(str(err))}",
            )
        else:
            problem = (
                "TENANT_ID",
                f"the Entra ID authority {settings.authority_host} refused it: {scrub(str(err))}",
            )
        raise ConfigError([problem]) from err
    return MsalTokenProvider(
        app,
        settings.graph_scope,
        tenant=None if settings.tenant is None else f"{settings.tenant.name} ({settings.tenant.tenant_id})",
    )


FEDERATION_SCOPE = "api://AzureADTokenExchange/.default"
"""The audience Entra ID expects of a managed identity's token used as an app's federated credential."""


def federated_assertion(settings: Settings) -> Callable[[], str]:
    """The managed identity's token for :data:`FEDERATION_SCOPE`, as msal's ``client_assertion`` callable.

    msal calls it whenever it needs a new app token (a token per customer tenant,
    on expiry); azure-identity caches the identity's own token and renews it before it
    expires, so each call is cheap. A refusal is the identity's (no identity on this
    machine, or the endpoint failing) and says so.
    """
    identity = azure_credential(settings, AuthMode.MANAGED_IDENTITY)

    def assertion() -> str:
        try:
            return identity.get_token(FEDERATION_SCOPE).token
        except AzureError as err:
            kind, detail = describe_failure(err, default=ErrorKind.PERMISSION)
            raise AuthenticationError(
                f"the managed identity gave no token for {FEDERATION_SCOPE} (the federated credential of "
                f"CLIENT_ID): {_first_line(detail, 600)}",
                kind=kind,
            ) from err

    return assertion


def authority_session(settings: Settings) -> AuthoritySession:
    """The session for Entra ID (``AUTHORITY_HOST``) with the ``HTTP_*`` timeout and retries."""
    return AuthoritySession(
        ca_bundle=settings.ca_bundle,
        timeout_seconds=settings.http_timeout_seconds,
        max_retries=settings.http_max_retries,
        backoff_seconds=settings.http_retry_backoff_seconds,
    )


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
            return ReadableManagedIdentity(
                ManagedIdentityCredential(client_id=creds.managed_identity_client_id)
            )
        if mode is AuthMode.DEVELOPER:
            # The signed-in user of `az login`, in TENANT_ID; az caches and refreshes the tokens.
            return AzureCliCredential(tenant_id=creds.tenant_id, process_timeout=30)
        transport = RequestsTransport(
            session=authority_session(settings),
            session_owner=False,
            connection_timeout=timeouts(settings.http_timeout_seconds)[0],
            read_timeout=settings.http_timeout_seconds,
            **tls_options(settings.ca_bundle),
        )
        common: dict[str, Any] = {
            "authority": settings.authority_host,
            "disable_instance_discovery": True,
            "transport": transport,
            "retry_total": 0,  # AuthoritySession retries; azure-core's retries would multiply its attempts
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
