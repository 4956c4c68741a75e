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


@dataclass(slots=True)
class RegisteredApp:
    """An app registration + its service principal in the simulated tenant.

    Attributes:
        client_id: application (client) id.
        secret: client secret value, or ``None`` for certificate-only apps.
        secret_expired: answer AADSTS7000222 for the (correct) secret.
        certificates: registered public certificates.
        object_id: the service principal's object id (``oid`` claim).
        roles: app roles granted, by normalised resource (``roles`` claim).
    """

    client_id: str
    secret: str | None = None
    secret_expired: bool = False
    certificates: list[x509.Certificate] = field(default_factory=list)
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


class EntraServer(SimulatedHttpServer):
    """Fake ``login.microsoftonline.com`` for one tenant.

    Args:
        ssl_context: server TLS context (from :class:`TestCertificateAuthority`).
        tenant_id: the tenant GUID.
        token_lifetime: access token lifetime in seconds (``expires_in``).
    """

    def __init__(
        self, ssl_context: ssl.SSLContext | None, tenant_id: str, *, token_lifetime: int = 3600
    ) -> None:
        super().__init__("entra", ssl_context)
        self.tenant_id = tenant_id
        self.token_lifetime = token_lifetime
        self._signing_key = secrets.token_bytes(32)
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
        return app

    def app(self, client_id: str) -> RegisteredApp:
        """The registered app ``client_id`` (KeyError if unknown)."""
        with self._state_lock:
            return self._apps[client_id]

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

    def token_request_count(self, client_id: str | None = None) -> int:
        """Token endpoint calls (any outcome), for one client or all."""
        return sum(1 for r in self.token_requests() if client_id in (None, r.client_id))

    def reset(self) -> None:
        """Clear logs and faults (apps and keys stay registered)."""
        super().reset()
        with self._state_lock:
            self._token_log.clear()

    # ----------------------------------------------------------------- tokens
    @property
    def issuer(self) -> str:
        """The v1 issuer that Graph and Azure Monitor tokens carry."""
        return f"https://sts.windows.net/{self.tenant_id}/"

    def issue_token(
        self,
        client_id: str,
        resource: str,
        *,
        object_id: str | None = None,
        roles: tuple[str, ...] = (),
        lifetime: int | None = None,
        appidacr: str = "1",
    ) -> tuple[str, int]:
        """Sign an access token; returns ``(jwt, expires_in)``.

        Tests may call this directly to talk to Graph/ingestion without msal.
        """
        life = self.token_lifetime if lifetime is None else lifetime
        now = int(time.time())
        with self._state_lock:
            generation = self._generation
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + life,
            "appid": client_id,
            "appidacr": appidacr,
            "idtyp": "app",
            "oid": object_id or client_id,
            "roles": list(roles),
            "sub": object_id or client_id,
            "tid": self.tenant_id,
            "ver": "1.0",
            "xms_sim_gen": generation,
        }
        return jwt.encode(claims, self._signing_key, algorithm="HS256"), life

    def validate_bearer(self, authorization: str | None, expected_audience: str) -> Claims | str:
        """Validate an ``Authorization`` header value for a resource.

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
        if raw.get("iss") != self.issuer or raw.get("tid") != self.tenant_id:
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
        problem = self._check_tenant(request.params["tenant"])
        if problem is not None:
            return problem
        base = f"{self.url}/{self.tenant_id}"
        return Response.json(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
            },
        )

    def _check_tenant(self, tenant: str) -> Response | None:
        if tenant.lower() == self.tenant_id.lower():
            return None
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
        )
        with self._state_lock:
            self._token_log.append(record)
        return response

    def _token_response(self, request: Request, form: Mapping[str, str], secret: str | None) -> Response:
        tenant = request.params["tenant"]
        problem = self._check_tenant(tenant)
        if problem is not None:
            return problem
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
        if app is None:
            return self._error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can "
                "happen if the application has not been installed by the administrator of the tenant or consented "
                "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
            )
        if form.get("client_assertion"):
            problem = self._check_assertion(app, form)
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
        roles = app.roles.get(normalise_audience(resource), ())
        token, life = self.issue_token(
            client_id, resource, object_id=app.object_id, roles=roles, appidacr=appidacr
        )
        body = {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life, "access_token": token}
        return Response.json(200, body, headers=NO_CACHE)

    def _check_assertion(self, app: RegisteredApp, form: Mapping[str, str]) -> Response | None:
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
        except jwt.PyJWTError:
            return self._error(401, "invalid_client", 50027, "JWT token is invalid or malformed.")
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
        token_endpoint = normalise_audience(f"{self.url}/{self.tenant_id}/oauth2/v2.0/token")
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
