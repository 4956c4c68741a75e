"""Fake Microsoft Entra ID token service and App Service managed identity endpoint.

Why it exists: the connector gets tokens through the real msal and
azure-identity code, and those libraries do OIDC discovery, build client
assertions, cache tokens and parse error bodies. A fake that speaks the same
wire protocol lets the tests prove that tokens are requested, cached and
refreshed the way they would be against ``login.microsoftonline.com``.

What :class:`EntraServer` serves (over HTTPS), only the v2.0 endpoints those
libraries call:

* ``GET /{tenant}/v2.0/.well-known/openid-configuration``: the tenant discovery
  msal does when ``instance_discovery=False`` (the keys msal reads; unknown
  tenants get AADSTS90002).
* ``POST /{tenant}/oauth2/v2.0/token`` for the ``client_credentials`` grant with
  ``client_secret`` (form or HTTP Basic) or a ``client_assertion`` JWT signed by
  a registered certificate (RS256 with ``x5t`` as azure-identity sends it, or
  PS256 with ``x5t#S256`` as msal sends it when given ``public_certificate``).
  An expired secret gets AADSTS7000222.
* A ``client_assertion`` that is a managed identity's token for
  ``api://AzureADTokenExchange`` (workload identity federation, "managed identity
  as a federated identity credential"): accepted when one of the app's federated
  credentials names its issuer (``https://login.microsoftonline.com/{home}/v2.0``,
  here ``{url}/{home}/v2.0``), subject (the identity's object id, case-sensitive)
  and audience; otherwise AADSTS70021 (the app has no federated credential) or
  AADSTS700211 / 700212 / 700213 (no record for that issuer / audience / subject),
  AADSTS700027 (signature) and AADSTS700024 (expired), as Entra answers.

Several tenants (one multi-tenant app registration consented in customer tenants):
the server starts with its home tenant and learns more with :meth:`EntraServer.add_tenant`.
An app registration (client id, secret, certificates, federated credentials) is
global; its service principal is per tenant (:meth:`EntraServer.consent`, created for
the home tenant by :meth:`EntraServer.register_app`), with its own object id and app
roles. Without one the token endpoint answers AADSTS700016 ("not found in the
directory"), as Entra does for an app nobody consented to in that tenant
(:meth:`EntraServer.withdraw_consent`). Tokens carry the tenant they were issued in
(``tid``, issuer ``https://sts.windows.net/{tid}/``).
* Errors in Entra's shape (``error``, ``error_description`` with the AADSTS
  code, ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``).

:class:`ManagedIdentityServer` is a separate plain-HTTP server that behaves
like the App Service / Functions identity endpoint (``IDENTITY_ENDPOINT`` +
``X-IDENTITY-HEADER``, api-version 2019-08-01).

Access tokens are real JWTs signed HS256 with a per-simulator secret, checked
by :meth:`EntraServer.validate_bearer` for Graph, ingestion and logs query. They
use wall-clock time (``time.time``), not the simulator's data clock, because msal
caches tokens by wall-clock ``expires_in``: advancing the simulated clock to
fetch "tomorrow's" traces must not silently expire every cached token. To
test expiry use a short ``token_lifetime`` or :meth:`EntraServer.expire_all_tokens`.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from .http import Request, Response, SimulatedHttpServer

GRAPH_RESOURCE = "https://graph.microsoft.com"
MONITOR_RESOURCE = "https://monitor.azure.com"
MESSAGE_TRACE_ROLE = "ExchangeMessageTrace.Read.All"
DOMAIN_READ_ROLE = "Domain.Read.All"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
"""The audience of a federated identity credential that trusts a managed identity (Entra's public cloud)."""
TOKEN_EXCHANGE_APP_ID = "fb60f99c-7a34-4190-8149-302f77469936"
"""The app id of "AAD Token Exchange Endpoint": the ``aud`` a v2.0 token for ``api://AzureADTokenExchange`` carries."""
WORKLOAD_IDENTITY_DOCS = "https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
ASSERTION_CLOCK_SKEW_SECONDS = 300
NO_CACHE = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}

# Reasons returned by validate_bearer (a str result means "rejected").
REASON_MISSING = "missing"
REASON_MALFORMED = "malformed"
REASON_BAD_SIGNATURE = "bad_signature"
REASON_EXPIRED = "expired"
REASON_NOT_YET_VALID = "not_yet_valid"
REASON_WRONG_AUDIENCE = "wrong_audience"
REASON_WRONG_ISSUER = "wrong_issuer"


@dataclass(frozen=True, slots=True)
class Claims:
    """The claims of a validated simulator access token (``raw`` holds them all)."""

    tid: str
    appid: str
    roles: tuple[str, ...]
    raw: Mapping[str, Any]


# EntraServer.validate_bearer, as the resource servers receive it.
TokenValidator = Callable[[str | None, str], Claims | str]


def normalise_audience(audience: str) -> str:
    """Compare audiences without a trailing slash or case differences."""
    return audience.strip().rstrip("/").lower()


def default_roles() -> dict[str, tuple[str, ...]]:
    """App roles a correctly set-up connector identity has."""
    return {normalise_audience(GRAPH_RESOURCE): (MESSAGE_TRACE_ROLE, DOMAIN_READ_ROLE)}


def unverified_tenant(authorization: str | None) -> str | None:
    """The ``tid`` of a ``Bearer`` header's token, not verified (to route a request before checking it)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    tid = claims.get("tid") if isinstance(claims, dict) else None
    return tid if isinstance(tid, str) else None


def is_token_exchange(resource: str) -> bool:
    """Whether ``resource`` names the token exchange audience (URI or app id; ``/.default`` allowed)."""
    wanted = normalise_audience(resource.strip().removesuffix("/.default"))
    return wanted in (normalise_audience(TOKEN_EXCHANGE_AUDIENCE), TOKEN_EXCHANGE_APP_ID)


@dataclass(frozen=True, slots=True)
class FederatedCredential:
    """A federated identity credential on an app registration (Graph ``federatedIdentityCredential``).

    Matching is case-sensitive, as Entra's is: ``issuer`` against the assertion's ``iss``,
    ``subject`` against its ``sub``; ``audiences`` (``api://AzureADTokenExchange``) against
    its ``aud``, which Entra also accepts as the token exchange app id.
    """

    issuer: str
    subject: str
    audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,)
    name: str = "managed-identity"

    def accepts_audience(self, audience: object) -> bool:
        values = audience if isinstance(audience, list) else [audience]
        for value in values:
            if not isinstance(value, str):
                continue
            for wanted in self.audiences:
                if value == wanted or (is_token_exchange(wanted) and value == TOKEN_EXCHANGE_APP_ID):
                    return True
        return False


@dataclass(slots=True)
class RegisteredApp:
    """An app registration + its service principal in the home tenant.

    Attributes:
        client_id: application (client) id.
        secret: client secret value, or ``None`` for certificate-only apps.
        secret_expired: answer AADSTS7000222 for the (correct) secret.
        certificates: registered public certificates.
        object_id: the home tenant service principal's object id (``oid`` claim).
        roles: app roles granted in the home tenant, by normalised resource (``roles`` claim).
        federated_credentials: trusted external identities (e.g. a managed identity);
            they hold for every tenant the app signs in to, as on a real app registration.
    """

    client_id: str
    secret: str | None = None
    secret_expired: bool = False
    certificates: list[x509.Certificate] = field(default_factory=list)
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    roles: dict[str, tuple[str, ...]] = field(default_factory=default_roles)
    federated_credentials: list[FederatedCredential] = field(default_factory=list)


@dataclass(slots=True)
class ServicePrincipal:
    """An app's service principal in one tenant: what admin consent there created.

    In the home tenant it is a view of the :class:`RegisteredApp` (same ``object_id``, same
    ``roles`` dict); in another tenant it has its own object id and roles.
    """

    client_id: str
    tenant_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    roles: dict[str, tuple[str, ...]] = field(default_factory=default_roles)


@dataclass(slots=True)
class ManagedIdentity:
    """A managed identity the App Service endpoint can issue tokens for."""

    client_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    roles: dict[str, tuple[str, ...]] = field(default_factory=default_roles)


@dataclass(frozen=True, slots=True)
class TokenRequestRecord:
    """One call to the token endpoint, secrets removed (for assertions)."""

    client_id: str
    grant_type: str
    scope: str
    credential: str  # "secret", "assertion", "none"
    status: int
    tenant: str = ""
    """The tenant in the request's path, as sent."""


class EntraServer(SimulatedHttpServer):
    """Fake ``login.microsoftonline.com`` for a home tenant and any tenants added later.

    Args:
        ssl_context: server TLS context (from :class:`TestCertificateAuthority`).
        tenant_id: the home tenant GUID (apps and managed identities live there).
        token_lifetime: access token lifetime in seconds (``expires_in``).
    """

    def __init__(
        self, ssl_context: ssl.SSLContext | None, tenant_id: str, *, token_lifetime: int = 3600
    ) -> None:
        super().__init__("entra", ssl_context)
        self.tenant_id = tenant_id
        self.token_lifetime = token_lifetime
        self._signing_key = secrets.token_bytes(32)
        self._tenants: dict[str, str] = {tenant_id.lower(): tenant_id}
        self._principals: dict[tuple[str, str], ServicePrincipal] = {}
        self._home_withdrawn: set[str] = set()
        self._apps: dict[str, RegisteredApp] = {}
        self._managed_identities: dict[str, ManagedIdentity] = {}
        self._generation = 0
        self._token_log: list[TokenRequestRecord] = []
        self._state_lock = threading.Lock()
        tenant = r"(?P<tenant>[^/]+)"
        self.route("GET", rf"/{tenant}/v2\.0/\.well-known/openid-configuration", self._openid_configuration)
        self.route("POST", rf"/{tenant}/oauth2/v2\.0/token", self._token)

    # ----------------------------------------------------------- configuration
    def register_app(
        self,
        client_id: str | None = None,
        *,
        secret: str | None = None,
        certificate_pem: bytes | None = None,
        secret_expired: bool = False,
    ) -> RegisteredApp:
        """Register (or replace) a confidential client app with the message trace role on Graph."""
        app = RegisteredApp(client_id or str(uuid.uuid4()), secret=secret, secret_expired=secret_expired)
        if certificate_pem is not None:
            app.certificates.append(x509.load_pem_x509_certificate(certificate_pem))
        with self._state_lock:
            self._apps[app.client_id] = app
            self._home_withdrawn.discard(app.client_id)
            for key in [k for k in self._principals if k[1] == app.client_id]:
                # A new registration's object ids are new: keep the consents, with fresh principals.
                old = self._principals[key]
                self._principals[key] = ServicePrincipal(app.client_id, old.tenant_id)
        return app

    def app(self, client_id: str) -> RegisteredApp:
        """The registered app ``client_id`` (KeyError if unknown)."""
        with self._state_lock:
            return self._apps[client_id]

    def add_federated_credential(
        self,
        client_id: str,
        *,
        issuer: str,
        subject: str,
        audiences: tuple[str, ...] = (TOKEN_EXCHANGE_AUDIENCE,),
        name: str = "managed-identity",
    ) -> FederatedCredential:
        """Trust tokens of ``issuer`` about ``subject`` as credentials of app ``client_id``.

        For a managed identity: ``issuer=entra.exchange_issuer()``, ``subject`` = its object id.
        """
        credential = FederatedCredential(issuer, subject, tuple(audiences), name)
        with self._state_lock:
            self._apps[client_id].federated_credentials.append(credential)
        return credential

    # ---------------------------------------------------------------- tenants
    def add_tenant(self, tenant_id: str) -> None:
        """Make ``tenant_id`` a known tenant (discovery and token endpoint answer for it)."""
        with self._state_lock:
            self._tenants[tenant_id.lower()] = tenant_id

    def remove_tenant(self, tenant_id: str) -> None:
        """Forget an added tenant and its service principals (the home tenant stays)."""
        key = tenant_id.lower()
        if key == self.tenant_id.lower():
            raise ValueError("the home tenant cannot be removed")
        with self._state_lock:
            self._tenants.pop(key, None)
            for principal in [k for k in self._principals if k[0] == key]:
                del self._principals[principal]

    @property
    def tenants(self) -> tuple[str, ...]:
        """Every known tenant id, the home tenant first."""
        with self._state_lock:
            return tuple(self._tenants.values())

    def known_tenant(self, tenant: str) -> str | None:
        """The tenant id as registered for ``tenant`` (any case), or ``None`` if unknown."""
        with self._state_lock:
            return self._tenants.get(tenant.lower())

    def consent(
        self, tenant_id: str, client_id: str, roles: dict[str, tuple[str, ...]] | None = None
    ) -> ServicePrincipal:
        """Admin consent to app ``client_id`` in ``tenant_id``: its service principal there.

        In the home tenant this undoes :meth:`withdraw_consent` (the app keeps its object id
        and roles). Elsewhere it creates a service principal with a new object id and
        ``roles`` (default: the connector's Graph roles), replacing any earlier one.
        """
        canonical = self.known_tenant(tenant_id)
        if canonical is None:
            raise KeyError(f"unknown tenant {tenant_id}")
        if canonical.lower() == self.tenant_id.lower():
            with self._state_lock:
                self._home_withdrawn.discard(client_id)
            principal = self.service_principal(canonical, client_id)
            if principal is None:
                raise KeyError(f"no app {client_id} is registered")
            return principal
        principal = ServicePrincipal(
            client_id, canonical, roles=dict(roles) if roles is not None else default_roles()
        )
        with self._state_lock:
            self._principals[(canonical.lower(), client_id)] = principal
        return principal

    def withdraw_consent(self, tenant_id: str, client_id: str) -> None:
        """Delete app ``client_id``'s service principal in ``tenant_id``: AADSTS700016 there from now on.

        Tokens already issued stay valid until they expire, as real access tokens do.
        """
        key = tenant_id.lower()
        with self._state_lock:
            if key == self.tenant_id.lower():
                self._home_withdrawn.add(client_id)
            else:
                self._principals.pop((key, client_id), None)

    def service_principal(self, tenant_id: str, client_id: str) -> ServicePrincipal | None:
        """App ``client_id``'s service principal in ``tenant_id``, or ``None`` (unknown app, no consent)."""
        key = tenant_id.lower()
        with self._state_lock:
            app = self._apps.get(client_id)
            if app is None or key not in self._tenants:
                return None
            if key == self.tenant_id.lower():
                if client_id in self._home_withdrawn:
                    return None
                return ServicePrincipal(client_id, self.tenant_id, app.object_id, app.roles)
            return self._principals.get((key, client_id))

    def register_managed_identity(self, client_id: str | None = None) -> ManagedIdentity:
        """Register a managed identity; the first one is the system-assigned default."""
        identity = ManagedIdentity(client_id or str(uuid.uuid4()))
        with self._state_lock:
            self._managed_identities[identity.client_id] = identity
        return identity

    def managed_identity(self, client_id: str | None = None) -> ManagedIdentity | None:
        """Look up an identity by client id, or the system-assigned default."""
        with self._state_lock:
            if client_id is not None:
                return self._managed_identities.get(client_id)
            return next(iter(self._managed_identities.values()), None)

    def expire_all_tokens(self) -> None:
        """Make every token issued so far fail validation with reason ``expired``.

        Models a token that the client still has cached but the resource no
        longer accepts (clock skew, revocation): the client must re-acquire.
        """
        with self._state_lock:
            self._generation += 1

    # ------------------------------------------------------------- inspection
    def token_requests(self) -> list[TokenRequestRecord]:
        """Every token endpoint call, oldest first (secrets never stored)."""
        with self._state_lock:
            return list(self._token_log)

    def token_request_count(self, client_id: str | None = None, tenant: str | None = None) -> int:
        """Token endpoint calls (any outcome), for one client or all, in one tenant or all."""
        return sum(
            1
            for r in self.token_requests()
            if client_id in (None, r.client_id) and (tenant is None or r.tenant.lower() == tenant.lower())
        )

    def reset(self) -> None:
        """Clear logs and faults (apps and keys stay registered)."""
        super().reset()
        with self._state_lock:
            self._token_log.clear()

    # ----------------------------------------------------------------- tokens
    @property
    def issuer(self) -> str:
        """The v1 issuer that the home tenant's Graph and Azure Monitor tokens carry."""
        return self.issuer_for(self.tenant_id)

    @staticmethod
    def issuer_for(tenant_id: str) -> str:
        """The v1 issuer of a tenant's access tokens: ``https://sts.windows.net/{tid}/``."""
        return f"https://sts.windows.net/{tenant_id}/"

    def exchange_issuer(self, tenant_id: str | None = None) -> str:
        """The v2.0 issuer of a tenant (``{url}/{tid}/v2.0``, discovery's ``issuer``).

        What a managed identity's token for ``api://AzureADTokenExchange`` carries, so what
        a federated credential trusting that identity names as its issuer. Needs the server
        started (the URL holds the port).
        """
        return f"{self.url}/{tenant_id or self.tenant_id}/v2.0"

    def issue_token(
        self,
        client_id: str,
        resource: str,
        *,
        object_id: str | None = None,
        roles: tuple[str, ...] = (),
        lifetime: int | None = None,
        appidacr: str = "1",
        tenant_id: str | None = None,
    ) -> tuple[str, int]:
        """Sign an access token (of the home tenant unless ``tenant_id``); returns ``(jwt, expires_in)``.

        Tests may call this directly to talk to Graph/ingestion without msal.
        """
        tid = tenant_id or self.tenant_id
        life = self.token_lifetime if lifetime is None else lifetime
        now = int(time.time())
        with self._state_lock:
            generation = self._generation
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": self.issuer_for(tid),
            "iat": now,
            "nbf": now,
            "exp": now + life,
            "appid": client_id,
            "appidacr": appidacr,
            "idtyp": "app",
            "oid": object_id or client_id,
            "roles": list(roles),
            "sub": object_id or client_id,
            "tid": tid,
            "ver": "1.0",
            "xms_sim_gen": generation,
        }
        return jwt.encode(claims, self._signing_key, algorithm="HS256"), life

    def issue_exchange_token(
        self, client_id: str, object_id: str, *, lifetime: int | None = None
    ) -> tuple[str, int]:
        """A managed identity's v2.0 token for ``api://AzureADTokenExchange``; returns ``(jwt, expires_in)``.

        Claims as Entra issues them: ``aud`` the token exchange app id, ``iss``
        :meth:`exchange_issuer` of the home tenant, ``sub``/``oid`` the identity's object id,
        ``azp`` its client id. Only the token endpoint takes it (as a client assertion).
        """
        life = self.token_lifetime if lifetime is None else lifetime
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": TOKEN_EXCHANGE_APP_ID,
            "iss": self.exchange_issuer(),
            "iat": now,
            "nbf": now,
            "exp": now + life,
            "azp": client_id,
            "azpacr": "2",
            "idtyp": "app",
            "oid": object_id,
            "sub": object_id,
            "tid": self.tenant_id,
            "ver": "2.0",
        }
        return jwt.encode(claims, self._signing_key, algorithm="HS256"), life

    def validate_bearer(self, authorization: str | None, expected_audience: str) -> Claims | str:
        """Validate an ``Authorization`` header value for a resource.

        Tokens of every known tenant are valid; ``Claims.tid`` says which (Graph picks the
        tenant's data by it). A token of a removed tenant is ``wrong_issuer``.

        Returns:
            :class:`Claims` when valid, otherwise a reason string: ``missing``,
            ``malformed``, ``bad_signature``, ``expired``, ``not_yet_valid``,
            ``wrong_audience`` or ``wrong_issuer``.
        """
        if not authorization:
            return REASON_MISSING
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return REASON_MALFORMED
        try:
            raw: dict[str, Any] = jwt.decode(
                token.strip(),
                self._signing_key,
                algorithms=["HS256"],
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            return REASON_BAD_SIGNATURE
        except jwt.PyJWTError:
            return REASON_MALFORMED
        now = time.time()
        with self._state_lock:
            generation = self._generation
        tid = raw.get("tid")
        known = self.known_tenant(tid) if isinstance(tid, str) else None
        if known is None or known != tid or raw.get("iss") != self.issuer_for(known):
            return REASON_WRONG_ISSUER
        exp, nbf = raw.get("exp"), raw.get("nbf")
        if not isinstance(exp, int) or not isinstance(nbf, int):
            return REASON_MALFORMED
        if exp <= now or raw.get("xms_sim_gen") != generation:
            return REASON_EXPIRED
        if nbf > now + 60:
            return REASON_NOT_YET_VALID
        if normalise_audience(str(raw.get("aud", ""))) != normalise_audience(expected_audience):
            return REASON_WRONG_AUDIENCE
        roles = tuple(str(r) for r in raw.get("roles", []))
        return Claims(tid=str(raw["tid"]), appid=str(raw.get("appid", "")), roles=roles, raw=raw)

    # --------------------------------------------------------------- routes
    def _openid_configuration(self, request: Request) -> Response:
        """The part of the v2.0 discovery document msal reads."""
        tenant = self.known_tenant(request.params["tenant"])
        if tenant is None:
            return self._unknown_tenant(request.params["tenant"])
        base = f"{self.url}/{tenant}"
        return Response.json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
            },
        )

    def _unknown_tenant(self, tenant: str) -> Response:
        return self._error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud.",
        )

    def error_response(self, status: int, message: str) -> Response:
        """Entra's own shape for an injected 429/5xx (``temporarily_unavailable``, AADSTS90033).

        Entra answers throttling and outages with an OAuth error body, not Graph's
        ``{"error": {"code": ...}}``; a fault in Graph's shape would test a parser
        against an answer Entra never sends.
        """
        if status == 429 or status >= 500:
            return self._error(
                status,
                "temporarily_unavailable",
                90033,
                f"A transient error has occurred. Please try again. {message}",
            )
        return super().error_response(status, message)

    def _error(self, status: int, error: str, code: int, description: str) -> Response:
        trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return Response.json(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {description} Trace ID: {trace_id} "
                f"Correlation ID: {correlation_id} Timestamp: {stamp}",
                "error_codes": [code],
                "timestamp": stamp,
                "trace_id": trace_id,
                "correlation_id": correlation_id,
                "error_uri": f"{self.url}/error?code={code}",
            },
            headers=NO_CACHE,
        )

    def _token(self, request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        basic_id, basic_secret = _basic_auth(request.header("authorization"))
        form.setdefault("client_id", basic_id or "")
        secret = form.get("client_secret") or basic_secret
        response = self._token_response(request, form, secret)
        record = TokenRequestRecord(
            client_id=form["client_id"],
            grant_type=form.get("grant_type", ""),
            scope=form.get("scope", ""),
            credential="assertion" if form.get("client_assertion") else ("secret" if secret else "none"),
            status=response.status,
            tenant=request.params["tenant"],
        )
        with self._state_lock:
            self._token_log.append(record)
        return response

    def _token_response(self, request: Request, form: Mapping[str, str], secret: str | None) -> Response:
        tenant = self.known_tenant(request.params["tenant"])
        if tenant is None:
            return self._unknown_tenant(request.params["tenant"])
        grant_type = form.get("grant_type", "")
        if grant_type and grant_type != "client_credentials":
            return self._error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        for name in ("grant_type", "client_id", "scope"):
            if not form.get(name):
                return self._error(
                    400,
                    "invalid_request",
                    900144,
                    f"The request body must contain the following parameter: '{name}'.",
                )
        client_id, scope = form["client_id"], form["scope"].strip()
        if " " in scope or not scope.endswith("/.default"):
            return self._error(
                400,
                "invalid_scope",
                1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                "value with /.default suffixed to the resource identifier (application ID URI).",
            )
        with self._state_lock:
            app = self._apps.get(client_id)
        principal = self.service_principal(tenant, client_id)
        if app is None or principal is None:
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        if form.get("client_assertion"):
            problem = self._check_assertion(app, form, tenant)
            if problem is not None:
                return problem
            appidacr = "2"
        elif secret:
            if app.secret is None or not secrets.compare_digest(secret, app.secret):
                return self._error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client "
                    f"secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                )
            if app.secret_expired:
                return self._error(
                    401,
                    "invalid_client",
                    7000222,
                    f"The provided client secret keys for app '{client_id}' are expired. Visit the Azure portal to "
                    "create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate "
                    "credentials for added security: https://aka.ms/certCreds.",
                )
            appidacr = "1"
        else:
            return self._error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            )
        resource = scope.removesuffix("/.default")
        roles = principal.roles.get(normalise_audience(resource), ())
        token, life = self.issue_token(
            client_id,
            resource,
            object_id=principal.object_id,
            roles=roles,
            appidacr=appidacr,
            tenant_id=tenant,
        )
        body = {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": token}
        return Response.json(200, body, headers=NO_CACHE)

    def _check_assertion(self, app: RegisteredApp, form: Mapping[str, str], tenant: str) -> Response | None:
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            return self._error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type'.",
            )
        assertion = form["client_assertion"]
        try:
            header = jwt.get_unverified_header(assertion)
            unverified: dict[str, Any] = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return self._error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        if unverified.get("iss") != unverified.get("sub"):
            # Not self-issued by a client: a token of another issuer, for workload identity federation.
            return self._check_federated(app, assertion, unverified)
        x5t, x5t256 = header.get("x5t"), header.get("x5t#S256")
        certificate = next(
            (
                cert
                for cert in app.certificates
                if _b64url_equals(x5t, cert.fingerprint(hashes.SHA1()))  # noqa: S303 - x5t is SHA-1 by spec
                or _b64url_equals(x5t256, cert.fingerprint(hashes.SHA256()))
            ),
            None,
        )
        if certificate is None:
            return self._error(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not registered on application. "
                f"[Reason - The key was not found., Thumbprint of key used by client: '{x5t or x5t256 or ''}']",
            )
        public_key = certificate.public_key()
        if not isinstance(public_key, RSAPublicKey):
            return self._error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                public_key,
                algorithms=["RS256", "PS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            return self._error(
                401,
                "invalid_client",
                7000274,
                "Key was found, but use of the key to verify the signature failed.",
            )
        except jwt.PyJWTError:
            return self._error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
        if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
            return self._error(
                401,
                "invalid_client",
                700021,
                "Client assertion application identifier doesn't match 'client_id' parameter.",
            )
        # msal and azure-identity sign for the token endpoint from the discovery document.
        token_endpoint = normalise_audience(f"{self.url}/{tenant}/oauth2/v2.0/token")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if not any(isinstance(a, str) and normalise_audience(a) == token_endpoint for a in audiences):
            return self._error(
                401,
                "invalid_client",
                700212,
                f"The audience '{audience}' of the client assertion is not valid for this token endpoint.",
            )
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if (
            not isinstance(exp, int | float)
            or exp < now - ASSERTION_CLOCK_SKEW_SECONDS
            or (isinstance(nbf, int | float) and nbf > now + ASSERTION_CLOCK_SKEW_SECONDS)
        ):
            return self._error(
                401, "invalid_client", 700024, "Client assertion is not within its valid time range."
            )
        return None

    def _check_federated(
        self, app: RegisteredApp, assertion: str, unverified: Mapping[str, Any]
    ) -> Response | None:
        """Workload identity federation: match a federated credential, then check the token."""
        issuer, subject, audience = unverified.get("iss"), unverified.get("sub"), unverified.get("aud")
        with self._state_lock:
            credentials = list(app.federated_credentials)
        if not credentials:
            return self._error(
                400,
                "invalid_request",
                70021,
                f"No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. "
                f"Assertion Subject: '{subject}'. Assertion Audience: '{audience}'. {WORKLOAD_IDENTITY_DOCS}",
            )
        check = (
            "Check your federated identity credential Subject, Audience and Issuer against the presented "
            f"assertion. {WORKLOAD_IDENTITY_DOCS}"
        )
        by_issuer = [c for c in credentials if c.issuer == issuer]
        if not by_issuer:
            return self._error(
                401,
                "invalid_client",
                700211,
                f"No matching federated identity record found for presented assertion issuer '{issuer}'. {check}",
            )
        # The issuer is trusted: its keys verify the signature (here: this server's own key).
        if issuer != self.exchange_issuer():
            return self._error(
                401,
                "invalid_client",
                700027,
                "Client assertion failed signature validation: the issuer's keys are unknown.",
            )
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                self._signing_key,
                algorithms=["HS256"],
                options={"verify_aud": False, "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.PyJWTError:
            return self._error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
        now = time.time()
        exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if (
            not isinstance(exp, int | float)
            or exp < now - ASSERTION_CLOCK_SKEW_SECONDS
            or (isinstance(nbf, int | float) and nbf > now + ASSERTION_CLOCK_SKEW_SECONDS)
        ):
            return self._error(
                401,
                "invalid_client",
                700024,
                f"Client assertion is not within its valid time range. Current time: {_stamp(now)}, "
                f"expiry time of assertion {_stamp(exp) if isinstance(exp, int | float) else 'unknown'}.",
            )
        by_audience = [c for c in by_issuer if c.accepts_audience(audience)]
        if not by_audience:
            return self._error(
                401,
                "invalid_client",
                700212,
                f"No matching federated identity record found for presented assertion audience '{audience}'. {check}",
            )
        if not any(c.subject == subject for c in by_audience):
            return self._error(
                401,
                "invalid_client",
                700213,
                f"No matching federated identity record found for presented assertion subject '{subject}'. {check}",
            )
        return None


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def _b64url_equals(text: object, digest: bytes) -> bool:
    """Whether a base64url thumbprint from a JWT header (any type) decodes to ``digest``."""
    if not isinstance(text, str):
        return False
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) == digest
    except (binascii.Error, ValueError):
        return False


def _basic_auth(header: str) -> tuple[str | None, str | None]:
    """``(client_id, secret)`` from an HTTP Basic header (client_secret_basic), else ``(None, None)``."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, None
    try:
        decoded = base64.b64decode(value.strip()).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)


class ManagedIdentityServer(SimulatedHttpServer):
    """App Service / Functions managed identity endpoint (plain HTTP, loopback).

    ``GET {url}/msi/token?api-version=2019-08-01&resource=...[&client_id=...]``
    with header ``X-IDENTITY-HEADER``. Tokens come from the shared
    :class:`EntraServer` so Graph and ingestion accept them.

    Args:
        entra: the token issuer.
        identity_header: the secret App Service puts in ``IDENTITY_HEADER``.
    """

    TOKEN_PATH = "/msi/token"

    def __init__(self, entra: EntraServer, identity_header: str | None = None) -> None:
        super().__init__("managed-identity", None)
        self.entra = entra
        self.identity_header = identity_header or secrets.token_hex(16)
        self.route("GET", self.TOKEN_PATH, self._token)

    @property
    def endpoint(self) -> str:
        """Value for ``IDENTITY_ENDPOINT``."""
        return self.url + self.TOKEN_PATH

    def request_count(self) -> int:
        """Tokens handed out (requests answered 200)."""
        return sum(1 for record in self.requests() if record.status == 200)

    def error_response(self, status: int, message: str) -> Response:
        """App Service's identity endpoint error shape."""
        return Response.json(
            status, {"statusCode": status, "message": message, "correlationId": str(uuid.uuid4())}
        )

    def _token(self, request: Request) -> Response:
        if request.header("x-identity-header") != self.identity_header:
            return self.error_response(
                401, "The request did not contain the X-IDENTITY-HEADER header or it was wrong."
            )
        if request.query.get("api-version") != "2019-08-01":
            return self.error_response(400, "An api-version of 2019-08-01 is required.")
        resource = request.query.get("resource", "")
        if not resource:
            return self.error_response(400, "Missing required parameter 'resource'.")
        identity = self.entra.managed_identity(request.query.get("client_id"))
        if identity is None:
            return self.error_response(
                400,
                "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
            )
        if is_token_exchange(resource):
            # The token an app's federated credential trusts ("managed identity as a credential").
            token, life = self.entra.issue_exchange_token(identity.client_id, identity.object_id)
        else:
            roles = identity.roles.get(normalise_audience(resource), ())
            token, life = self.entra.issue_token(
                identity.client_id, resource, object_id=identity.object_id, roles=roles, appidacr="2"
            )
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + life),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            },
        )
