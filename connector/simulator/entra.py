"""Fake Microsoft Entra ID token service and App Service managed identity endpoint.

Why it exists: the connector gets tokens through the real msal and
azure-identity code, and those libraries do OIDC discovery, build client
assertions, cache tokens and parse error bodies. A fake that speaks the same
wire protocol lets the tests prove that tokens are requested, cached and
refreshed the way they would be against ``login.microsoftonline.com``.

What it serves (over HTTPS):

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (what msal asks
  when ``instance_discovery=False``) and the v1 ``/{tenant}/.well-known/...``.
* ``POST /{tenant}/oauth2/v2.0/token`` (and v1 ``/oauth2/token``) for the
  ``client_credentials`` grant with ``client_secret`` (form or HTTP Basic) or a
  ``client_assertion`` JWT signed by a registered certificate (RS256 with
  ``x5t`` as azure-identity sends it, or PS256 with ``x5t#S256`` as msal sends
  it when given ``public_certificate``).
* Errors in Entra's shape (``error``, ``error_description`` with the AADSTS
  code, ``error_codes``, ``timestamp``, ``trace_id``, ``correlation_id``).

:class:`ManagedIdentityServer` is a separate plain-HTTP server that behaves
like the App Service / Functions identity endpoint (``IDENTITY_ENDPOINT`` +
``X-IDENTITY-HEADER``, api-version 2019-08-01).

Access tokens are real JWTs signed HS256 with a per-simulator secret. They use
wall-clock time (``time.time``), not the simulator's data clock, because msal
caches tokens by wall-clock ``expires_in``: advancing the simulated clock to
fetch "tomorrow's" traces must not silently expire every cached token. To
test expiry use a short ``token_lifetime`` or :meth:`EntraServer.expire_all_tokens`.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import ssl
import threading
import time
import urllib.parse
import uuid
from collections import Counter
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
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_CLOCK_SKEW_SECONDS = 300

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
    """The claims of a validated simulator access token."""

    aud: str
    tid: str
    appid: str
    oid: str
    iat: int
    exp: int
    roles: tuple[str, ...]
    raw: Mapping[str, Any]


@dataclass(slots=True)
class RegisteredApp:
    """An app registration + its service principal in the simulated tenant.

    Attributes:
        client_id: application (client) id.
        secret: client secret value, or ``None`` for certificate-only apps.
        secret_expired: answer AADSTS7000222 for the (correct) secret.
        certificates: registered public certificates (PEM), keyed by SHA-1
            thumbprint (upper-case hex) by :meth:`EntraServer.register_app`.
        object_id: the service principal's object id (``oid`` claim).
        roles: app roles granted, by resource (``roles`` claim).
        display_name: for error messages.
    """

    client_id: str
    secret: str | None = None
    secret_expired: bool = False
    certificates: dict[str, bytes] = field(default_factory=dict)
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    display_name: str = "message-trace-connector"


@dataclass(slots=True)
class ManagedIdentity:
    """A managed identity the App Service endpoint can issue tokens for."""

    client_id: str
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    user_assigned: bool = False
    roles: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenRequestRecord:
    """One call to the token endpoint, secrets removed (for assertions)."""

    client_id: str
    grant_type: str
    scope: str
    credential: str  # "secret", "assertion", "none"
    status: int
    error_code: int | None
    form_keys: tuple[str, ...]
    headers: Mapping[str, str]
    time: float


def resource_from_scope(scope: str) -> str:
    """``https://graph.microsoft.com/.default`` -> ``https://graph.microsoft.com``."""
    value = scope.strip()
    if value.endswith("/.default"):
        value = value[: -len("/.default")]
    return value


def normalise_audience(audience: str) -> str:
    """Compare audiences without a trailing slash or case differences."""
    return audience.strip().rstrip("/").lower()


def default_roles() -> dict[str, tuple[str, ...]]:
    """App roles a correctly set-up connector identity has."""
    return {normalise_audience(GRAPH_RESOURCE): (MESSAGE_TRACE_ROLE,)}


class EntraServer(SimulatedHttpServer):
    """Fake ``login.microsoftonline.com`` for one tenant.

    Args:
        ssl_context: server TLS context (from :class:`TestCertificateAuthority`).
        tenant_id: the tenant GUID; ``tenant_domains`` are accepted as aliases.
        token_lifetime: access token lifetime in seconds (``expires_in``).
        tenant_domains: verified domains usable in the authority URL.
        now: wall-clock time source for tokens (seconds since the epoch).
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None,
        tenant_id: str,
        *,
        token_lifetime: int = 3600,
        tenant_domains: tuple[str, ...] = ("contoso.onmicrosoft.com",),
        now: Callable[[], float] = time.time,
    ) -> None:
        super().__init__("entra", ssl_context)
        self.tenant_id = tenant_id
        self.tenant_domains = tenant_domains
        self.token_lifetime = token_lifetime
        self._now = now
        self._signing_key = secrets.token_bytes(32)
        self._key_id = secrets.token_hex(8)
        self._apps: dict[str, RegisteredApp] = {}
        self._managed_identities: dict[str, ManagedIdentity] = {}
        self._generation = 0
        self._token_requests: Counter[str] = Counter()
        self._tokens_issued: Counter[str] = Counter()
        self._token_log: list[TokenRequestRecord] = []
        self._state_lock = threading.Lock()
        tenant = r"(?P<tenant>[^/]+)"
        self.route("GET", rf"/{tenant}/v2\.0/\.well-known/openid-configuration", self._openid_v2)
        self.route("GET", rf"/{tenant}/\.well-known/openid-configuration", self._openid_v1)
        self.route("GET", rf"/{tenant}/discovery/(?:v2\.0/)?keys", self._keys)
        self.route("POST", rf"/{tenant}/oauth2/v2\.0/token", self._token_v2)
        self.route("POST", rf"/{tenant}/oauth2/token", self._token_v1)

    # ----------------------------------------------------------- configuration
    def register_app(
        self,
        client_id: str | None = None,
        *,
        secret: str | None = None,
        certificate_pem: bytes | None = None,
        secret_expired: bool = False,
        roles: Mapping[str, tuple[str, ...]] | None = None,
        display_name: str = "message-trace-connector",
    ) -> RegisteredApp:
        """Register (or replace) a confidential client app.

        Args:
            client_id: application id; a random GUID if omitted.
            secret: accepted client secret.
            certificate_pem: a public certificate accepted for client assertions.
            secret_expired: reject the secret with AADSTS7000222.
            roles: app roles per resource; default: the message trace role on Graph.
            display_name: shown in error messages.
        """
        app = RegisteredApp(
            client_id=client_id or str(uuid.uuid4()),
            secret=secret,
            secret_expired=secret_expired,
            roles={normalise_audience(k): tuple(v) for k, v in (roles or default_roles()).items()},
            display_name=display_name,
        )
        if certificate_pem is not None:
            self.add_certificate(app, certificate_pem)
        with self._state_lock:
            self._apps[app.client_id] = app
        return app

    def add_certificate(self, app: RegisteredApp, certificate_pem: bytes) -> str:
        """Register another certificate on ``app``; returns its SHA-1 thumbprint."""
        cert = x509.load_pem_x509_certificate(certificate_pem)
        thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303 - x5t is SHA-1 by spec
        app.certificates[thumbprint] = certificate_pem
        return thumbprint

    def app(self, client_id: str) -> RegisteredApp:
        """The registered app ``client_id`` (KeyError if unknown)."""
        with self._state_lock:
            return self._apps[client_id]

    def register_managed_identity(
        self,
        client_id: str | None = None,
        *,
        user_assigned: bool = False,
        roles: Mapping[str, tuple[str, ...]] | None = None,
    ) -> ManagedIdentity:
        """Register a managed identity (the first system-assigned one is the default)."""
        identity = ManagedIdentity(
            client_id=client_id or str(uuid.uuid4()),
            user_assigned=user_assigned,
            roles={normalise_audience(k): tuple(v) for k, v in (roles or default_roles()).items()},
        )
        with self._state_lock:
            self._managed_identities[identity.client_id] = identity
        return identity

    def managed_identity(self, client_id: str | None = None) -> ManagedIdentity | None:
        """Look up a user-assigned identity by client id, or the system-assigned one."""
        with self._state_lock:
            if client_id is not None:
                return self._managed_identities.get(client_id)
            for identity in self._managed_identities.values():
                if not identity.user_assigned:
                    return identity
        return None

    def expire_all_tokens(self) -> None:
        """Make every token issued so far fail validation with reason ``expired``.

        Models a token that the client still has cached but the resource no
        longer accepts (clock skew, revocation): the client must re-acquire.
        """
        with self._state_lock:
            self._generation += 1

    def wall_time(self) -> float:
        """The token clock (seconds since the epoch); ``time.time`` by default."""
        return self._now()

    # ------------------------------------------------------------- inspection
    def token_request_count(self, client_id: str | None = None) -> int:
        """Token endpoint calls (any outcome), for one client or all."""
        with self._state_lock:
            if client_id is None:
                return sum(self._token_requests.values())
            return self._token_requests[client_id]

    def tokens_issued(self, client_id: str | None = None) -> int:
        """Access tokens issued (token endpoint and managed identity)."""
        with self._state_lock:
            if client_id is None:
                return sum(self._tokens_issued.values())
            return self._tokens_issued[client_id]

    def token_requests(self) -> list[TokenRequestRecord]:
        """Every token endpoint call, oldest first (secrets never stored)."""
        with self._state_lock:
            return list(self._token_log)

    def reset(self) -> None:
        """Clear logs, faults and counters (apps and keys stay registered)."""
        super().reset()
        with self._state_lock:
            self._token_requests.clear()
            self._tokens_issued.clear()
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
        now = int(self._now())
        with self._state_lock:
            generation = self._generation
            self._tokens_issued[client_id] += 1
        claims: dict[str, Any] = {
            "aud": resource,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": now + life,
            "aio": secrets.token_urlsafe(24),
            "app_displayname": "message-trace-connector",
            "appid": client_id,
            "appidacr": appidacr,
            "azp": client_id,
            "idp": self.issuer,
            "idtyp": "app",
            "oid": object_id or client_id,
            "rh": "0.AAAA" + secrets.token_urlsafe(16),
            "roles": list(roles),
            "sub": object_id or client_id,
            "tid": self.tenant_id,
            "uti": secrets.token_urlsafe(16),
            "ver": "1.0",
            "xms_sim_gen": generation,
        }
        token = jwt.encode(claims, self._signing_key, algorithm="HS256", headers={"kid": self._key_id})
        return token, life

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
        now = self._now()
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
        return Claims(
            aud=str(raw["aud"]),
            tid=str(raw["tid"]),
            appid=str(raw.get("appid", "")),
            oid=str(raw.get("oid", "")),
            iat=int(raw.get("iat", 0)),
            exp=exp,
            roles=tuple(str(r) for r in raw.get("roles", [])),
            raw=raw,
        )

    # --------------------------------------------------------------- routes
    def _known_tenant(self, tenant: str) -> bool:
        lowered = tenant.lower()
        return lowered == self.tenant_id.lower() or lowered in (d.lower() for d in self.tenant_domains)

    def _openid_v2(self, request: Request) -> Response:
        tenant = request.params["tenant"]
        if not self._known_tenant(tenant):
            return self._tenant_not_found(tenant)
        base, tid = self.url, self.tenant_id
        return Response.json(
            200,
            {
                "token_endpoint": f"{base}/{tid}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/{tid}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{base}/{tid}/v2.0",
                "request_uri_parameter_supported": False,
                "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
                "authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/{tid}/oauth2/v2.0/devicecode",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "end_session_endpoint": f"{base}/{tid}/oauth2/v2.0/logout",
                "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nonce", "tid", "ver", "oid"],
                "kerberos_endpoint": f"{base}/{tid}/kerberos",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
                "rbac_url": "https://pas.windows.net",
            },
        )

    def _openid_v1(self, request: Request) -> Response:
        tenant = request.params["tenant"]
        if not self._known_tenant(tenant):
            return self._tenant_not_found(tenant)
        base, tid = self.url, self.tenant_id
        return Response.json(
            200,
            {
                "token_endpoint": f"{base}/{tid}/oauth2/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{base}/common/discovery/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
                "scopes_supported": ["openid"],
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/{tid}/oauth2/authorize",
                "device_authorization_endpoint": f"{base}/{tid}/oauth2/devicecode",
                "end_session_endpoint": f"{base}/{tid}/oauth2/logout",
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            },
        )

    def _keys(self, request: Request) -> Response:
        # Access tokens are HS256 with a private secret; there is no public key to publish.
        return Response.json(200, {"keys": []})

    def _tenant_not_found(self, tenant: str) -> Response:
        return self._error(
            400,
            "invalid_tenant",
            90002,
            f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing "
            "into the correct cloud. Check with your subscription administrator, this may happen if there are "
            "no active subscriptions for the tenant.",
        )

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
            headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
        )

    def _token_v2(self, request: Request) -> Response:
        return self._token(request, v1=False)

    def _token_v1(self, request: Request) -> Response:
        return self._token(request, v1=True)

    def _token(self, request: Request, *, v1: bool) -> Response:
        form = {
            k: v
            for k, v in urllib.parse.parse_qsl(
                request.body.decode("utf-8", "replace"), keep_blank_values=True
            )
        }
        basic_id, basic_secret = _basic_auth(request.header("authorization"))
        client_id = form.get("client_id") or basic_id or ""
        scope = form.get("resource", "") if v1 else form.get("scope", "")
        secret = form.get("client_secret") or basic_secret
        credential = "assertion" if form.get("client_assertion") else ("secret" if secret else "none")
        response = self._token_response(request, form, client_id, scope, secret, v1=v1)
        error_code: int | None = None
        if response.status != 200:
            try:
                codes = json.loads(response.body).get("error_codes") or [None]
                error_code = codes[0]
            except ValueError:
                error_code = None
        record = TokenRequestRecord(
            client_id=client_id,
            grant_type=form.get("grant_type", ""),
            scope=scope,
            credential=credential,
            status=response.status,
            error_code=error_code,
            form_keys=tuple(sorted(form)),
            headers={k: v for k, v in request.headers.items() if k not in ("authorization", "cookie")},
            time=time.monotonic(),
        )
        with self._state_lock:
            self._token_requests[client_id] += 1
            self._token_log.append(record)
        return response

    def _token_response(
        self,
        request: Request,
        form: Mapping[str, str],
        client_id: str,
        scope: str,
        secret: str | None,
        *,
        v1: bool,
    ) -> Response:
        tenant = request.params["tenant"]
        if not self._known_tenant(tenant):
            return self._tenant_not_found(tenant)
        grant_type = form.get("grant_type", "")
        if not grant_type:
            return self._error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        if grant_type != "client_credentials":
            return self._error(
                400,
                "unsupported_grant_type",
                70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )
        if not client_id:
            return self._error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        param = "resource" if v1 else "scope"
        if not scope:
            return self._error(
                400,
                "invalid_request",
                900144,
                f"The request body must contain the following parameter: '{param}'.",
            )
        resource = scope if v1 else resource_from_scope(scope)
        if not v1 and (" " in scope.strip() or not scope.strip().endswith("/.default")):
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
            problem = self._check_assertion(app, form, request)
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
        roles = app.roles.get(normalise_audience(resource), ())
        token, life = self.issue_token(
            client_id, resource, object_id=app.object_id, roles=roles, appidacr=appidacr
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "expires_in": life,
            "ext_expires_in": life,
            "access_token": token,
        }
        if v1:
            now = int(self._now())
            body = {
                "token_type": "Bearer",
                "expires_in": str(life),
                "ext_expires_in": str(life),
                "expires_on": str(now + life),
                "not_before": str(now),
                "resource": resource,
                "access_token": token,
            }
        return Response.json(200, body, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})

    def _check_assertion(
        self, app: RegisteredApp, form: Mapping[str, str], request: Request
    ) -> Response | None:
        assertion_type = form.get("client_assertion_type", "")
        if assertion_type != CLIENT_ASSERTION_TYPE:
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
        cert_pem, thumb_text = self._find_certificate(app, header)
        if cert_pem is None:
            return self._error(
                401,
                "invalid_client",
                700027,
                "The certificate with identifier used to sign the client assertion is not registered on application. "
                f"[Reason - The key was not found., Thumbprint of key used by client: '{thumb_text}']",
            )
        public_key = x509.load_pem_x509_certificate(cert_pem).public_key()
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
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        accepted = {a.lower() for a in self._accepted_assertion_audiences(request.params["tenant"])}
        if not any(isinstance(a, str) and a.rstrip("/").lower() in accepted for a in audiences):
            return self._error(
                401,
                "invalid_client",
                700212,
                f"The audience '{audience}' of the client assertion is not valid for this token endpoint.",
            )
        now = self._now()
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

    def _find_certificate(self, app: RegisteredApp, header: Mapping[str, Any]) -> tuple[bytes | None, str]:
        x5t, x5t256 = header.get("x5t"), header.get("x5t#S256")
        for thumbprint, pem in app.certificates.items():
            cert = x509.load_pem_x509_certificate(pem)
            sha1 = cert.fingerprint(hashes.SHA1())  # noqa: S303 - x5t is SHA-1 by spec
            sha256 = cert.fingerprint(hashes.SHA256())
            if isinstance(x5t, str) and _b64url_equals(x5t, sha1):
                return pem, thumbprint
            if isinstance(x5t256, str) and _b64url_equals(x5t256, sha256):
                return pem, thumbprint
        shown = x5t if isinstance(x5t, str) else (x5t256 if isinstance(x5t256, str) else "")
        return None, shown

    def _accepted_assertion_audiences(self, tenant: str) -> set[str]:
        names = {tenant, self.tenant_id, *self.tenant_domains}
        result: set[str] = set()
        for name in names:
            result.add(f"{self.url}/{name}/oauth2/v2.0/token")
            result.add(f"{self.url}/{name}/oauth2/token")
            result.add(f"{self.url}/{name}/v2.0")
            result.add(f"{self.url}/{name}")
        return result


def _b64url_equals(text: str, digest: bytes) -> bool:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded) == digest
    except (binascii.Error, ValueError):
        return False


def _basic_auth(header: str) -> tuple[str | None, str | None]:
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
        self._count: Counter[str] = Counter()
        self._count_lock = threading.Lock()
        self.route("GET", self.TOKEN_PATH, self._token)

    @property
    def endpoint(self) -> str:
        """Value for ``IDENTITY_ENDPOINT``."""
        return self.url + self.TOKEN_PATH

    def request_count(self, client_id: str | None = None) -> int:
        """Token requests answered with a token, for one identity or all."""
        with self._count_lock:
            if client_id is None:
                return sum(self._count.values())
            return self._count[client_id]

    def reset(self) -> None:
        """Clear logs, faults and counters."""
        super().reset()
        with self._count_lock:
            self._count.clear()

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
        wanted = request.query.get("client_id")
        if (
            request.query.get("mi_res_id")
            or request.query.get("object_id")
            or request.query.get("principal_id")
        ):
            return self.error_response(
                400, "Only client_id is supported by this simulator to select a user-assigned identity."
            )
        identity = self.entra.managed_identity(wanted)
        if identity is None:
            return self.error_response(
                400,
                "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
            )
        roles = identity.roles.get(normalise_audience(resource), ())
        token, life = self.entra.issue_token(
            identity.client_id, resource, object_id=identity.object_id, roles=roles, appidacr="2"
        )
        with self._count_lock:
            self._count[identity.client_id] += 1
        expires_on = int(self.entra.wall_time()) + life
        return Response.json(
            200,
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": identity.client_id,
            },
        )
